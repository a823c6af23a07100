"""The fault-injection suite: real workers on real servers, killed, cut off and starved.

Each scenario ends with :func:`check_outcome`: every job in a final state; completed jobs'
weights.csv byte-identical to a clean in-process run's; no history with two terminal events; no
folder left in processing/; every input accounted for. Rows for docs/reliability.md are written
to artifacts/reliability.json as the scenarios run.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator.jobs.jobspec import JobParams
from orchestrator.steps import archive, optimize, validate
from orchestrator.store import jobs as store
from orchestrator.store.states import FINAL, JobState
from tests.conftest import Env, Process

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
TERMINAL = {"completed", "failed", "cancelled"}
FAST_LIMITS = {
    "PIPELINE_VALIDATE_SOFT_TIME_LIMIT": "4", "PIPELINE_VALIDATE_TIME_LIMIT": "6",
    "PIPELINE_OPTIMIZE_SOFT_TIME_LIMIT": "4", "PIPELINE_OPTIMIZE_TIME_LIMIT": "6",
    "PIPELINE_ARCHIVE_SOFT_TIME_LIMIT": "4", "PIPELINE_ARCHIVE_TIME_LIMIT": "6",
    "PIPELINE_LEASE_GRACE_SECONDS": "2", "PIPELINE_VISIBILITY_TIMEOUT": "10",
    "PIPELINE_RECOVERY_INTERVAL": "2", "PIPELINE_REQUEUE_LOST_AFTER": "5",
    "PIPELINE_MAX_RETRIES": "4",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def fault_env(servers_env: Env, monkeypatch: pytest.MonkeyPatch) -> Env:
    """Redis + PostgreSQL with short time limits and a recovery pass every 2 s."""
    return _fast(servers_env, monkeypatch)


@pytest.fixture
def embedded_fault_env(env: Env, monkeypatch: pytest.MonkeyPatch) -> Env:
    return _fast(env, monkeypatch)


def _fast(env: Env, monkeypatch: pytest.MonkeyPatch) -> Env:
    from orchestrator.settings import reset_settings

    env.variables.update(FAST_LIMITS)
    for key, value in FAST_LIMITS.items():
        monkeypatch.setenv(key, value)
    reset_settings()
    return env


@pytest.fixture
def beat(spawn: Callable[..., Process], tmp_path: Path) -> Callable[[Env], Process]:
    def start(env: Env) -> Process:
        process = spawn([sys.executable, "-m", "celery", "-A", "orchestrator", "beat",
                         "--loglevel", "INFO", "-s", str(tmp_path / f"beat-{uuid.uuid4().hex}")],
                        env, "beat")
        process.wait_for("holding the schedule lock")
        return process
    return start


class Supervised:
    """A worker restarted whenever it exits, like a systemd unit with ``Restart=always``."""

    def __init__(self, start: Callable[[], Process]) -> None:
        self._start = start
        self.current = start()
        self.exits: list[tuple[int, str]] = []  # exit code, the end of the worker's log
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            code = self.current.proc.poll()
            if code is not None:
                self.exits.append((code, self.current.output()[-600:]))
                time.sleep(1)  # systemd's RestartSec
                self.current = self._start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


@pytest.fixture
def supervised(spawn: Callable[..., Process]) -> Iterator[Callable[[Env], Supervised]]:
    made: list[Supervised] = []

    def start(env: Env) -> Supervised:
        def one() -> Process:
            name = f"w{uuid.uuid4().hex[:6]}"
            return spawn([sys.executable, "-m", "celery", "-A", "orchestrator", "worker",
                          "-Q", "validate,optimize,archive,maintenance", "-c", "2",
                          "-n", f"{name}@%h", "--loglevel", "INFO", "--without-gossip",
                          "--without-mingle"], env, name)

        made.append(Supervised(one))
        made[-1].current.wait_for("ready.")
        return made[-1]

    yield start
    for each in made:
        each.stop()


def kill_group(process: Process) -> None:
    """SIGKILL the worker and its pool children at once, as an OOM kill or a host loss."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.proc.pid, signal.SIGKILL)
    process.proc.wait(10)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def wait_all_final(job_ids: list[str], timeout: float) -> list[store.Job]:
    try:
        wait_for(lambda: all(store.get_job(j).state in FINAL for j in job_ids), timeout,
                 "every job to end")
    except AssertionError as late:
        stuck = [(j.id[:8], j.state.value, j.step) for j in map(store.get_job, job_ids)
                 if j.state not in FINAL]
        raise AssertionError(f"{late}; not ended: {stuck}") from None
    return [store.get_job(j) for j in job_ids]


