"""Canvas, retries and chord callbacks with an in-process worker on the memory transport.

The composition root (orchestrator/celery.py, ``create_app``) makes an app from the settings it
is given, with every task (they are Celery shared tasks); Celery's own test worker
(``celery.contrib.testing.worker.start_worker``, what pytest-celery's ``celery_worker`` fixture
runs) serves it in a thread of this process, on kombu's memory transport and an in-memory
result backend: no broker, no subprocess, and ``monkeypatch`` reaches the step code (issue 15,
item 7). The real-process proofs stay in tests/integration and tests/fault.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker

from orchestrator.celery import ShutdownDeadline, create_app
from orchestrator.errors import TransientError
from orchestrator.jobs.canvas import Orchestrator
from orchestrator.settings import get_settings, reset_settings
from orchestrator.steps import optimize as optimize_step
from orchestrator.store import jobs as store
from orchestrator.store.states import JobState
from tests.support import wait_final, wait_path


@pytest.fixture
def memory_app(env, monkeypatch: pytest.MonkeyPatch) -> Iterator[Celery]:
    monkeypatch.setenv("PIPELINE_BROKER_URL", "memory://")
    monkeypatch.setenv("PIPELINE_RESULT_BACKEND", "cache+memory://")
    reset_settings()
    app = create_app(get_settings())
    # The deadline exits a real worker process that hangs while stopping; here the "worker" is
    # this test process, which goes on after the worker stops.
    app.steps["worker"].discard(ShutdownDeadline)
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=30):
        yield app


def test_a_job_chain_runs_every_step_in_process(memory_app: Celery, sample_csv: Path) -> None:
    orch = Orchestrator(get_settings(), app=memory_app)
    (job,) = wait_final([orch.submit(sample_csv, {"portfolio_size": 12})])
    assert job.state is JobState.COMPLETED, job.error
    assert [e.step for e in store.history(job.id) if e.to_state == "processing"] == [
        "validate", "optimize", "archive"]


def test_a_transient_error_requeues_the_step_and_the_retry_finishes_the_job(
        memory_app: Celery, sample_csv: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given an optimizer that fails once with a transient error
    real = optimize_step.optimize
    calls: list[int] = []

    def flaky(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 1:
            raise TransientError("solver licence server did not answer")
        return real(*args, **kwargs)

    monkeypatch.setattr(optimize_step, "optimize", flaky)
    orch = Orchestrator(get_settings(), app=memory_app)
    # When a job runs
    (job,) = wait_final([orch.submit(sample_csv, {"portfolio_size": 12})])
    # Then the step was retried through the policy's backoff, and the job completed
    assert job.state is JobState.COMPLETED, job.error
    assert len(calls) == 2
    requeued = [e for e in store.history(job.id) if e.to_state == "queued" and e.step]
    assert len(requeued) == 1
    assert requeued[0].step == "optimize"
    assert "retry 1/3" in requeued[0].detail and "licence server" in requeued[0].detail


def test_a_batch_with_a_failed_member_reaches_its_summary(memory_app: Celery, sample_csv: Path,
                                                         tmp_path: Path) -> None:
    # Given a folder of one good file and one that is not a price file
    folder = tmp_path / "march"
    folder.mkdir()
    (folder / "good.csv").write_bytes(sample_csv.read_bytes())
    (folder / "bad.csv").write_text("this is not a price file\n")
    orch = Orchestrator(get_settings(), app=memory_app)
    # When it is submitted as a batch (a chord of two chains and a summary)
    batch_id = orch.submit_batch(sorted(folder.iterdir()), {"portfolio_size": 12}, "march")
    members = store.list_jobs(batch_id=batch_id)
    states = sorted(j.state.value for j in wait_final([j.id for j in members]))
    # Then the failed chain did not stop the chord's summary: its error callback wrote it
    assert states == ["completed", "failed"]
    summary = get_settings().share_dir / "completed" / "batches" / batch_id / "summary.json"
    wait_path(summary.parent, summary.name)
    written = json.loads(summary.read_text())
    assert written["name"] == "march"


def test_files_submitted_together_each_run_as_a_job_and_a_vanished_one_is_named(
        memory_app: Celery, sample_csv: Path, tmp_path: Path) -> None:
    # Given three price files and one name whose file is gone (another watcher took it)
    orch = Orchestrator(get_settings(), app=memory_app)
    files = []
    for name in ("a.csv", "b.csv", "c.csv"):
        (tmp_path / name).write_bytes(sample_csv.read_bytes())
        files.append(tmp_path / name)
    gone = tmp_path / "gone.csv"
    # When they are submitted together, as `pipeline submit a.csv b.csv gone.csv c.csv` does
    job_ids, lost = orch.submit_many([files[0], files[1], gone, files[2]],
                                     {"portfolio_size": 10})
    # Then the vanished one is named, and each of the others is a job that completes
    assert lost == [gone]
    ended = wait_final(job_ids)
    assert [(j.input_name, j.state) for j in ended] == [
        ("a.csv", JobState.COMPLETED), ("b.csv", JobState.COMPLETED),
        ("c.csv", JobState.COMPLETED)]
    assert all(j.params["portfolio_size"] == 10 for j in ended)
