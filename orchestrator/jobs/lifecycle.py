"""Every state change of a job, with the folder move that goes with it: the one place.

    created ─► queued ─► processing(step 1) ─► … ─► processing(last) ─► completed
                 ▲  requeue (retry, lost worker) ◄─┘            └─► failed / cancelled
                 └──────────────── retry ◄─────────────────────────────┘
    created pending (refused input, duplicate) ─► set aside: failed / cancelled
    completed / failed / cancelled ─► archived (rotation) ─► completed (restored)

Tasks, the intake, the operator's commands (CLI and HTTP), the reconciler and rotation call
these functions and never set a state themselves (issue 15, item 1: "move the files, then
change the row" was written in eight modules). Files move first, then the row changes by
compare-and-set, so a job marked completed or failed always has its folder in place; the one
exception is cancel, which must stop a running step first (see :func:`cancel`). Publishing the
canvas that runs a job is the Orchestrator's (orchestrator/jobs/canvas.py), never done here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection

from orchestrator.errors import (
    IllegalTransition,
    ParameterError,
    PipelineError,
    TransientError,
)
from orchestrator.monitoring import notify
from orchestrator.paths import Share, write_error
from orchestrator.settings import get_settings
from orchestrator.steps.registry import StepRegistry
from orchestrator.store import guards
from orchestrator.store import intake as records
from orchestrator.store import jobs as store
from orchestrator.store.states import JobState
from orchestrator.store.tables import jobs

log = logging.getLogger(__name__)
S = JobState


def _steps() -> StepRegistry:
    return get_settings().steps


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
    steps = _steps()
    lease = {"task_id": task_id, "lease_until": at + timedelta(seconds=lease_seconds),
             "progress": steps.progress_at(step, 0.0)}
    run = _run_of(job_id, step, task_id)
    previous = steps.previous(step)
    # Each way's extra condition is a guard: a fixed shape with bound values, so its statement
    # is built once per process (a one-off ``where`` was rebuilt on every step start).
    in_run = {} if run is None else {"run": f"{job_id}.%.{run}"}
    after_previous: list[Way] = [] if previous is None else [
        ({S.PROCESSING}, previous, False, None, None, {}) if run is None else
        ({S.PROCESSING}, previous, False, None, guards.is_task,
         {"task": f"{job_id}.{previous}.{run}"})]
    from_queue: Way = ({S.QUEUED}, None, True, None,
                       guards.queued_for if run is None else guards.queued_for_run,
                       {"step": step, "first": steps.first, **in_run})
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
    percent = _steps().progress_at(step, fraction)
    store.set_progress(job_id, percent, store.now() + timedelta(seconds=lease_seconds))


def complete(share: Share, job_id: str, result: dict[str, object]) -> bool:
    """After the last step: move the folder to completed/ and finish the job; False if it had
    already ended."""
    last = _steps().last
    if not _is(job_id, {S.PROCESSING}, step=last):
        log.warning("job %s not completed: it is no longer at its %s step", job_id, last)
        return False
    share.move_job(job_id, "completed")
    try:
        store.transition(job_id, S.COMPLETED, sources={S.PROCESSING}, step=last,
                         from_step=last, progress=100.0, result=result)
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


def task_id(job_id: str, step: str, run: int) -> str:
    """A step's task id, ``<job>.<step>.<run>``: known in advance, so cancel can revoke a job's
    tasks without a lookup, and a message of another run is recognized (:func:`_run_of`)."""
    return f"{job_id}.{step}.{run}"


# -- created, and set aside: inputs that never run --------------------------------------------


def create(new: list[store.NewJob], *, batch_name: str | None = None,
           dedupe_window: float | None = None, refused: dict[str, dict[str, Any]] | None = None,
           forced: set[str] | None = None) -> dict[str, records.Original]:
    """Claimed inputs become jobs, in one transaction: ``queued`` (to be published), or
    ``pending`` with their reason (refused, or a duplicate: returned) until :func:`set_aside`.
    The claim before and the publish after are the intake's (orchestrator/intake/submission.py)."""
    return records.record(new, batch_name=batch_name, dedupe_window=dedupe_window,
                          refused=refused, forced=forced)



def set_aside(share: Share, reasons: dict[str, dict[str, Any]]) -> None:
    """Refused inputs and duplicates, recorded pending with their reason: each folder goes where
    its end says, with the reason beside its input (failed/<id>/error.json, or
    duplicates/<id>/duplicate.json); then their rows end (failed, cancelled) in one
    transaction."""
    for job_id, reason in reasons.items():
        _place(share, job_id, reason)
    records.finish(reasons)


def _place(share: Share, job_id: str, reason: dict[str, Any] | None) -> None:
    duplicate = records.ending_of(reason) is S.CANCELLED
    folder = share.locate(job_id)
    if folder is None:
        return
    note = "duplicate.json" if duplicate else "error.json"
    if reason and not (folder / note).exists():
        write_error(folder, note, reason)
    share.move_job(job_id, "duplicates" if duplicate else "failed")


def put_away(share: Share, job_id: str, error: dict[str, Any] | None) -> None:
    """A job that ended (failed, cancelled) while its folder stayed in processing/ (a cancel
    cut short): its folder to where it belongs, with its reason."""
    _place(share, job_id, error)


# -- operators: retry and cancel --------------------------------------------------------------


