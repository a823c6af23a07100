"""TLS to Redis and PostgreSQL, secrets from files, and no password in anything printed.

The machine's own Redis and PostgreSQL run without TLS (checked: `CONFIG GET tls-port` is 0,
`SHOW ssl` is off), so this test starts its own: a redis-server that speaks only TLS and wants
a password, and a PostgreSQL cluster that refuses non-TLS connections and wants a password,
both on loopback ports of their own, with certificates from a lab CA (orchestrator/access/keys.py).
Every URL and password reaches the pipeline through a ``*_FILE`` setting.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from orchestrator.access.keys import tls_files
from orchestrator.settings import reset_settings
from orchestrator.store import db
from tests.conftest import Env, Process
from tests.own_servers import PG_BIN, Server, free_port, start_postgres, start_redis

pytestmark = [pytest.mark.slow]

SECRET = "Tls-and-S3cret-9d41"


@pytest.fixture
def tls_servers(tmp_path: Path) -> Iterator[dict[str, object]]:
    if shutil.which("redis-server") is None or PG_BIN is None:
        pytest.skip("needs redis-server and PostgreSQL's server binaries on this machine")
    certs = tls_files(tmp_path / "tls", ("127.0.0.1", "localhost"))
    tls = {"cert": certs["server.crt"], "key": certs["server.key"], "ca": certs["ca.crt"]}
    redis_port, pg_port = free_port(), free_port()
    started: list[Server] = []
    try:
        started.append(start_redis(tmp_path / "redis", redis_port, password=SECRET, tls=tls))
        started.append(start_postgres(pg_port, password=SECRET, tls=tls))
        yield {"redis_port": redis_port, "pg_port": pg_port, "ca": certs["ca.crt"],
               "postgres": started[1]}
    finally:
        for server in reversed(started):
            server.stop()


def secret_files(folder: Path, servers: dict[str, object]) -> dict[str, str]:
    """The PIPELINE_* variables: every secret in a file, only paths in the environment."""
    folder.mkdir(mode=0o700)
    redis = f"rediss://:{SECRET}@127.0.0.1:{servers['redis_port']}"
    values = {
        "BROKER_URL": f"{redis}/0",
        "RESULT_BACKEND": f"{redis}/1",
        "DATABASE_URL": (f"postgresql://postgres:{SECRET}@127.0.0.1:{servers['pg_port']}/postgres"
                         f"?sslmode=verify-full&sslrootcert={servers['ca']}"),
        "FLOWER_PASSWORD": SECRET,
    }
    variables = {}
    for name, value in values.items():
        path = folder / name.lower()
        path.write_text(value + "\n")
        path.chmod(0o600)
        variables[f"PIPELINE_{name}_FILE"] = str(path)
    return variables


@pytest.fixture
def tls_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
            tls_servers: dict[str, object]) -> Iterator[Env]:
    variables = {"PIPELINE_SHARE_DIR": str(tmp_path / "share"),
                 "PIPELINE_VAR_DIR": str(tmp_path / "var"),
                 "PIPELINE_TLS_CA_FILE": str(tls_servers["ca"]),
                 "PIPELINE_FLOWER_USER": "ops",
                 **secret_files(tmp_path / "secrets", tls_servers)}
    for key in ("PIPELINE_BROKER_URL", "PIPELINE_RESULT_BACKEND", "PIPELINE_DATABASE_URL"):
        monkeypatch.delenv(key, raising=False)
    for key, value in variables.items():
        monkeypatch.setenv(key, value)
    reset_settings()
    db._forget_after_fork()
    yield Env(tmp_path, variables)
    reset_settings()
    db._forget_after_fork()


def run(env: Env, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), env=env.environ(), cwd=env.root, capture_output=True,
                          text=True, timeout=timeout)


def flower_page(port: int, auth: str | None) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/workers")
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return 0


def wait_flower(port: int, process: Process, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while flower_page(port, None) == 0 and time.monotonic() < deadline:
        assert process.proc.poll() is None, process.output()
        time.sleep(0.3)


def test_a_job_runs_over_tls_with_secrets_from_files_and_no_output_shows_them(
        tls_env: Env, tls_servers: dict[str, object], worker: Callable[..., Process],
        spawn: Callable[..., Process], sample_csv: Path) -> None:
    # given a worker whose broker, results and database are TLS-only servers with passwords
    pipeline = [sys.executable, "-m", "cli.main"]
    assert run(tls_env, *pipeline, "db", "upgrade").returncode == 0
    running = worker(tls_env, concurrency=1)

    # when a job is submitted and waited for
    done = run(tls_env, *pipeline, "submit", str(sample_csv), "--wait", "--json")
    # then it completes
    assert done.returncode == 0, done.stdout + done.stderr
    assert list(json.loads(done.stdout)["states"].values()) == ["completed"]
    # and the worker's database connections are encrypted (non-TLS ones are rejected anyway)
    query = ("SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
             "WHERE s.ssl AND a.client_addr IS NOT NULL")
    postgres: Server = tls_servers["postgres"]  # type: ignore[assignment]
    encrypted = subprocess.run(
        [str(PG_BIN / "psql"), "-h", str(postgres.folder / "sock"), "-p",
         str(tls_servers["pg_port"]), "-U", "postgres", "-tAc", query],
        capture_output=True, text=True, timeout=30, check=True)
    assert int(encrypted.stdout.strip()) >= 1

    # when an operator looks at everything that prints settings, state or health
    flower_port = free_port()
    flower = spawn([*pipeline, "flower", "--port", str(flower_port)], tls_env, "flower")
    wait_flower(flower_port, flower)
    pages = {"no credentials": flower_page(flower_port, None),
             "wrong password": flower_page(flower_port, "ops:nope"),
             "the password": flower_page(flower_port, f"ops:{SECRET}")}
    outputs = {
        "worker log": running.output(),
        "submit": done.stdout + done.stderr,
        "config": run(tls_env, *pipeline, "config").stdout,
        "config --json": run(tls_env, *pipeline, "config", "--json").stdout,
        "health": (health := run(tls_env, *pipeline, "health", "--skip", "beat")).stdout
        + health.stderr,
        "health --json": run(tls_env, *pipeline, "health", "--json", "--skip", "beat").stdout,
        "celery report": run(tls_env, sys.executable, "-m", "celery", "-A", "orchestrator",
                             "report").stdout,
        "inspect conf": run(tls_env, sys.executable, "-m", "celery", "-A", "orchestrator",
                            "inspect", "conf", "-t", "5").stdout,
    }
    flower.stop()
    outputs["flower log"] = flower.output()
    print("\n".join(f"--- {name}\n{text[-1500:]}" for name, text in outputs.items()))
    # then Flower lets in only the right password
    assert pages == {"no credentials": 401, "wrong password": 401, "the password": 200}
    # and the secret is in none of the outputs, though they did show the servers
    leaks = [name for name, text in outputs.items() if SECRET in text]
    assert leaks == [], {name: outputs[name][-2000:] for name in leaks}
    assert f"127.0.0.1:{tls_servers['redis_port']}" in outputs["config"]
    assert "rediss://:***@" in outputs["config"]
    assert "broker: ok" in outputs["health"] and "database: ok" in outputs["health"], \
        outputs["health"]
