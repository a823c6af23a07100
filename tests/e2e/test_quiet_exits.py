"""Stopping a command never prints a traceback: real processes, stopped as users stop them.

`pipeline config | head` (the reader goes away), SIGTERM to `pipeline watch` after a batch on
Redis results (celery's AsyncResult.__del__ at interpreter exit), Ctrl-C on `pipeline flower`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.conftest import SAMPLE, Env
from tests.integration.test_health import free_port

pytestmark = pytest.mark.slow
PIPELINE = [sys.executable, "-m", "cli.main"]


def _default_sigint() -> None:
    """As in a terminal: SIGINT raises KeyboardInterrupt (a background `&` ignores it)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(env: Env, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*PIPELINE, *args], env=env.environ(), cwd=env.root, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True, preexec_fn=_default_sigint)


def read_until(proc: subprocess.Popen[str], text: str, timeout: float = 60) -> str:
    """Lines of ``proc`` up to the one holding ``text`` (the deadline only stops a hang)."""
    assert proc.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if text in line:
            return "".join(seen)
    raise AssertionError(f"{text!r} not seen:\n{''.join(seen)}")


def test_config_into_head_ends_quietly(env):
    # `pipeline config | head -n 0`, made certain: the reader has gone before the first write
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        shown = subprocess.run([*PIPELINE, "config"], env=env.environ(), cwd=env.root,
                               stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write_end)
    assert shown.stderr == ""
    assert shown.returncode == 141  # as a shell reports a tool ended by SIGPIPE


@pytest.fixture
def redis_results(env: Env, redis_url: str) -> Iterator[Env]:
    """Redis as broker and result backend (its result consumer subscribes per task)."""
    import redis

    env.variables.update(PIPELINE_BROKER_URL=redis_url, PIPELINE_RESULT_BACKEND=redis_url)
    yield env
    redis.Redis.from_url(redis_url).flushdb()


def test_watch_stops_on_sigterm_without_a_traceback_after_a_batch(redis_results: Env, tmp_path):
    env = redis_results
    watch = start(env, "watch")
    read_until(watch, "watching")
    folder = tmp_path / "batch1"
    folder.mkdir()
    for index in range(2):
        (folder / f"prices{index}.csv").write_bytes(SAMPLE.read_bytes())
    (folder / "READY").touch()
    folder.rename(env.share / "input" / "batch1")
    read_until(watch, "submitted")
    watch.send_signal(signal.SIGTERM)
    rest = watch.communicate(timeout=60)[0]
    assert watch.returncode == 0, rest
    assert "Traceback" not in rest and "Exception ignored" not in rest, rest


def test_flower_stops_on_ctrl_c_without_a_traceback(env):
    port = free_port()
    flower = start(env, "flower", "--port", str(port))
    read_until(flower, "Visit me at")
    # Ctrl-C in a terminal (SIGINT to the whole foreground process group), pressed twice as
    # impatient people do
    os.killpg(flower.pid, signal.SIGINT)
    time.sleep(0.3)
    with contextlib.suppress(ProcessLookupError):  # it may be gone already
        os.killpg(flower.pid, signal.SIGINT)
    rest = flower.communicate(timeout=60)[0]
    assert flower.returncode in (0, 130), rest  # stopped, or stopped harder by the 2nd press
    assert "Traceback" not in rest and "KeyboardInterrupt" not in rest, rest
