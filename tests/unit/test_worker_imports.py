"""What a worker imports before it forks: the functions of the steps it serves, and no more.

Issue 7 bounds a rotation worker's memory at 200 MB; the step functions bring pandas, pyarrow
and SciPy (about 160 MB), so a worker that serves only the maintenance queue must not load
them, while a step worker loads them in its main process (its pool shares those pages) and
refuses to start when a step's run function cannot be imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROBE = textwrap.dedent("""
    import json, sys
    from types import SimpleNamespace
    import orchestrator.celery as root
    root.app.loader.import_default_modules()  # the task modules, as a worker loads them
    queues = SimpleNamespace(consume_from=dict.fromkeys(sys.argv[1].split(",")))
    root._import_served_steps(sender=SimpleNamespace(app=SimpleNamespace(
        amqp=SimpleNamespace(queues=queues))))
    print(json.dumps({m: m in sys.modules for m in ("pandas", "scipy", "pyarrow")}))
""")


def worker_start(queues: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", PROBE, queues], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=120)


@pytest.fixture
def child_env(env) -> dict[str, str]:
    """This test's settings (the ``env`` fixture's variables), for a child interpreter."""
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def test_a_rotation_worker_does_not_load_the_steps_numerical_stack(child_env) -> None:
    # When a worker that serves only the maintenance queue (rotation) starts
    started = worker_start("maintenance", child_env)
    # Then neither pandas, SciPy nor pyarrow is loaded
    assert started.returncode == 0, started.stderr
    assert json.loads(started.stdout.splitlines()[-1]) == {
        "pandas": False, "scipy": False, "pyarrow": False}


def test_a_step_worker_loads_its_steps_before_forking(child_env) -> None:
    # When a worker that serves the optimize queue starts
    started = worker_start("optimize", child_env)
    # Then the optimize step's function is imported in its main process, SciPy with it
    assert started.returncode == 0, started.stderr
    assert json.loads(started.stdout.splitlines()[-1])["scipy"] is True


def test_a_worker_whose_step_cannot_be_imported_stops_saying_which(child_env, tmp_path) -> None:
    # Given a registry whose second step names a module that does not exist
    (tmp_path / "badreg.py").write_text(textwrap.dedent("""
        from orchestrator.steps.registry import Step, StepRegistry
        BAD = StepRegistry([
            Step("validate", "orchestrator.steps.run:run_validate", progress=50,
                 soft_time_limit=10, time_limit=20),
            Step("extra", "nowhere_at_all:run", progress=50, soft_time_limit=10,
                 time_limit=20)])
    """))
    env = {**child_env, "PYTHONPATH": f"{tmp_path}:{ROOT}",
           "PIPELINE_STEP_REGISTRY": "badreg:BAD"}
    # When a real worker serving that step's queue starts
    refused = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "orchestrator", "worker", "-Q", "extra",
         "-c", "1", "-n", f"refused-{os.getpid()}@%h", "--without-gossip",
         "--without-mingle"], capture_output=True, text=True, cwd=tmp_path, env=env,
        timeout=120)
    # Then it exits 1 before serving anything, naming the step and its run function
    assert refused.returncode == 1, refused.stderr[-2000:]
    assert ("step extra: its run function 'nowhere_at_all:run' cannot be imported: "
            "ModuleNotFoundError") in refused.stderr
    # And a worker serving only rotation, with the same registry, gets past that point
    rotation = worker_start("maintenance", env)
    assert rotation.returncode == 0, rotation.stderr
