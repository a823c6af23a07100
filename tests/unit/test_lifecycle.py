"""Unit tests of orchestrator.jobs.lifecycle on the real SQLite store and a real share folder:
each test is a short story (given, when, then). No broker is involved."""

from __future__ import annotations

import json
import time
import uuid
from datetime import timedelta

import pytest

from orchestrator.errors import DataError
from orchestrator.jobs import lifecycle
from orchestrator.paths import Share
from orchestrator.store import jobs as store
from orchestrator.store.states import JobState

S = JobState


@pytest.fixture
def share(env) -> Share:
    return Share(env.share).ensure()


@pytest.fixture
def job_id(share: Share) -> str:
    """A queued job whose folder, with its input, is in processing/."""
    new = store.NewJob(id=uuid.uuid4().hex, input_name="prices.csv", input_sha256="0" * 64,
                       input_size=10, params={"portfolio_size": 20})
    store.create_jobs([new])
    (share.processing / new.id / "input").mkdir(parents=True)
    (share.processing / new.id / "input" / "prices.csv").write_text("date,A\n")
    return new.id


LEASE = 60.0


def task(job_id: str, step: str, run: int = 0) -> str:
    """The task id the orchestrator gives a step's message (orchestrator.jobs.canvas.task_id)."""
    return f"{job_id}.{step}.{run}"


def begin(job_id: str, step: str, task_id: str | None = None,
          lease: float = LEASE) -> lifecycle.Begun | None:
    return lifecycle.begin_step(job_id, step, task_id or task(job_id, step), lease)


def run_to(job_id: str, last_step: str) -> None:
    for step in ("validate", "optimize", "archive"):
        assert begin(job_id, step) is not None
        if step == last_step:
            return


def terminal_events(job_id: str) -> list[store.JobEvent]:
    return [e for e in store.history(job_id) if e.to_state in ("completed", "failed",
                                                               "cancelled")]


# ----------------------------------------------------------------------------- begin_step


def test_first_step_of_a_queued_job_starts_processing(job_id: str) -> None:
    # given a queued job, when its first step begins
    begun = begin(job_id, "validate")
    # then the job is processing at validate, on its first attempt, not a redelivery
    assert begun is not None and not begun.redelivered
    assert (begun.job.state, begun.job.step, begun.job.attempts) == (S.PROCESSING, "validate", 1)
    # and the step's task holds it for the lease
    assert begun.job.task_id == task(job_id, "validate")
    assert begun.job.lease_until is not None and begun.job.lease_until > store.now()
    event = store.history(job_id)[-1]
    assert (event.from_state, event.to_state, event.step) == ("queued", "processing", "validate")


def test_next_step_begins_after_the_previous_one(job_id: str) -> None:
    # given a job that ran validate, when optimize begins
    begin(job_id, "validate")
    begun = begin(job_id, "optimize")
    # then it is at optimize, with the overall progress where optimize starts, same attempt
    assert begun is not None and not begun.redelivered
    assert (begun.job.step, begun.job.progress, begun.job.attempts) == ("optimize", 30.0, 1)


def test_a_redelivered_step_runs_again_as_a_new_attempt(job_id: str) -> None:
    # given a job at optimize whose worker died
    run_to(job_id, "optimize")
    # when the broker delivers the same message again
    begun = begin(job_id, "optimize")
    # then it is accepted as a redelivery, counted as a new attempt, and the history says why
    assert begun is not None and begun.redelivered
    assert (begun.job.step, begun.job.attempts) == ("optimize", 2)
    event = store.history(job_id)[-1]
    assert (event.from_state, event.step, event.attempt) == ("processing", "optimize", 2)
    assert event.detail is not None and event.detail.startswith("redelivered")


def test_a_step_of_a_cancelled_job_is_skipped(job_id: str) -> None:
    # given a job cancelled while queued
    store.transition(job_id, S.CANCELLED, detail="operator")
    events = store.history(job_id)
    # when its first step is delivered, then the step is told to skip, and nothing is written
    assert begin(job_id, "validate") is None
    assert store.get_job(job_id).state is S.CANCELLED
    assert store.history(job_id) == events


def test_a_step_delivered_out_of_order_is_skipped(job_id: str) -> None:
    # given a job at optimize, when a stale validate message arrives, then it is skipped
    run_to(job_id, "optimize")
    assert begin(job_id, "validate") is None
    assert store.get_job(job_id).step == "optimize"


def test_a_second_copy_of_a_step_whose_holder_is_alive_is_refused(job_id: str) -> None:
    # given a job at optimize, held by its task for a minute
    run_to(job_id, "optimize")
    events = store.history(job_id)
    # when another copy of the step (another task id) arrives, then it must not run
    assert begin(job_id, "optimize", task_id="duplicate") is None
    job = store.get_job(job_id)
    assert (job.task_id, job.attempts) == (task(job_id, "optimize"), 1)
    assert store.history(job_id) == events


