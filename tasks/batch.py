"""The batch chord's callback: a summary of every job in the batch, from the status store."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task

from orchestrator.jobs.batches import summarize_batch

log = logging.getLogger(__name__)


@shared_task(name="pipeline.summarize", ignore_result=True)
def summarize(messages: list[dict[str, Any]], batch_id: str) -> dict[str, Any]:
    """Runs when every job of the batch has ended; the store, not the chord, is the truth."""
    return summarize_batch(batch_id)


@shared_task(name="pipeline.summarize_after_error")
def summarize_after_error(request: Any, exc: BaseException, traceback: Any) -> None:
    """A member's step failed (it raises StepFailed) or died hard, so Celery ends the chord
    with a ChordError instead of calling the summary: summarize from the store all the same."""
    batch_id = request.kwargs.get("batch_id") if request.kwargs else None
    log.warning("batch %s: chord ended by %r; summarizing from the status store", batch_id, exc)
    if batch_id:
        summarize_batch(batch_id)
