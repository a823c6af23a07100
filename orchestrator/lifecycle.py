"""State changes of a running job, with the file moves that go with them.

The orchestrator owns these: tasks call them and never set states themselves. Files move first,
then the row changes, so a job marked completed or failed always has its folder in place.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from orchestrator.errors import IllegalTransition, PipelineError
from orchestrator.monitoring import notify
from orchestrator.paths import Share, write_error
from orchestrator.store import guards
from orchestrator.store import jobs as store
from orchestrator.store.states import STEPS, JobState

log = logging.getLogger(__name__)
S = JobState

#: Overall progress (percent) when each step starts; a step's own progress fills its span.
STEP_START = {"validate": 0.0, "optimize": 30.0, "archive": 90.0}
STEP_SPAN = {"validate": 30.0, "optimize": 60.0, "archive": 10.0}


class StepFailed(Exception):
    """A step failed its job: raised after :func:`fail` recorded it, so the step's task ends
    as FAILURE (Flower, the result backend) and the chain stops there.

    Its arguments are plain strings and ``__init__`` takes them back in order, so it survives
    pickle and Celery's JSON exception form (``exc_type``, ``exc_module``, ``exc_message``)
    whole: ``StepFailed(*exc_message)``.
    """

    def __init__(self, job_id: str, step: str, reason: str) -> None:
        super().__init__(job_id, step, reason)
        self.job_id, self.step, self.reason = job_id, step, reason

    def __str__(self) -> str:
        return f"job {self.job_id} failed in {self.step}: {self.reason}"


@dataclass(frozen=True)
class Begun:
    job: store.Job
    redelivered: bool


def begin_step(job_id: str, step: str, task_id: str, lease_seconds: float) -> Begun | None:
    """Mark ``step`` started by ``task_id``; None when this delivery must not run it.

    Accepted, in order: a queued job at the step its record expects (validate when none is
    recorded: a submission; else the step a retry or recovery queued it for); the previous
    step just finished; the same step again, only if it is this very message coming back (the
    broker redelivered it: its worker died) or the step's lease ran out (abandoned). A second
    copy of a step whose holder is alive is refused, so no two copies of a step run at once.
    """
    at = store.now()
    lease = {"task_id": task_id, "lease_until": at + timedelta(seconds=lease_seconds),
             "progress": STEP_START[step]}
    index = STEPS.index(step)
    run = _run_of(job_id, step, task_id)
    previous = STEPS[index - 1] if index else None
    # Each way's extra condition is a guard: a fixed shape with bound values, so its statement
    # is built once per process (a one-off ``where`` was rebuilt on every step start).
    in_run = {} if run is None else {"run": f"{job_id}.%.{run}"}
    after_previous: list[Way] = [] if not index else [
        ({S.PROCESSING}, previous, False, None, None, {}) if run is None else
        ({S.PROCESSING}, previous, False, None, guards.is_task,
         {"task": f"{job_id}.{previous}.{run}"})]
    from_queue: Way = ({S.QUEUED}, None, True, None,
                       guards.queued_for if run is None else guards.queued_for_run,
                       {"step": step, **in_run})
    redelivery: Way = ({S.PROCESSING}, step, True, "redelivered: the step runs again",
                       guards.redelivered if run is None else guards.redelivered_in_run,
                       {"task": task_id, **in_run})
    # The likely way first: each miss costs a round trip.
    for sources, from_step, new_attempt, detail, guard, values in [
            *after_previous, from_queue, redelivery]:
        try:
            job = store.transition(job_id, S.PROCESSING, sources=sources, step=step,
                                   from_step=from_step, new_attempt=new_attempt, detail=detail,
                                   guard=guard, guard_values=values, **lease)
        except IllegalTransition:
            continue
        return Begun(job, redelivered=detail is not None)
    log.info("job %s: step %s not run by %s; job is %s", job_id, step, task_id,
             store.get_job(job_id).state)
    return None


#: One way a step may start: sources, from_step, new_attempt, detail, guard, guard values.
Way = tuple[set[JobState], str | None, bool, str | None, Any, dict[str, str]]


def _run_of(job_id: str, step: str, task_id: str) -> str | None:
    """The run a step's message belongs to (task id ``<job>.<step>.<run>``), else None.

    A job is (re)published as a chain whose task ids share a run number, and the job row holds
    the task id of its current run (the step running, or the first step of a republished
    chain). A message of another run is a late or duplicate copy (e.g. an original that turns
    up after recovery republished it): refused, so one run moves the job on, not two.
    """
    prefix = f"{job_id}.{step}."
    run = task_id[len(prefix):] if task_id.startswith(prefix) else ""
    return run if run.isdigit() else None


def report_progress(job_id: str, step: str, fraction: float, lease_seconds: float) -> None:
    """Progress of the running step, which also renews its lease."""
    percent = STEP_START[step] + STEP_SPAN[step] * min(max(fraction, 0), 1)
    store.set_progress(job_id, percent, store.now() + timedelta(seconds=lease_seconds))


def complete(share: Share, job_id: str, result: dict[str, object]) -> bool:
    """Move the folder to completed/ and finish the job; False if it had already ended."""
    if not _is(job_id, {S.PROCESSING}, step="archive"):
        log.warning("job %s not completed: it is no longer at its archive step", job_id)
        return False
    share.move_job(job_id, "completed")
    try:
        store.transition(job_id, S.COMPLETED, sources={S.PROCESSING}, step="archive",
                         from_step="archive", progress=100.0, result=result)
    except IllegalTransition as refused:
        log.warning("job %s not completed: %s", job_id, refused)
        return False
    notify.job_ended(job_id)
    return True


def fail(share: Share, job_id: str, step: str | None, error: PipelineError | BaseException,
         ) -> bool:
    """Write error.json, move the folder to failed/, mark the job failed (once)."""
    active = {S.PENDING, S.QUEUED, S.PROCESSING}
    if not _is(job_id, active):
        log.warning("job %s: failure in %s not recorded, the job has ended", job_id, step)
        return False
    payload = _error_payload(step, error)
    folder = share.locate(job_id)
    if folder is not None:
        try:
            write_error(folder, "error.json", payload)
        except OSError as unwritten:  # e.g. the disk is full: the row still records why
            log.error("job %s: error.json not written: %s", job_id, unwritten)
        share.move_job(job_id, "failed")
    try:
        store.transition(job_id, S.FAILED, sources=active, step=step,
                         detail=f"{payload['type']}: {payload['message']}", error=payload)
    except IllegalTransition as refused:
        log.warning("job %s: failure not recorded: %s", job_id, refused)
        return False
    notify.job_ended(job_id)
    return True


def step_failed(job_id: str, step: str) -> StepFailed:
    """The exception a step raises for a job :func:`fail` has recorded, with its reason."""
    error = store.get_job(job_id).error or {}
    kind, message = error.get("type"), error.get("message") or "no reason recorded"
    return StepFailed(job_id, step, f"{kind}: {message}" if kind else str(message))


def _is(job_id: str, states: set[JobState], step: str | None = None) -> bool:
    """Files move only for a job in the expected state (the CAS after the move re-checks)."""
    state, at_step = store.state_of(job_id)
    return state in states and (step is None or at_step == step)


def _error_payload(step: str | None, error: BaseException) -> dict[str, object]:
    if isinstance(error, PipelineError):
        payload: dict[str, object] = dict(error.to_dict())
    else:
        payload = {"type": type(error).__name__, "message": str(error) or repr(error)}
    payload["step"] = step
    return payload


def requeue(job_id: str, step: str, reason: str) -> None:
    """A step will run again later (a retry): back to queued, with the reason."""
    store.transition(job_id, S.QUEUED, sources={S.PROCESSING}, step=step, from_step=step,
                     detail=reason)