def test_a_step_whose_lease_ran_out_may_be_taken_over(job_id: str) -> None:
    # given a job at optimize whose holder's lease has run out
    begin(job_id, "validate")
    begin(job_id, "optimize", lease=0.01)
    time.sleep(0.05)
    # when another copy of the step arrives, then it takes the step over as a new attempt
    begun = begin(job_id, "optimize", task_id="takeover")
    assert begun is not None and begun.redelivered
    assert (begun.job.task_id, begun.job.attempts) == ("takeover", 2)


def test_progress_of_a_step_fills_its_share_of_the_whole(job_id: str) -> None:
    run_to(job_id, "optimize")
    lifecycle.report_progress(job_id, "optimize", 0.5, LEASE)
    assert store.get_job(job_id).progress == 60.0
    lifecycle.report_progress(job_id, "optimize", 7, LEASE)  # clamped to the step's end
    assert store.get_job(job_id).progress == 90.0


def test_progress_renews_the_lease(job_id: str) -> None:
    # given a step holding a short lease
    begin(job_id, "validate", lease=1.0)
    before = store.get_job(job_id).lease_until
    # when it reports progress with its full lease, then the lease runs to a later time
    lifecycle.report_progress(job_id, "validate", 0.1, LEASE)
    after = store.get_job(job_id).lease_until
    assert before is not None and after is not None
    assert after - before > timedelta(seconds=50)


# ----------------------------------------------------------------------------- complete


def test_complete_moves_the_folder_and_finishes_the_job(share: Share, job_id: str) -> None:
    # given a job in its archive step
    run_to(job_id, "archive")
    # when it completes
    assert lifecycle.complete(share, job_id, {"holdings": 20}) is True
    # then its folder is in completed/ and the job is completed at 100 %, with its result
    assert not (share.processing / job_id).exists()
    assert (share.completed / job_id / "input" / "prices.csv").is_file()
    job = store.get_job(job_id)
    assert (job.state, job.progress, job.result) == (S.COMPLETED, 100.0, {"holdings": 20})
    assert job.finished_at is not None


def test_completing_twice_writes_one_terminal_event(share: Share, job_id: str) -> None:
    # given a completed job, when the archive step completes it again (a redelivery)
    run_to(job_id, "archive")
    lifecycle.complete(share, job_id, {"holdings": 20})
    again = lifecycle.complete(share, job_id, {"holdings": 99})
    # then the second call reports it and changes nothing
    assert again is False
    assert [e.to_state for e in terminal_events(job_id)] == ["completed"]
    assert store.get_job(job_id).result == {"holdings": 20}
    assert (share.completed / job_id).is_dir()


def test_complete_before_the_archive_step_is_refused(share: Share, job_id: str) -> None:
    run_to(job_id, "optimize")
    assert lifecycle.complete(share, job_id, {}) is False
    assert store.get_job(job_id).state is S.PROCESSING
    assert (share.processing / job_id).is_dir()


def test_complete_of_a_cancelled_job_leaves_its_folder_alone(share: Share, job_id: str) -> None:
    # given a job cancelled by an operator during archive (cancel moves it to failed/)
    run_to(job_id, "archive")
    store.transition(job_id, S.CANCELLED, detail="operator")
    share.move_job(job_id, "failed")
    # when the archive task, not yet stopped, completes it
    assert lifecycle.complete(share, job_id, {}) is False
    # then the cancelled job's folder stays in failed/
    assert share.locate(job_id) == share.failed / job_id


# ----------------------------------------------------------------------------- fail


def test_fail_writes_error_json_and_moves_the_folder(share: Share, job_id: str) -> None:
    # given a job in validate, when the step fails on bad data
    run_to(job_id, "validate")
    error = DataError("no Date column", file="prices.csv")
    assert lifecycle.fail(share, job_id, "validate", error) is True
    # then failed/<id>/error.json says where, what and why
    assert not (share.processing / job_id).exists()
    payload = json.loads((share.failed / job_id / "error.json").read_text())
    assert payload["step"] == "validate"
    assert payload["type"] == "DataError"
    assert payload["message"] == "file prices.csv: no Date column"
    assert payload["file"] == "prices.csv"
    # and the job is failed, with one failed event that carries the reason
    job = store.get_job(job_id)
    assert (job.state, job.error) == (S.FAILED, payload)
    (event,) = terminal_events(job_id)
    assert (event.to_state, event.step) == ("failed", "validate")
    assert event.detail == "DataError: file prices.csv: no Date column"


