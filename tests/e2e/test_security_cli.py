"""What an attacker or a careless operator tried from the command line (issue 13), as they ran
it: each command in a real ``pipeline`` process, on the embedded default."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass

import pytest


@dataclass
class Ran:
    returncode: int | None  # None: still running when the test gave up on it (then killed)
    stdout: str
    stderr: str


def run(env, *args: str, timeout: float = 60, **extra: str) -> Ran:  # type: ignore[no-untyped-def]
    """``pipeline ARGS`` in its own session; on timeout the whole session (e.g. a Flower child)
    is killed, so a command that should have been refused leaves nothing running."""
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", *args],
                            env={**env.environ(), **extra}, cwd=env.root, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        return Ran(proc.returncode, out, err)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return Ran(None, out, err)


@pytest.mark.parametrize("passed", [
    ["--address=0.0.0.0"], ["-address=0.0.0.0"], ["--address", "0.0.0.0"],
    ["unrelated", "--address=0.0.0.0"], ["--port=5601"], ["--conf=/tmp/other.py"],
    ["--basic-auth=ops:pw"]])
def test_flower_refuses_pass_through_of_what_it_checks(env, passed: list[str]) -> None:
    # given no Flower credentials, when the address (or port, conf, a password) is passed
    # through to Flower after `--`, where it would override the checked one
    result = run(env, "flower", "--port", "5600", "--", *passed, timeout=30)
    # then pipeline flower refuses before starting Flower, naming the option and what to use
    assert result.returncode == 2, (result.stdout, result.stderr[-2000:])
    assert "cannot be passed through to Flower" in result.stderr
    assert "Flower runs without authentication" not in result.stderr
