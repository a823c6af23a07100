"""Fixtures shared by every test: an isolated share and var folder, real servers, real workers.

Server-backed tests skip on a laptop without the servers (the message says how to enable
them) and fail in CI, where ``PIPELINE_REQUIRE_SERVERS=1`` is set by ``.ci/run``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import pytest

from orchestrator.settings import Settings, get_settings, reset_settings
from orchestrator.store import db

SAMPLE = Path(__file__).resolve().parents[1] / "orchestrator" / "examples" / "sp500_sample.csv"
REQUIRE = os.environ.get("PIPELINE_REQUIRE_SERVERS") == "1"
SERVERS = {
    "redis": os.environ.get("PIPELINE_TEST_REDIS_URL", "redis://127.0.0.1:6379/9"),
    "postgres": os.environ.get("PIPELINE_TEST_POSTGRES_URL",
                               "postgresql://postgres@127.0.0.1:5432/postgres"),
    "rabbitmq": os.environ.get("PIPELINE_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//"),
}


def reachable(url: str) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 0), 2):
            return True
    except OSError:
        return False


def server_url(name: str) -> str:
    url = SERVERS[name]
    if reachable(url):
        return url
    message = (f"{name} is not reachable at {url}: start it, or point "
               f"PIPELINE_TEST_{name.upper()}_URL at one")
    if REQUIRE:
        pytest.fail(message + " (PIPELINE_REQUIRE_SERVERS=1: servers are required here)")
    pytest.skip(message)


#: ``pytest`` alone is the quick layer (a few minutes): every unit test, and these real-worker
#: tests, which prove the main paths end to end — a job and a batch on the embedded default, on
#: Redis + PostgreSQL and on RabbitMQ, a failed step seen as failed, the HTTP API's flow, the
#: CLI a user types. ``pytest --full`` runs everything: also the rest of tests/integration,
#: tests/e2e and tests/api, and the fault, fuzz and multi-host suites.
QUICK = ("unit",)
QUICK_FILES = ("integration/test_embedded_pipeline.py", "integration/test_servers_pipeline.py",
               "integration/test_failed_steps.py", "integration/test_step_registry.py",
               "api/test_api_flow.py", "e2e/test_cli.py")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--full", action="store_true",
                     help="run every test, not only the quick layer (QUICK in tests/conftest.py)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--full"):
        return
    kept, skipped = [], []
    here = Path(__file__).parent
    for item in items:
        if not item.path.is_relative_to(here):  # a test's own inner session, run elsewhere
            kept.append(item)
            continue
        where = item.path.relative_to(here)
        quick = where.parts[0] in QUICK or where.as_posix() in QUICK_FILES
        (kept if quick else skipped).append(item)
    if skipped:
        config.hook.pytest_deselected(items=skipped)
        items[:] = kept


@pytest.fixture
def clean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """No PIPELINE_* variable set, the working directory a fresh folder, no cached settings."""
    for key in list(os.environ):
        if key.startswith("PIPELINE_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    reset_settings()
    yield Path.cwd()
    reset_settings()


@pytest.fixture
def sample_csv() -> Path:
    return SAMPLE


@dataclass
class Env:
    """An isolated installation: share, var and the PIPELINE_* variables that point at them."""

    root: Path
    variables: dict[str, str] = field(default_factory=dict)

    @property
    def share(self) -> Path:
        return self.root / "share"

    @property
    def settings(self) -> Settings:
        return get_settings()

    def environ(self) -> dict[str, str]:
        return {**os.environ, **self.variables}

    def drop(self, source: Path, name: str | None = None) -> Path:
        """Copy a file into input/ the way a careful user does: write aside, then rename."""
        target = self.share / "input" / (name or source.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.part")
        shutil.copyfile(source, partial)
        partial.rename(target)
        return target


def _activate(env: Env, monkeypatch: pytest.MonkeyPatch) -> Env:
    for key, value in env.variables.items():
        monkeypatch.setenv(key, value)
    reset_settings()
    db._forget_after_fork()
    db.migrate()
    return env


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    """The embedded default (files and SQLite) in a fresh folder."""
    variables = {"PIPELINE_SHARE_DIR": str(tmp_path / "share"),
                 "PIPELINE_VAR_DIR": str(tmp_path / "var"),
                 "PIPELINE_SCAN_INTERVAL": "0.2"}
    yield _activate(Env(tmp_path, variables), monkeypatch)
    reset_settings()
    db._forget_after_fork()


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    import sqlalchemy as sa

    admin_url = db.normalize_url(server_url("postgres"))
    name = f"pipeline_test_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield str(sa.engine.make_url(admin_url).set(database=name).render_as_string(False))
    db._forget_after_fork()
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def redis_url() -> Iterator[str]:
    """The test Redis database, empty at the start and emptied again at the end.

    Workers leave kombu's bindings and Celery's results behind (12 keys after the suite):
    flushing here, after the test's processes stopped (they are started by fixtures requested
    after this one, so pytest stops them first), leaves the database as it was found.
    """
    import redis

    url = server_url("redis")
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture
def servers_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str,
                postgres_database: str) -> Iterator[Env]:
    """Redis as broker and result backend, PostgreSQL as the status store."""
    variables = {"PIPELINE_SHARE_DIR": str(tmp_path / "share"),
                 "PIPELINE_VAR_DIR": str(tmp_path / "var"),
                 "PIPELINE_BROKER_URL": redis_url, "PIPELINE_RESULT_BACKEND": redis_url,
                 "PIPELINE_DATABASE_URL": postgres_database, "PIPELINE_SCAN_INTERVAL": "0.2"}
    env = _activate(Env(tmp_path, variables), monkeypatch)
    empty_database()
    yield env
    reset_settings()
    db._forget_after_fork()


def empty_database() -> None:
    """Every table of the session's PostgreSQL database emptied: one test's tokens (which turn
    auth on), jobs or heartbeats must not change what the next one sees."""
    from orchestrator.store.tables import metadata

    with db.transaction() as conn:
        conn.exec_driver_sql(f"TRUNCATE {', '.join(metadata.tables)} CASCADE")


@dataclass
class Process:
    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"process exited {self.proc.returncode}:\n{self.output()}")
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not seen in {timeout} s:\n{self.output()[-3000:]}")

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def discard(self) -> None:
        """End it and its children at once, when the test is over: a Celery worker's warm (or
        cold) shutdown takes 5-7 s here on every broker, most of the suite's teardown time, and
        nothing is left to finish. The process leads its own session (``spawn``)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Process]]:
    """Start a real process (celery worker, pipeline watch/up) with the test's environment."""
    started: list[Process] = []

    def start(args: list[str], env: Env, name: str) -> Process:
        log = tmp_path / f"{name}-{len(started)}.log"
        handle = open(log, "wb")  # noqa: SIM115 - the child owns it
        proc = subprocess.Popen(args, env=env.environ(), cwd=env.root, stdout=handle,
                                stderr=subprocess.STDOUT, start_new_session=True)
        started.append(Process(proc, log))
        return started[-1]

    yield start
    for process in started:
        if _is_worker(process):
            process.discard()
        else:
            process.stop()


def _is_worker(process: Process) -> bool:
    args = [str(a) for a in process.proc.args]  # type: ignore[union-attr]
    return "celery" in args and "worker" in args


@pytest.fixture
def worker(spawn: Callable[..., Process]) -> Callable[..., Process]:
    """A real ``celery -A orchestrator worker`` on every queue, started and ready."""

    def start(env: Env, concurrency: int = 2, queues: str | None = None) -> Process:
        """``queues``: default every queue of the configured pipeline."""
        queues = queues or ",".join(get_settings().steps.all_queues)
        name = f"w{uuid.uuid4().hex[:6]}"
        process = spawn([sys.executable, "-m", "celery", "-A", "orchestrator", "worker", "-Q",
                         queues, "-c", str(concurrency), "-n", f"{name}@%h", "--loglevel", "INFO",
                         "--without-gossip", "--without-mingle"], env, name)
        process.wait_for("ready.")
        return process

    return start