def retry(share: Share, job_id: str, from_step: str | None = None) -> store.Job:
    """A failed or cancelled job queued again from ``from_step`` (default: the step that
    failed), as a new run; the caller publishes its chain (Orchestrator.retry)."""
    job = store.get_job(job_id)
    if from_step is not None and from_step not in _steps():
        raise ParameterError(f"from_step {from_step!r}: not a step; the steps are "
                             f"{', '.join(_steps().names)}")
    step = from_step or _restart_step(job)
    folder = share.move_job(job_id, "processing")
    (folder / "error.json").unlink(missing_ok=True)
    return store.transition(job_id, S.QUEUED, sources={S.FAILED, S.CANCELLED}, step=step,
                            detail=f"retry from {step}", error=None, finished_at=None,
                            task_id=task_id(job_id, step, job.attempts))  # its run


def _restart_step(job: store.Job) -> str:
    if job.state not in (S.FAILED, S.CANCELLED):
        raise IllegalTransition(f"job {job.id} is {job.state}; only failed or cancelled jobs "
                                "can be retried")
    steps = _steps()
    step = (job.error or {}).get("step") or job.step or steps.first
    return step if step in steps else steps.first


def cancel(share: Share, job_id: str) -> store.Job:
    """An operator stops a job. The row changes first, unlike the other transitions: a step
    that is running must learn at once that its job is over (its next transition is refused),
    and its folder is in use until then. The folder then goes to failed/; if that move is cut
    short, the reconciler puts it away (:func:`put_away`)."""
    job = store.transition(job_id, S.CANCELLED, sources={S.PENDING, S.QUEUED, S.PROCESSING},
                           detail="cancelled by an operator")
    if share.locate(job_id) is not None:
        share.move_job(job_id, "failed")
    return job


def task_ids(job: store.Job) -> list[str]:
    """Every task id the job's runs may have used (what cancel revokes)."""
    return [task_id(job.id, step, run) for step in _steps().names
            for run in range(job.attempts + 1)]


# -- the reconciler: lost steps and lost messages ---------------------------------------------


def requeue_abandoned(job: store.Job, max_retries: int) -> tuple[store.Job | None, int]:
    """A step whose lease expired (its worker is gone): queued again as a new run, so that a
    late copy of the lost one is refused; failed past ``max_retries``. Returns the queued job
    (None: failed) and the run to publish."""
    step = job.step or _steps().first
    if step not in _steps():
        return _fail_unknown_step(job, step), 0
    if job.attempts > max_retries:
        fail(Share(get_settings().share_dir), job.id, step, TransientError(
            f"step {step} lost its worker {job.attempts} times; giving up"))
        return None, 0
    run = job.attempts + 1
    queued = store.transition(job.id, S.QUEUED, sources={S.PROCESSING}, step=step,
                              from_step=step, where=jobs.c.lease_until < store.now(),
                              task_id=task_id(job.id, step, run),
                              detail=f"recovered: the lease of step {step} expired (worker lost)")
    return queued, run


def _fail_unknown_step(job: store.Job, step: str) -> None:
    """A job stopped at a step the configured pipeline no longer has (PIPELINE_STEP_REGISTRY
    changed under it): it cannot go on; failed with that reason, to be retried by hand."""
    fail(Share(get_settings().share_dir), job.id, step, ParameterError(
        f"step {step!r} is not in the pipeline any more (its steps: "
        f"{', '.join(_steps().names)}); retry the job from one of them"))


#: How a republished job's event starts (the reconciler republishes once where it cannot see
#: the broker's messages).
REPUBLISHED = "recovered: the message for step"


def requeue_lost_message(job: store.Job) -> tuple[store.Job | None, int]:
    """A queued job whose message is gone: a new run of its chain (the caller publishes it);
    compare-and-set on ``updated_at``, so of two reconcilers one does it. None: failed, its
    step is no longer in the pipeline."""
    step = job.step or _steps().first
    if step not in _steps():
        return _fail_unknown_step(job, step), 0
    run = job.attempts + 1
    queued = store.transition(job.id, S.QUEUED, sources={S.QUEUED}, step=job.step,
                              where=jobs.c.updated_at == job.updated_at,
                              task_id=task_id(job.id, step, run),
                              detail=f"{REPUBLISHED} {step} was lost; published again as run "
                                     f"{run}")
    return queued, run


def requeue_unpublished(job: Any) -> store.Job:
    """A job recorded but maybe never published (its claimer stopped around the publish):
    marked for publishing again; compare-and-set, so of two watchers one publishes."""
    return store.transition(job.id, S.QUEUED, sources={S.QUEUED}, where=(
        jobs.c.updated_at == job.updated_at) & jobs.c.step.is_(None),
        detail="repaired: published again, its watcher stopped around the publish")


# -- rotation: archived and restored ----------------------------------------------------------


def archived(conn: Connection, job_id: str, state: JobState, detail: str,
             **columns: Any) -> None:
    """A finished job whose folder went into a rotation archive (in rotation's transaction)."""
    store.transition(job_id, S.ARCHIVED, sources={state}, detail=detail, conn=conn, **columns)


def restored(job_id: str, detail: str) -> None:
    """An archived job whose folder was extracted back into completed/."""
    store.transition(job_id, S.COMPLETED, sources={S.ARCHIVED}, detail=detail)
