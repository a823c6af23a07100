"""`pipeline health` against a Redis the test starts and stops itself, with a worker and beat."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.settings import reset_settings
from tests.conftest import REQUIRE, Env

pytestmark = [pytest.mark.slow, pytest.mark.redis]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    binary = shutil.which("redis-server")
    if binary is None:
        (pytest.fail if REQUIRE else pytest.skip)("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.1)
    yield proc, port
    if proc.poll() is None:
        proc.terminate()
        proc.wait(10)


def health(env: Env) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.main", "health"], env=env.environ(),
                          cwd=env.root, capture_output=True, text=True, timeout=60)


def test_health_fails_with_the_reason_when_redis_stops(env, own_redis, worker, spawn,
                                                       monkeypatch):
    proc, port = own_redis
    # Given a worker and beat on a Redis of our own (broker and results)
    for key, value in {"PIPELINE_BROKER_URL": f"redis://127.0.0.1:{port}/0",
                       "PIPELINE_RESULT_BACKEND": f"redis://127.0.0.1:{port}/1",
                       "PIPELINE_RECOVERY_INTERVAL": "1"}.items():
        env.variables[key] = value
        monkeypatch.setenv(key, value)
    reset_settings()
    worker(env)
    spawn([sys.executable, "-m", "celery", "-A", "orchestrator", "beat", "--loglevel", "INFO",
           "-s", str(env.root / "var" / "celerybeat-schedule")], env, "beat")
    # Then every part is healthy once beat has ticked
    deadline = time.monotonic() + 60
    while (healthy := health(env)).returncode != 0:
        assert time.monotonic() < deadline, healthy.stdout + healthy.stderr
        time.sleep(0.5)
    assert "beat: ok: last tick" in healthy.stdout and "workers: ok: 1 online" in healthy.stdout
    # When Redis stops
    proc.terminate()
    proc.wait(10)
    started = time.monotonic()
    failing = health(env)
    # Then health exits 6 quickly, with one line naming each failing part and why
    assert failing.returncode == 6
    assert time.monotonic() - started < 20
    lines = failing.stderr.splitlines()
    assert any(line.startswith("broker: FAIL: ") and "refused" in line for line in lines), lines
    assert any(line.startswith("results: FAIL: ") and "refused" in line for line in lines), lines
    assert "workers: FAIL: not asked: the broker is unreachable" in lines
    assert "database: ok: sqlite answered" in failing.stdout
    assert "share: ok:" in failing.stdout
