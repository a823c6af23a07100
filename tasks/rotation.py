"""Storage rotation on the ``maintenance`` queue: the beat task plans and dispatches a run; each
batch task rotates one batch (orchestrator/rotation/batch.py) and shows its progress as task
state ``PROGRESS`` with meta (Flower, ``celery -A orchestrator result <id>``)."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.exc import DBAPIError

from orchestrator.celery import app
from orchestrator.rotation import journal, runner
from orchestrator.rotation.batch import run_batch
from orchestrator.rotation.failures import kind_of
from orchestrator.rotation.packing import discard
from orchestrator.rotation.plan import BatchSpec, archive_relpath, decode_cutoffs
from orchestrator.settings import get_settings
from orchestrator.store.jobs import now

log = logging.getLogger(__name__)
_settings = get_settings()
PROGRESS_EVERY = 0.5  # seconds between task-state updates


@app.task(name="pipeline.rotate", ignore_result=True)
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


_HARD = _settings.rotation_time_limit


@app.task(bind=True, name="pipeline.rotate_batch", ignore_result=False, acks_late=True,
          time_limit=_HARD, soft_time_limit=_HARD - min(60, _HARD // 10),
          rate_limit=_settings.rotation_task_rate_limit, max_retries=_settings.max_retries)
def rotate_batch(self: Task, run_id: str, cutoffs: dict[str, str], spec: dict[str, Any],
                 rate: float | None = None) -> dict[str, Any]:
    """Rotate one batch; a database outage retries it (it is idempotent), then counts it failed."""
    batch = BatchSpec.from_dict(spec)
    try:
        return run_batch(run_id, decode_cutoffs(cutoffs), batch, get_settings(), rate=rate,
                         progress=_Progress(self)).to_dict()
    except DBAPIError as error:
        if self.request.retries < self.max_retries:
            raise self.retry(exc=error, countdown=min(60, 2 ** self.request.retries)) from None
        _record(run_id, batch, error)
        raise
    except SoftTimeLimitExceeded as error:
        _record(run_id, batch, TimeoutError(f"batch took longer than its soft limit "
                                            f"({self.soft_time_limit} s)"))
        raise error
    except Exception as error:  # recorded so the run can finish, then re-raised (traceback)
        _record(run_id, batch, error)
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
