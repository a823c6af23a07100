"""``pipeline up`` serves the API and the page too, on the port the settings name (printed),
unless PIPELINE_API_ENABLED=false."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import httpx
import pytest

from tests.conftest import Env, Process
from tests.own_servers import free_port

pytestmark = [pytest.mark.slow]


def test_pipeline_up_serves_the_api(env: Env, spawn: Callable[..., Process]) -> None:
    port = free_port()
    env.variables["PIPELINE_API_PORT"] = str(port)
    up = spawn([sys.executable, "-m", "cli.main", "up", "--concurrency", "1"], env, "up")
    up.wait_for(f"pipeline api: http://127.0.0.1:{port}/")
    deadline = time.monotonic() + 60
    while True:
        try:
            answer = httpx.get(f"http://127.0.0.1:{port}/v1/jobs", timeout=5)
            break
        except httpx.TransportError:
            assert time.monotonic() < deadline, up.output()
            time.sleep(0.2)
    assert answer.status_code == 200 and answer.json() == {"jobs": [], "next": None}
    assert "Submit a price file" in httpx.get(f"http://127.0.0.1:{port}/").text
    assert up.stop() == 0


def test_a_setting_turns_it_off(env: Env, spawn: Callable[..., Process]) -> None:
    env.variables["PIPELINE_API_ENABLED"] = "false"
    up = spawn([sys.executable, "-m", "cli.main", "up", "--concurrency", "1"], env, "up")
    up.wait_for("pipeline up:")
    assert "pipeline api:" not in up.output()
    assert up.stop() == 0
