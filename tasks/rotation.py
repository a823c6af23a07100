"""Storage rotation on the ``maintenance`` queue: the beat task plans and dispatches a run; each
batch task rotates one batch (orchestrator/rotation/batch.py) and shows its progress as task
state ``PROGRESS`` with meta (Flower, ``celery -A orchestrator result <id>``).

A batch's time and rate limits, and what its errors mean, are the task policy's
(orchestrator/policy/): Celery applies the limits from ``task_annotations`` when the task binds
to the app, so they follow the settings the app was built from, not those of the import."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

from celery import Task, shared_task
from sqlalchemy.exc import DBAPIError

from orchestrator import policy
from orchestrator.rotation import journal, runner
from orchestrator.rotation.batch import run_batch
from orchestrator.rotation.failures import kind_of
from orchestrator.rotation.packing import discard
from orchestrator.rotation.plan import BatchSpec, archive_relpath, decode_cutoffs
from orchestrator.settings import get_settings
from orchestrator.store.jobs import now

log = logging.getLogger(__name__)
PROGRESS_EVERY = 0.5  # seconds between task-state updates


@shared_task(name="pipeline.rotate", ignore_result=True)
def rotate(trigger: str = "beat", older_than_seconds: float | None = None,
           limit: int | None = None) -> dict[str, Any]:
    """Plan a rotation run and dispatch its batches (beat, nightly by default)."""
    window = f"{trigger}:{now():%Y-%m-%dT%H:%M}" if trigger == "beat" else None
    older = timedelta(seconds=older_than_seconds) if older_than_seconds is not None else None
    try:
        run = runner.start_run(get_settings(), trigger=trigger, older_than=older, limit=limit,
                               window_key=window)
    except journal.WindowTaken:
        log.info("rotation: window %s already started by another beat; skipped", window)
        return {"skipped": window}
    return {"run_id": run.id, "batches": run.planned_batches, "jobs": run.planned_jobs}


class _Progress:
    """Task-state updates, at most every PROGRESS_EVERY seconds (each is a backend write)."""

    def __init__(self, task: Task) -> None:
        self.task, self.last = task, 0.0

    def __call__(self, meta: dict[str, Any]) -> None:
        moment = time.monotonic()
        if moment - self.last >= PROGRESS_EVERY and self.task.request.id:
            self.last = moment
            self.task.update_state(state="PROGRESS", meta=meta)


@shared_task(bind=True, name="pipeline.rotate_batch", ignore_result=False, acks_late=True)
def rotate_batch(self: Task, run_id: str, cutoffs: dict[str, str], spec: dict[str, Any],
                 rate: float | None = None) -> dict[str, Any]:
    """Rotate one batch; a database outage retries it (it is idempotent), then counts it failed."""
    batch = BatchSpec.from_dict(spec)
    try:
        return run_batch(run_id, decode_cutoffs(cutoffs), batch, get_settings(), rate=rate,
                         progress=_Progress(self)).to_dict()
    except Exception as error:  # recorded so the run can finish, then re-raised (traceback)
        decision = policy.decide(error, self.request.retries, self.name, get_settings())
        if decision.action in (policy.Action.RETRY, policy.Action.REDELIVER):
            raise self.retry(exc=error, countdown=decision.delay,
                             max_retries=decision.limit) from None
        _record(run_id, batch, decision.error)
        raise


def _record(run_id: str, batch: BatchSpec, error: BaseException) -> None:
    """Count the failure; an archive whose rows never changed is deleted (an orphan)."""
    try:
        before = journal.batch_failed(run_id, batch.seq, kind_of(error),
                                      f"{type(error).__name__}: {error}")
    except DBAPIError:
        log.error("rotation run %s batch %d: could not record its failure (database)", run_id,
                  batch.seq)
        return
    if before == "writing":
        discard(get_settings().share_dir / archive_relpath(batch.day, run_id, batch.seq))
