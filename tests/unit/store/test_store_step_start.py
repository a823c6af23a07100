"""A step start (``lifecycle.begin_step``) on both stores: the compare-and-set that decides
whether a delivered step may run, including the run check, on SQLite and on PostgreSQL (where
the change and its history row are one statement). The lifecycle's own stories
(tests/unit/test_lifecycle.py) run here a second time, on PostgreSQL.

Also: a step start binds values into statements built once per process; building them again
for every start was half the CPU of a step start (docs/performance.md, "The hot path").
"""

from __future__ import annotations

import pytest

from orchestrator.jobs import lifecycle
from orchestrator.store import jobs as store
from orchestrator.store import transitions
from orchestrator.store.states import JobState
from tests.unit.store.test_store_jobs import database  # noqa: F401 - the autouse parametrization
from tests.unit.test_lifecycle import *  # noqa: F403 - every lifecycle story, on both stores
from tests.unit.test_lifecycle import begin, job_id, run_to, share, task  # noqa: F401

S = JobState


def test_a_late_original_of_an_older_run_is_refused(job_id: str) -> None:  # noqa: F811
    # Given a job republished as run 1 (its row names run 1's first task)
    store.transition(job_id, S.QUEUED, sources={S.QUEUED}, task_id=task(job_id, "validate", 1))
    # When run 0's messages arrive late, then they are refused and the job still waits
    assert begin(job_id, "validate", task(job_id, "validate", 0)) is None
    assert begin(job_id, "optimize", task(job_id, "optimize", 0)) is None
    assert store.get_job(job_id).state is S.QUEUED
    # and run 1 moves it, one step after the other, refusing run 0's next step on the way
    assert begin(job_id, "validate", task(job_id, "validate", 1)) is not None
    assert begin(job_id, "optimize", task(job_id, "optimize", 0)) is None
    assert begin(job_id, "optimize", task(job_id, "optimize", 1)) is not None


def test_an_abandoned_step_is_taken_over_only_by_its_own_run(job_id: str) -> None:  # noqa: F811
    # Given a job at optimize (run 0) whose holder's lease ran out
    run_to(job_id, "validate")
    assert begin(job_id, "optimize", lease=-1) is not None
    # When a copy from another run arrives, then it is refused
    assert begin(job_id, "optimize", task(job_id, "optimize", 7)) is None
    # and a copy of the same run takes the step over, as a new attempt, saying why
    begun = begin(job_id, "optimize", f"{job_id}.optimize.0")
    assert begun is not None and begun.redelivered and begun.job.attempts == 2


def test_a_second_job_starts_its_steps_without_building_a_statement(
        share, job_id: str, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    # Given one job run through its steps (the statements are built for this process)
    run_to(job_id, "archive")
    assert lifecycle.complete(share, job_id, {})
    second = store.NewJob(id=job_id[::-1], input_name="p.csv", input_sha256="0" * 64,
                          input_size=1, params={})
    store.create_jobs([second])
    (share.processing / second.id / "input").mkdir(parents=True)
    built: list[object] = []
    original = transitions._build
    monkeypatch.setattr(transitions, "_build", lambda *a: built.append(a) or original(*a))
    # When a second job runs through the same steps
    run_to(second.id, "archive")
    assert lifecycle.complete(share, second.id, {})
    # Then no statement was built again: each step start only bound its values
    assert built == []
    assert [e.to_state for e in store.history(second.id)] == [
        "pending", "queued", "processing", "processing", "processing", "completed"]
