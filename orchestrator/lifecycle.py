"""State changes of a running job, with the file moves that go with them.

The orchestrator owns these: tasks call them and never set states themselves. Files move first,
then the row changes, so a job marked completed or failed always has its folder in place.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from orchestrator.errors import IllegalTransition, PipelineError
from orchestrator.paths import Share, write_json
from orchestrator.store import jobs as store
from orchestrator.store.states import STEPS, JobState

log = logging.getLogger(__name__)
S = JobState

#: Overall progress (percent) when each step starts; a step's own progress fills its span.
STEP_START = {"validate": 0.0, "optimize": 30.0, "archive": 90.0}
STEP_SPAN = {"validate": 30.0, "optimize": 60.0, "archive": 10.0}


@dataclass(frozen=True)
class Begun:
    job: store.Job
    redelivered: bool


def begin_step(job_id: str, step: str) -> Begun | None:
    """Mark ``step`` started. None when the job is over (cancelled, failed): skip the step.

    Accepts, in order: a queued job (first step of a run, or of a retry); the previous step
    just finished; the same step again (a redelivery after a crash), counted as a new attempt.
    """
    previous = STEPS[STEPS.index(step) - 1] if STEPS.index(step) else None
    ways = [({S.QUEUED}, None, True, None)]
    if previous:
        ways.append(({S.PROCESSING}, previous, False, None))
    ways.append(({S.PROCESSING}, step, True, "redelivered: the step runs again"))
    for sources, from_step, new_attempt, detail in ways:
        try:
            job = store.transition(job_id, S.PROCESSING, sources=sources, step=step,
                                   from_step=from_step, new_attempt=new_attempt, detail=detail,
                                   progress=STEP_START[step])
        except IllegalTransition:
            continue
        return Begun(job, redelivered=detail is not None)
    log.info("job %s: step %s skipped, job is %s", job_id, step, store.get_job(job_id).state)
    return None


def report_progress(job_id: str, step: str, fraction: float) -> None:
    store.set_progress(job_id, STEP_START[step] + STEP_SPAN[step] * min(max(fraction, 0), 1))


def complete(share: Share, job_id: str, result: dict[str, object]) -> bool:
    """Move the folder to completed/ and finish the job; False if it had already ended."""
    share.move_job(job_id, "completed")
    try:
        store.transition(job_id, S.COMPLETED, sources={S.PROCESSING}, step="archive",
                         from_step="archive", progress=100.0, result=result)
    except IllegalTransition as refused:
        log.warning("job %s not completed: %s", job_id, refused)
        return False
    return True


def fail(share: Share, job_id: str, step: str | None, error: PipelineError | BaseException,
         ) -> bool:
    """Write error.json, move the folder to failed/, mark the job failed (once)."""
    payload = _error_payload(step, error)
    folder = share.locate(job_id)
    if folder is not None:
        write_json(folder / "error.json", payload)
        share.move_job(job_id, "failed")
    try:
        store.transition(job_id, S.FAILED, sources={S.PENDING, S.QUEUED, S.PROCESSING},
                         step=step, detail=f"{payload['type']}: {payload['message']}",
                         error=payload)
    except IllegalTransition as refused:
        log.warning("job %s: failure not recorded: %s", job_id, refused)
        return False
    return True


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
