"""A failed job looks failed where Celery reports it: its failing step's task ends FAILURE with
the reason, its later steps never run, and a batch still reaches its summary.

Run on the embedded default (file transport, file results, SQLite) and on Redis + PostgreSQL,
with a real ``celery worker`` process; Celery's result backend is read as Flower's task page
and ``AsyncResult`` read it.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from celery import Celery

from orchestrator.celery import create_app
from orchestrator.jobs.canvas import Orchestrator, task_id
from orchestrator.jobs.lifecycle import StepFailed
from orchestrator.store import jobs as store
from orchestrator.store.states import JobState
from tests.support import bad_cell_copy, wait_final, wait_path

pytestmark = pytest.mark.slow
SETUPS = ["env", pytest.param("servers_env", marks=[pytest.mark.redis, pytest.mark.postgres])]


@pytest.fixture(params=SETUPS)
def setup(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(request.param)


def task_state(app: Celery, job_id: str, step: str, expected: str, timeout: float = 30,
               ) -> Any:
    """The step's result once its state is ``expected`` (the row is written before the raise)."""
    result = app.AsyncResult(task_id(job_id, step, 0))
    deadline = time.monotonic() + timeout
    while result.state != expected and time.monotonic() < deadline:
        time.sleep(0.1)
    assert result.state == expected, (step, result.state, result.result)
    return result


def test_a_failed_step_is_a_failed_task_and_the_later_steps_never_run(
        setup, worker, sample_csv, tmp_path):
    # Given a worker
    process = worker(setup)
    app = create_app(setup.settings)
    orch = Orchestrator(setup.settings, app=app)
    # When a file with a bad cell is submitted
    job_id = orch.submit(bad_cell_copy(sample_csv, tmp_path), {})
    (job,) = wait_final([job_id])
    # Then the job is failed once, in validate, with error.json in failed/
    assert job.state is JobState.FAILED
    error = json.loads((setup.share / "failed" / job_id / "error.json").read_text())
    assert error["step"] == "validate" and "row 11" in error["message"]
    assert [e.to_state for e in store.history(job_id)].count("failed") == 1
    # And validate's task is a FAILURE whose exception carries the job, the step and the reason
    failed = task_state(app, job_id, "validate", "FAILURE").result
    assert isinstance(failed, StepFailed), repr(failed)
    assert (failed.job_id, failed.step) == (job_id, "validate")
    assert "row 11" in str(failed) and "AMD" in str(failed) and "bad.csv" in str(failed)
    # And the later steps never ran: they are not successes, and the worker never received them
    for step in ("optimize", "archive"):
        assert app.AsyncResult(task_id(job_id, step, 0)).state != "SUCCESS"
        assert f"{job_id}.{step}.0] received" not in process.output()
    # And the failure was neither retried nor recorded twice
    log = process.output()
    assert "] retry:" not in log and "not recorded" not in log, log[-3000:]


def test_a_batch_with_a_failed_member_reaches_its_summary(setup, worker, sample_csv, tmp_path):
    # Given a worker and a folder of one good and one bad file
    worker(setup)
    app = create_app(setup.settings)
    orch = Orchestrator(setup.settings, app=app)
    folder = tmp_path / "batch"
    folder.mkdir()
    (folder / "good.csv").write_bytes(sample_csv.read_bytes())
    bad_cell_copy(sample_csv, folder)
    # When the folder is submitted as a batch
    batch_id = orch.submit_batch(sorted(folder.iterdir()), {"portfolio_size": 10})
    # Then the summary lands with the true counts, although a chord member failed
    (summary_path,) = wait_path(setup.share / "completed" / "batches" / batch_id,
                                "summary.json", timeout=90)
    summary = json.loads(summary_path.read_text())
    assert summary["by_state"] == {"completed": 1, "failed": 1}
    (bad,) = [m for m in summary["members"] if m["state"] == "failed"]
    assert bad["input"] == "bad.csv" and "row 11" in bad["error"]
    # And the bad member's validate task is a FAILURE, the good member's archive a SUCCESS
    good = next(m for m in summary["members"] if m["state"] == "completed")
    assert isinstance(task_state(app, bad["job_id"], "validate", "FAILURE").result, StepFailed)
    task_state(app, good["job_id"], "archive", "SUCCESS")