def reference_weights(source: Path, params: dict[str, object]) -> str:
    """weights.csv of a clean run, computed in this process from the same domain code."""
    p = JobParams(**params)
    prices, _ = validate.validate_prices(source, validate.ValidationRules(
        min_tickers=p.portfolio_size))
    request = optimize.PortfolioRequest(p.portfolio_size, p.objective, p.max_weight,
                                        p.min_weight, p.risk_free_rate)
    return archive.weights_csv(optimize.optimize(prices, request).weights)


@dataclass
class Outcome:
    jobs: int
    completed: int
    failed: dict[str, int]
    lost: int
    duplicated: int


def check_outcome(env: Env, job_ids: list[str], expected_weights: str | None) -> Outcome:
    jobs = [store.get_job(j) for j in job_ids]
    lost = [j.id for j in jobs if j.state not in FINAL]
    duplicated = [j for j in job_ids
                  if sum(e.to_state in TERMINAL for e in store.history(j)) > 1]
    failed: dict[str, int] = {}
    for job in jobs:
        folder = env.share / job.state.value / job.id
        assert folder.is_dir(), f"{job.id} is {job.state} but its folder is not there"
        assert any((folder / "input").iterdir()), f"{job.id}: input missing"
        if job.state is JobState.COMPLETED and expected_weights is not None:
            assert (folder / "weights.csv").read_text() == expected_weights, job.id
        if job.state is JobState.FAILED:
            reason = (job.error or {}).get("type", "?")
            failed[reason] = failed.get(reason, 0) + 1
    leftovers = list((env.share / "processing").glob("*"))
    assert not lost, f"jobs not final: {lost}"
    assert not duplicated, f"two terminal events: {duplicated}"
    assert not leftovers, f"left in processing/: {leftovers}"
    return Outcome(len(jobs), sum(j.state is JobState.COMPLETED for j in jobs), failed,
                   len(lost), len(duplicated))


@pytest.fixture
def record() -> Iterator[Callable[..., None]]:
    """Append a row for docs/reliability.md to artifacts/reliability.json."""
    started = time.monotonic()

    def write(scenario: str, outcome: Outcome) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / "reliability.json"
        rows = json.loads(path.read_text()) if path.exists() else []
        rows = [r for r in rows if r["scenario"] != scenario]
        rows.append({"scenario": scenario, **outcome.__dict__,
                     "seconds": round(time.monotonic() - started, 1)})
        path.write_text(json.dumps(rows, indent=2))

    yield write


@pytest.fixture
def small_share(tmp_path: Path) -> Iterator[Path]:
    """A 6 MB tmpfs mounted where the env fixtures put the share (needs root), for full disks."""
    mount = tmp_path / "share"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)]).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)])


def fill(mount: Path) -> Path:
    """Fill the filesystem at ``mount``; delete the returned file to free the space."""
    filler = mount / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True)
    return filler


def start_redis(tmp_path: Path, port: int) -> subprocess.Popen[bytes]:
    """A Redis of the test's own, with AOF, so the machine's server is left alone."""
    folder = tmp_path / "redis"
    folder.mkdir(exist_ok=True)
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--appendonly", "yes", "--appendfsync", "always", "--save", "",
                             "--dir", str(folder)], stdout=subprocess.DEVNULL)
    wait_for(lambda: _accepts(port), 10, f"redis on {port}")
    return proc


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), 0.5):
            return True
    except OSError:
        return False


class TcpProxy:
    """A TCP relay the test can cut: every connection dropped and new ones refused."""

    def __init__(self, target: tuple[str, int]) -> None:
        import threading

        self.target = target
        self.port = free_port()
        self.blocked = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import threading

        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if self.blocked.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, 5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.blocked.set()
        with self._lock:
            for s in self._sockets:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
                except OSError:
                    pass
            self._sockets.clear()

    def restore(self) -> None:
        self.blocked.clear()

    def close(self) -> None:
        self.cut()
        self._server.close()
