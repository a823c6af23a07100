"""Notifications of ended jobs (maintenance queue): deliver, retry as the task policy decides,
record."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task

from orchestrator import policy
from orchestrator.monitoring import notify as notifications
from orchestrator.runtime.logs import job_context
from orchestrator.settings import get_settings
from orchestrator.store import jobs as store

log = logging.getLogger(__name__)


@shared_task(name="pipeline.notify", bind=True, ignore_result=True)
def notify(self: Any, job_id: str, channel: str) -> str:
    """One channel for one ended job. Its outcome becomes a remark in the job's history;
    the job itself is never changed, whatever happens here."""
    settings = get_settings()
    with job_context(job_id):
        body = notifications.payload(store.get_job(job_id), settings)
        attempt = self.request.retries + 1
        try:
            outcome = notifications.deliver(channel, body, settings)
        except notifications.DeliveryError as error:
            decision = policy.decide(error, self.request.retries, self.name, settings)
            if decision.action is policy.Action.RETRY:
                log.warning("%s notification, attempt %d failed (%s); next in %.1f s",
                            channel, attempt, error, decision.delay)
                raise self.retry(countdown=decision.delay, max_retries=decision.limit) from None
            log.error("%s notification failed after %d attempt(s): %s", channel, attempt, error)
            store.note(job_id, f"{channel} notification failed after {attempt} attempt(s): "
                               f"{error}")
            return "failed"
        log.info("%s notification delivered: %s", channel, outcome)
        store.note(job_id, f"notified {channel}: {outcome}")
        return outcome
