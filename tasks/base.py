"""The base class of every step task: the one place for error handling and retries.

A step's outcome is classified here, once: data errors fail the job at once (never retried);
transient errors retry with exponential backoff and jitter up to ``max_retries``; the database
or broker being away retries the whole delivery (nothing can be recorded meanwhile) up to
``outage_retries``; anything else fails the job with its type and message. A failed job's
message still flows down the chain (outcome "failed") so that a batch chord always reaches
its summary.
"""

from __future__ import annotations

import logging
import random
from datetime import timedelta
from time import perf_counter
from typing import Any

from celery import Task
from celery.exceptions import Retry, SoftTimeLimitExceeded
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import DBAPIError

from orchestrator import lifecycle
from orchestrator.errors import DataError, TransientError
from orchestrator.jobspec import JobParams
from orchestrator.messages import JobMessage
from orchestrator.paths import Share
from orchestrator.settings import get_settings
from orchestrator.steps.run import StepContext
from orchestrator.store import jobs as store

log = logging.getLogger(__name__)

TRANSIENT = (TransientError, ConnectionError, TimeoutError)
OUTAGE = (DBAPIError, BrokerError)


def backoff(retries: int) -> float:
    """Exponential, capped at a minute, with ±50 % jitter so retries do not arrive together."""
    return min(60.0, 2.0**retries) * random.uniform(0.5, 1.5)


class StepTask(Task):
    """Subclasses set ``step`` and implement ``run(ctx, message) -> metrics``."""

    step: str = ""
    typing = False

    def __call__(self, payload: dict[str, Any]) -> dict[str, Any]:
        message = JobMessage.decode(payload)
        if message.outcome != "ok":
            return message.encode()
        try:
            return self._deliver(message).encode()
        except OUTAGE as error:
            delay = backoff(self.request.retries)
            log.warning("job %s: %s unavailable, delivery retried in %.1f s: %s",
                        message.job_id, type(error).__name__, delay, str(error).splitlines()[0])
            raise self.retry(exc=error, countdown=delay,
                             max_retries=get_settings().outage_retries) from None

    def _deliver(self, message: JobMessage) -> JobMessage:
        settings = get_settings()
        lease = settings.lease_seconds(self.step)
        begun = lifecycle.begin_step(message.job_id, self.step, self.request.id or "", lease)
        if begun is None:
            return message.ended("cancelled")
        started = perf_counter()
        outcome = self._guarded(self._context(begun.job, lease), message)
        return outcome.with_metrics(**{f"{self.step}_seconds": round(perf_counter() - started, 4)})

    def _context(self, job: store.Job, lease: float) -> StepContext:
        settings = get_settings()
        share = Share(settings.share_dir)
        return StepContext(
            job_id=job.id, folder=share.locate(job.id) or share.job_dir(job.id),
            params=JobParams(**job.params), settings=settings,
            progress=lambda f: lifecycle.report_progress(job.id, self.step, f, lease),
        )

    def _guarded(self, ctx: StepContext, message: JobMessage) -> JobMessage:
        try:
            return message.with_metrics(**self.run(ctx, message))
        except (Retry, *OUTAGE):
            raise
        except DataError as error:
            return self._failed(ctx, message, error)
        except SoftTimeLimitExceeded:
            soft, _hard = ctx.settings.time_limits(self.step)
            return self._failed(ctx, message, TimeoutError(f"took longer than {soft} s"))
        except TRANSIENT as error:
            return self._retry_or_fail(ctx, message, error)
        except Exception as error:
            log.exception("job %s: step %s crashed", ctx.job_id, self.step)
            return self._failed(ctx, message, error)

    def _retry_or_fail(self, ctx: StepContext, message: JobMessage, error: BaseException,
                       ) -> JobMessage:
        retries, limit = self.request.retries, ctx.settings.max_retries
        if retries >= limit:
            return self._failed(ctx, message, error)
        delay = backoff(retries)
        when = (store.now() + timedelta(seconds=delay)).isoformat(timespec="seconds")
        lifecycle.requeue(ctx.job_id, self.step,
                          f"retry {retries + 1}/{limit} at {when} ({delay:.1f} s): {error}")
        raise self.retry(exc=error, countdown=delay, max_retries=limit)

    def _failed(self, ctx: StepContext, message: JobMessage, error: BaseException) -> JobMessage:
        log.info("job %s failed in %s: %s", ctx.job_id, self.step, error)
        lifecycle.fail(ctx.share, ctx.job_id, self.step, error)
        return message.ended("failed")

    def run(self, ctx: StepContext, message: JobMessage) -> dict[str, Any]:  # type: ignore[override]
        raise NotImplementedError
