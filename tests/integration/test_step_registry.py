"""Adding a step is one registry entry plus its function (issue 15, item 3).

tests/integration/four_steps.py declares a fourth step, ``concentration``, between optimize and
archive. Everything else is made from that declaration: the worker's task and queue, the route
and time limits, the job's chain, its progress and its history; a real ``celery worker`` on the
embedded default runs a job through all four steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import celeryconfig
from cli.processes import worker_command
from orchestrator.celery import create_app
from orchestrator.jobs.canvas import Orchestrator
from orchestrator.settings import Settings, reset_settings
from orchestrator.store import jobs as store
from orchestrator.store.states import JobState
from tests.integration.four_steps import CONCENTRATION, FOUR_STEPS
from tests.support import wait_final

REGISTRY = "tests.integration.four_steps:FOUR_STEPS"
ROOT = Path(__file__).resolve().parents[2]


def test_the_celery_configuration_is_made_from_the_registry(tmp_path: Path) -> None:
    settings = Settings(share_dir=tmp_path / "share", var_dir=tmp_path / "var",
                        step_registry=REGISTRY)
    conf = celeryconfig.build(settings)
    assert settings.steps.names == ("validate", "optimize", "concentration", "archive")
    assert conf["task_routes"]["pipeline.concentration"] == {"queue": "concentration"}
    assert [q.name for q in conf["task_queues"]] == [
        "validate", "optimize", "concentration", "archive", "maintenance"]
    assert conf["task_annotations"]["pipeline.concentration"] == {
        "soft_time_limit": 20, "time_limit": 30}
    # a new step is served by the "steps" role unless it names its own
    assert settings.steps.roles() == {"steps": ("validate", "concentration", "archive"),
                                      "optimize": ("optimize",),
                                      "maintenance": ("maintenance",)}
    # the built-in steps' limits are still overridden by their settings
    assert Settings(step_registry=REGISTRY, optimize_time_limit=999).time_limits("optimize") \
        == (300, 999)


def test_a_registry_that_cannot_work_is_refused_naming_the_setting() -> None:
    with pytest.raises(ValueError, match=r"PIPELINE_STEP_REGISTRY=tests\.nowhere:STEPS"):
        Settings(step_registry="tests.nowhere:STEPS")
    with pytest.raises(ValueError, match="progress shares must add up to 100"):
        type(FOUR_STEPS)(list(FOUR_STEPS)[:3])


@pytest.mark.slow
def test_a_job_runs_through_four_steps_declared_in_the_registry(env, worker, sample_csv,
                                                               monkeypatch) -> None:
    # Given the pipeline named by PIPELINE_STEP_REGISTRY, and a worker of its queues
    env.variables["PIPELINE_STEP_REGISTRY"] = REGISTRY
    env.variables["PYTHONPATH"] = str(ROOT)  # the worker imports the test's step
    monkeypatch.setenv("PIPELINE_STEP_REGISTRY", REGISTRY)
    reset_settings()
    assert "concentration" in worker_command(2)[worker_command(2).index("-Q") + 1]
    worker(env)
    orch = Orchestrator(env.settings, app=create_app(env.settings))
    # When a price file is submitted
    job_id = orch.submit(sample_csv, {"portfolio_size": 12})
    (job,) = wait_final([job_id])
    # Then the job ran the four steps in order, and the new step's output is in its folder
    assert job.state is JobState.COMPLETED, job.error
    assert job.progress == 100.0
    path = [(e.to_state, e.step) for e in store.history(job_id)]
    assert path == [("pending", None), ("queued", None), ("processing", "validate"),
                    ("processing", "optimize"), ("processing", "concentration"),
                    ("processing", "archive"), ("completed", "archive")]
    folder = env.share / "completed" / job_id
    concentration = json.loads((folder / CONCENTRATION).read_text())
    assert 1 <= concentration["effective_holdings"] <= 12
    report = json.loads((folder / "report.json").read_text())
    assert "concentration_seconds" in report["timings"]
