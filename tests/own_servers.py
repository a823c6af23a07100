"""Servers a test starts for itself: a redis-server and a PostgreSQL cluster in temporary
folders, on ports of their own, optionally with TLS and passwords, optionally inside a network
namespace (``ip netns exec``). Never the machine's own servers' data, never another address
than loopback or the namespaces the test made.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

PG_BIN = Path(sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(
    Path(p).parent.name) if Path(p).parent.name.isdigit() else 0)[-1]) if glob.glob(
    "/usr/lib/postgresql/*/bin") else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def in_netns(netns: str | None, args: list[str]) -> list[str]:
    return ["ip", "netns", "exec", netns, *args] if netns else args


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    folder: Path
    cleanup: list[Path] = field(default_factory=list)
    #: PostgreSQL: SIGINT is the fast shutdown (SIGTERM waits for every client to leave).
    stop_signal: int = signal.SIGTERM

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(self.stop_signal)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for path in self.cleanup:
            shutil.rmtree(path, ignore_errors=True)


def _wait(check: list[str], server: Server, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited {server.proc.returncode}:\n"
                               f"{server.output()[-3000:]}")
        if subprocess.run(check, capture_output=True, timeout=10).returncode == 0:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{server.name} not ready in {timeout} s:\n{server.output()[-3000:]}")


def start_redis(folder: Path, port: int, *, bind: str = "127.0.0.1", netns: str | None = None,
                password: str | None = None, tls: dict[str, Path] | None = None,
                ) -> Server:
    """redis-server on ``bind:port`` (TLS only, when ``tls`` has cert, key and ca)."""
    folder.mkdir(parents=True, exist_ok=True)
    args = ["redis-server", "--bind", bind, "--save", "", "--appendonly", "no",
            "--dir", str(folder), "--protected-mode", "no", "--logfile", ""]
    if tls:
        args += ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(tls["cert"]),
                 "--tls-key-file", str(tls["key"]), "--tls-ca-cert-file", str(tls["ca"]),
                 "--tls-auth-clients", "no"]
    else:
        args += ["--port", str(port)]
    if password:
        args += ["--requirepass", password]
    log = folder / "redis.log"
    proc = subprocess.Popen(in_netns(netns, args), stdout=open(log, "wb"),  # noqa: SIM115
                            stderr=subprocess.STDOUT, start_new_session=True)
    server = Server("redis-server", proc, log, folder)
    ping = ["redis-cli", "-h", bind, "-p", str(port), "--no-auth-warning"]
    if password:
        ping += ["-a", password]
    if tls:
        ping += ["--tls", "--cacert", str(tls["ca"])]
    _wait(in_netns(netns, [*ping, "ping"]), server)
    return server


def start_postgres(port: int, *, listen: str = "127.0.0.1", netns: str | None = None,
                   password: str | None = None, tls: dict[str, Path] | None = None,
                   settings: dict[str, str] | None = None) -> Server:
    """A PostgreSQL cluster of its own (initdb in a temporary folder, run as user postgres),
    listening on ``listen:port`` and on a Unix socket in its folder (``server.folder/sock``).
    With ``tls``, TCP clients must use TLS (hostnossl: reject)."""
    if PG_BIN is None:
        raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
    folder = Path(tempfile.mkdtemp(prefix="pipeline-pg-"))
    shutil.chown(folder, "postgres", "postgres")
    data, sock = folder / "data", folder / "sock"
    sock.mkdir()
    shutil.chown(sock, "postgres", "postgres")
    as_postgres = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups"]
    init = [*as_postgres, str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres",
            "--no-sync", "-E", "UTF8", "--locale=C"]
    if password:
        (folder / "pw").write_text(password)
        shutil.chown(folder / "pw", "postgres", "postgres")
        init += ["--auth=scram-sha-256", f"--pwfile={folder / 'pw'}"]
    else:
        init += ["--auth=trust"]
    subprocess.run(init, check=True, capture_output=True, timeout=120)
    (folder / "pw").unlink(missing_ok=True)
    options = ["-c", f"listen_addresses={listen}", "-c", f"unix_socket_directories={sock}",
               "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "max_connections=200",
               "-c", "full_page_writes=off"]
    for key, value in (settings or {}).items():
        options += ["-c", f"{key}={value}"]
    method = "scram-sha-256" if password else "trust"
    # Any address may connect: the server listens only on loopback or inside the test's
    # namespaces. Local (socket) connections are the test's own, trusted.
    (data / "pg_hba.conf").write_text(f"local all all trust\nhost all all all {method}\n")
    if tls:
        for name in ("cert", "key", "ca"):
            shutil.copy(tls[name], folder / f"tls.{name}")
            shutil.chown(folder / f"tls.{name}", "postgres", "postgres")
            os.chmod(folder / f"tls.{name}", 0o600)
        (data / "pg_hba.conf").write_text(
            f"local all all trust\nhostnossl all all all reject\nhostssl all all all {method}\n")
        options += ["-c", "ssl=on", "-c", f"ssl_cert_file={folder / 'tls.cert'}",
                    "-c", f"ssl_key_file={folder / 'tls.key'}",
                    "-c", f"ssl_ca_file={folder / 'tls.ca'}"]
    log = folder / "postgres.log"
    log.touch()
    shutil.chown(log, "postgres", "postgres")
    args = in_netns(netns, [*as_postgres, str(PG_BIN / "postgres"), "-D", str(data),
                            "-p", str(port), *options])
    proc = subprocess.Popen(args, stdout=open(log, "wb"),  # noqa: SIM115
                            stderr=subprocess.STDOUT, start_new_session=True)
    server = Server("postgres", proc, log, folder, cleanup=[folder], stop_signal=signal.SIGINT)
    _wait([str(PG_BIN / "pg_isready"), "-h", str(sock), "-p", str(port)], server)
    return server


def socket_url(server: Server, port: int, database: str = "postgres") -> str:
    """A URL over the Unix socket (no network; local connections are trusted)."""
    return f"postgresql://postgres@/{database}?host={server.folder / 'sock'}&port={port}"