def test_fail_with_an_unexpected_error_records_its_type(share: Share, job_id: str) -> None:
    run_to(job_id, "optimize")
    lifecycle.fail(share, job_id, "optimize", ZeroDivisionError())
    payload = json.loads((share.failed / job_id / "error.json").read_text())
    assert (payload["type"], payload["message"]) == ("ZeroDivisionError",
                                                     "ZeroDivisionError()")


def test_failing_twice_writes_one_failed_event(share: Share, job_id: str) -> None:
    run_to(job_id, "validate")
    lifecycle.fail(share, job_id, "validate", DataError("bad"))
    assert lifecycle.fail(share, job_id, "validate", DataError("bad again")) is False
    assert [e.to_state for e in terminal_events(job_id)] == ["failed"]


def test_fail_of_a_completed_job_leaves_it_in_completed(share: Share, job_id: str) -> None:
    # given a completed job
    run_to(job_id, "archive")
    lifecycle.complete(share, job_id, {})
    # when a late error callback fails it (the worker died after complete(), before the ack)
    assert lifecycle.fail(share, job_id, "archive", RuntimeError("worker lost")) is False
    # then the completed job keeps its folder in completed/, with no error.json
    assert share.locate(job_id) == share.completed / job_id
    assert not (share.completed / job_id / "error.json").exists()


def test_requeue_puts_a_running_step_back_in_the_queue(job_id: str) -> None:
    run_to(job_id, "optimize")
    lifecycle.requeue(job_id, "optimize", "retry 1/3 in 2.0 s: broker hiccup")
    job = store.get_job(job_id)
    assert (job.state, job.step) == (S.QUEUED, "optimize")
    assert store.history(job_id)[-1].detail == "retry 1/3 in 2.0 s: broker hiccup"
    # and the retried step (Celery's retry keeps the task id) begins again from queued as a
    # new attempt; a message of another run would be refused (tests/fault/test_lost_messages)
    begun = begin(job_id, "optimize", task(job_id, "optimize", 0))
    assert begun is not None and begun.job.attempts == 2


def test_a_failed_step_raises_its_recorded_reason_whole(share, job_id):
    # Given a job failed in validate with a long message
    run_to(job_id, "validate")
    why = "not a date (expected YYYY-MM-DD): '01/02/2024' " + "x" * 200
    lifecycle.fail(share, job_id, "validate", DataError(why, file="prices.csv", row=3))
    # When the step builds the exception it raises to end its task as a failure
    failed = lifecycle.step_failed(job_id, "validate")
    # Then it names the job and step and carries the recorded reason, not cut short
    assert (failed.job_id, failed.step) == (job_id, "validate")
    assert failed.reason == f"DataError: file prices.csv, row 3: {why}"
    assert str(failed) == f"job {job_id} failed in validate: {failed.reason}"


def test_step_failed_survives_celery_json_results_and_pickle():
    import pickle

    from celery import Celery
    from celery.backends.base import Backend

    # Given a StepFailed as a worker raises it
    raised = lifecycle.StepFailed("j1", "optimize", "ParameterError: portfolio_size 90 > 60")
    # When it goes through Celery's JSON exception form and through pickle
    backend = Backend(app=Celery(set_as_current=False), serializer="json")
    stored = json.loads(json.dumps(backend.prepare_exception(raised)))
    for back in (backend.exception_to_python(stored), pickle.loads(pickle.dumps(raised))):
        # Then the reader gets the same exception back, with its fields
        assert type(back) is lifecycle.StepFailed
        assert (back.job_id, back.step, back.reason) == (raised.job_id, raised.step,
                                                        raised.reason)
        assert str(back) == str(raised)


def test_a_job_stopped_at_a_step_the_pipeline_no_longer_has_fails_saying_so(
        env, job_id, share, monkeypatch) -> None:
    # Given a job queued at a step of a four-step pipeline, whose message was lost
    from orchestrator.settings import reset_settings

    monkeypatch.setenv("PIPELINE_STEP_REGISTRY", "tests.integration.four_steps:FOUR_STEPS")
    reset_settings()
    run_to(job_id, "optimize")
    assert begin(job_id, "concentration") is not None
    lifecycle.requeue(job_id, "concentration", "retry 1/3")
    # When the pipeline is configured back to the built-in three steps and the reconciler
    # finds the job's message lost
    monkeypatch.delenv("PIPELINE_STEP_REGISTRY")
    reset_settings()
    queued, _run = lifecycle.requeue_lost_message(store.get_job(job_id))
    # Then the job failed, naming the step and the steps there are, with its folder in failed/
    assert queued is None
    job = store.get_job(job_id)
    assert job.state is S.FAILED
    assert "'concentration' is not in the pipeline" in job.error["message"]
    assert "validate, optimize, archive" in job.error["message"]
    assert (share.failed / job_id / "error.json").exists()
