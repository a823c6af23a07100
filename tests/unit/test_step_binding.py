"""A step's message is bound to its step: by the signed body, and by the job's record.

Celery's signing covers a message's body, not its ``task`` header. So the body names the step
it is for (checked against the task that received it), and a queued job starts only the step
its record expects next; a message for any other step is refused and the job is untouched.
"""

from __future__ import annotations

import uuid

import pytest

from orchestrator.jobs import lifecycle
from orchestrator.jobs.canvas import Orchestrator
from orchestrator.paths import Share
from orchestrator.runtime.messages import STEP_KWARG, misaddressed
from orchestrator.store import jobs as store
from orchestrator.store.states import JobState

S = JobState


@pytest.fixture
def job_id(env) -> str:  # type: ignore[no-untyped-def]
    """A queued job, as a submission records it (step not yet set: validate comes first)."""
    Share(env.share).ensure()
    new = store.NewJob(id=uuid.uuid4().hex, input_name="prices.csv", input_sha256="0" * 64,
                       input_size=10, params={"portfolio_size": 20})
    store.create_jobs([new])
    return new.id


def begin(job_id: str, step: str, run: str = "0") -> lifecycle.Begun | None:
    return lifecycle.begin_step(job_id, step, f"{job_id}.{step}.{run}", 60.0)


@pytest.mark.parametrize("step", ["optimize", "archive"])
def test_a_queued_job_refuses_any_step_but_the_one_it_expects(job_id: str, step: str) -> None:
    # given a freshly queued job, when a message for a later step arrives first
    begun = begin(job_id, step)
    # then it is refused and the job is untouched: still queued, no new history
    assert begun is None
    job = store.get_job(job_id)
    assert (job.state, job.step, job.attempts) == (S.QUEUED, None, 0)
    assert [e.to_state for e in store.history(job_id)] == ["pending", "queued"]
    # while its first step still starts
    assert begin(job_id, "validate") is not None


def test_a_job_requeued_at_a_step_starts_again_only_at_that_step(job_id: str) -> None:
    # given a job that ran validate and optimize, and was requeued for a retry of optimize
    assert begin(job_id, "validate") is not None and begin(job_id, "optimize") is not None
    lifecycle.requeue(job_id, "optimize", "retry 1/3")
    # then neither validate nor archive may start it, optimize may
    assert begin(job_id, "validate") is None and begin(job_id, "archive") is None
    started = begin(job_id, "optimize")
    assert started is not None and started.job.step == "optimize"


def test_an_operator_retry_records_the_step_it_restarts_from(env, job_id: str) -> None:  # type: ignore[no-untyped-def]
    # given a job that failed at optimize, retried by an operator (chain not consumed here)
    orch = Orchestrator(env.settings)
    (orch.share.processing / job_id / "input").mkdir(parents=True)
    assert begin(job_id, "validate") is not None and begin(job_id, "optimize") is not None
    lifecycle.fail(orch.share, job_id, "optimize", RuntimeError("solver died"))
    orch.job_chain = lambda *a, **k: type("Quiet", (), {"apply_async": lambda self: None})()  # type: ignore[method-assign]
    orch.retry(job_id)
    # then the queued job expects optimize, and only optimize (of the retry's run) starts it
    queued = store.get_job(job_id)
    run = queued.task_id.rsplit(".", 1)[1]  # the run the retry published (issue 13, item 4)
    assert queued.step == "optimize"
    assert begin(job_id, "validate", run) is None
    assert begin(job_id, "optimize", run) is not None


def test_every_step_message_of_a_chain_names_its_step(env) -> None:  # type: ignore[no-untyped-def]
    # given the chain the orchestrator publishes for a job
    canvas = Orchestrator(env.settings).job_chain("a" * 32, input_name="prices.csv")
    # then each task's (signed) keyword arguments name the step that task is for
    assert [(t.task, t.kwargs.get(STEP_KWARG)) for t in canvas.tasks] == [
        ("pipeline.validate", "validate"), ("pipeline.optimize", "optimize"),
        ("pipeline.archive", "archive")]


def test_a_message_is_refused_by_a_task_it_is_not_for() -> None:
    assert misaddressed("archive", "archive") is None
    assert "for step 'validate', but was delivered to archive" in misaddressed("archive",
                                                                               "validate")
    assert "names no step" in misaddressed("archive", None)
