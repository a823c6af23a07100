"""Scheduled upkeep (beat): bring back jobs whose step was lost."""

from __future__ import annotations

import logging

from celery import shared_task

from orchestrator.reconciler.runs import reconcile_runs

log = logging.getLogger(__name__)


@shared_task(name="pipeline.recover_stuck", ignore_result=True)
def recover_stuck() -> dict[str, int]:
    """Jobs in processing past the step's hard limit with no progress: requeue or fail."""
    outcome = reconcile_runs()
    if any(outcome.values()):
        log.warning("stuck-job recovery: %s", outcome)
    return outcome
