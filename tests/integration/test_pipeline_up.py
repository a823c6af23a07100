"""`pipeline up` as the only thing running the pipeline on a machine: its children die with it,
and a second `up` is refused while the first (or any of its children) still runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.test_embedded_pipeline import _children

pytestmark = pytest.mark.slow
UP = [sys.executable, "-m", "cli.main", "up", "--concurrency", "1"]


def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "zombie" not in status


def wait_gone(pids: list[int], timeout: float = 30) -> list[int]:
    """The pids still alive when all are gone or the deadline passed (a guard, not a measure)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if alive(p)]


def test_up_is_refused_while_one_runs_and_its_children_die_with_it(env, spawn):
    # Given `pipeline up` running its worker and beat
    first = spawn(UP, env, "up")
    first.wait_for("pipeline up:")
    first.wait_for("ready.", timeout=90)
    children = _children(first.proc.pid)
    assert len(children) >= 2, first.output()
    # When a second `up` starts on the same machine and var folder
    second = subprocess.run(UP, env=env.environ(), cwd=env.root, capture_output=True,
                            text=True, timeout=120)
    # Then it is refused, saying why, and starts nothing
    assert second.returncode == 14, second.stdout + second.stderr
    assert "already running" in second.stderr and "pipeline-up.lock" in second.stderr
    assert sorted(_children(first.proc.pid)) == sorted(children)
    # When the first `up` is killed outright (no chance to stop its children)
    os.kill(first.proc.pid, signal.SIGKILL)
    first.proc.wait(10)
    # Then its worker and beat (and the worker's pool) are gone too
    pool = [p for c in children for p in _children(c)]
    assert wait_gone(children + pool) == [], first.output()[-3000:]
    # And a new `up` starts (the lock went with them), and stops on Ctrl-C
    again = spawn(UP, env, "up-again")
    again.wait_for("pipeline up:")
    os.killpg(again.proc.pid, signal.SIGINT)
    assert again.proc.wait(60) == 0, again.output()[-3000:]


@pytest.fixture
def redis_broker(env, redis_url: str):
    """Redis as broker and results (workers answer pings there), the store on SQLite."""
    import redis

    env.variables.update(PIPELINE_BROKER_URL=redis_url, PIPELINE_RESULT_BACKEND=redis_url,
                         # no scheduled send during the test: beat's first tick is far away
                         PIPELINE_RECOVERY_INTERVAL="3600", PIPELINE_ROTATION_SCHEDULE="off")
    yield env
    redis.Redis.from_url(redis_url).flushdb()


def health(env) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.main", "health", "--json"],
                          env=env.environ(), cwd=env.root, capture_output=True, text=True,
                          timeout=60)


def test_up_by_role_names_each_worker_and_beat_is_healthy_from_its_start(redis_broker, spawn):
    import json
    import socket

    env = redis_broker
    # Given the one-host server setup in one command
    up = spawn([*UP, "--workers-by-role"], env, "up-roles")
    up.wait_for("pipeline up:")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:  # until the three workers answer and beat has started
        parts = json.loads(health(env).stdout)["parts"]
        if parts["workers"]["detail"].startswith("3 online") and parts["beat"]["ok"]:
            break
        time.sleep(0.5)
    # Then health names three workers by role, none twice, and beat is ok before its first tick
    host = socket.gethostname()
    assert parts["workers"] == {"ok": True, "detail": f"3 online: maintenance@{host}, "
                                f"optimize@{host}, steps@{host}"}, (parts, up.output()[-3000:])
    assert parts["beat"]["ok"] and parts["beat"]["detail"].startswith("started "), parts
    assert "DuplicateNodenameWarning" not in up.output()
    os.killpg(up.proc.pid, signal.SIGINT)
    assert up.proc.wait(60) == 0
