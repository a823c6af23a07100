"""The base class of every step task: the one place for error handling and retries.

A step's outcome is classified here, once: data errors fail the job at once (never retried);
transient errors retry with exponential backoff and jitter up to ``max_retries``; the database
or broker being away retries the whole delivery (nothing can be recorded meanwhile) up to
``outage_retries``; anything else fails the job with its type and message. The step then
returns outcome "failed", which tasks/steps.py turns into a raised StepFailed: the task is a
FAILURE where operators look (Flower, the result backend) and the later steps never run; a
batch's chord still reaches its summary through the summary's error callback (tasks/batch.py).
"""

from __future__ import annotations

import errno
import logging
import random
from datetime import timedelta
from time import perf_counter
from typing import Any

from celery import Task
from celery.exceptions import Reject, Retry, SoftTimeLimitExceeded
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import DBAPIError

from orchestrator import lifecycle
from orchestrator.errors import DataError, TransientError
from orchestrator.faults import fault_point
from orchestrator.jobspec import JobParams
from orchestrator.logs import job_context
from orchestrator.messages import JobMessage, misaddressed
from orchestrator.monitoring import progress as progress_meta
from orchestrator.paths import Share
from orchestrator.settings import get_settings
from orchestrator.steps.run import StepContext
from orchestrator.store import jobs as store

log = logging.getLogger(__name__)

TRANSIENT = (TransientError, ConnectionError, TimeoutError)
OUTAGE = (DBAPIError, BrokerError)
#: A full or failing disk passes (space is freed, the mount returns): retried, not failed.
PASSING_OS_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.ESTALE})


#: The longest pause between two retries (seconds, before jitter).
BACKOFF_CAP = 60.0


def backoff(retries: int) -> float:
    """Exponential, capped at a minute, with ±50 % jitter so retries do not arrive together."""
    return min(BACKOFF_CAP, 2.0**retries) * random.uniform(0.5, 1.5)


def is_disk_error(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in PASSING_OS_ERRORS


def is_transient(error: BaseException) -> bool:
    return isinstance(error, TRANSIENT) or is_disk_error(error)


def retries_within(seconds: float) -> int:
    """How many backed-off retries it takes to wait ``seconds`` (the pauses before jitter).

    A full share frees up in minutes (an operator deletes, rotation runs), not in the ~8 s that
    ``max_retries`` quick retries last: disk errors retry for PIPELINE_DISK_WAIT_SECONDS. Counted
    in retries, not clock time, so the budget is the same whatever the worker's speed.
    """
    count, waited = 0, 0.0
    while waited < seconds:
        waited += min(BACKOFF_CAP, 2.0**count)
        count += 1
    return count


class StepTask(Task):
    """Subclasses set ``step`` and implement ``run(ctx, message) -> metrics``."""

    step: str = ""
    typing = False

    def __call__(self, payload: dict[str, Any], step: str | None = None) -> dict[str, Any]:
        message = JobMessage.decode(payload)
        refused = misaddressed(self.step, step)  # ``step`` is signed, the task name is not
        if refused is not None:
            log.error("job %s: message %s refused: %s", message.job_id, self.request.id, refused)
            raise Reject(refused, requeue=False)
        if message.outcome != "ok":
            return message.encode()
        with job_context(message.job_id, self.step):  # every log line names job and step
            try:
                return self._deliver(message).encode()
            except OUTAGE as error:
                delay = backoff(self.request.retries)
                log.warning("job %s: %s unavailable, delivery retried in %.1f s: %s",
                            message.job_id, type(error).__name__, delay,
                            str(error).splitlines()[0])
                raise self.retry(exc=error, countdown=delay,
                                 max_retries=get_settings().outage_retries) from None

    def _deliver(self, message: JobMessage) -> JobMessage:
        settings = get_settings()
        lease = settings.lease_seconds(self.step)
        begun = lifecycle.begin_step(message.job_id, self.step, self.request.id or "", lease)
        if begun is None:
            return message.ended("cancelled")
        started = perf_counter()
        outcome = self._guarded(self._context(begun.job, lease, message), message)
        progress_meta.finished(self, outcome.outcome)
        return outcome.with_metrics(**{f"{self.step}_seconds": round(perf_counter() - started, 4)})

    def _context(self, job: store.Job, lease: float, message: JobMessage) -> StepContext:
        settings = get_settings()
        share = Share(settings.share_dir)
        return StepContext(
            job_id=job.id, folder=share.locate(job.id) or share.job_dir(job.id),
            params=JobParams(**job.params), settings=settings,
            progress=lambda f: self._progress(job.id, f, lease),
            input_name=job.input_name, created_at=job.created_at.isoformat(),
            timings=dict(message.metrics),
        )

    def _progress(self, job_id: str, fraction: float, lease: float) -> None:
        """On the job row (renewing the lease), and as Celery task state meta."""
        lifecycle.report_progress(job_id, self.step, fraction, lease)
        progress_meta.report(self, job_id, self.step, fraction)

    def _guarded(self, ctx: StepContext, message: JobMessage) -> JobMessage:
        try:
            fault_point(self.step, ctx.input_name)
            metrics = {} if ctx.settings.step_work == "noop" else self.run(ctx, message)
            self.finish(ctx, metrics)
            return message.with_metrics(**metrics)
        except (Retry, *OUTAGE):
            raise
        except DataError as error:
            return self._failed(ctx, message, error)
        except SoftTimeLimitExceeded:
            soft, _hard = ctx.settings.time_limits(self.step)
            return self._failed(ctx, message, TimeoutError(f"took longer than {soft} s"))
        except Exception as error:
            if is_transient(error):
                return self._retry_or_fail(ctx, message, error)
            log.exception("job %s: step %s crashed", ctx.job_id, self.step)
            return self._failed(ctx, message, error)

    def _retry_or_fail(self, ctx: StepContext, message: JobMessage, error: BaseException,
                       ) -> JobMessage:
        retries, limit = self.request.retries, ctx.settings.max_retries
        if is_disk_error(error):
            limit = max(limit, retries_within(ctx.settings.disk_wait_seconds))
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

    def finish(self, ctx: StepContext, metrics: dict[str, Any]) -> None:
        """After the work: the last step ends the job here (also when the work is a no-op)."""
