"""The base class of every step task: it carries out the task policy's decisions.

What an error means is decided once, in :mod:`orchestrator.policy` (the table of kinds and
budgets is in orchestrator/policy/decide.py): data errors and the soft time limit fail the job
at once; transient errors retry with backoff and jitter up to ``max_retries`` (disk errors for
about PIPELINE_DISK_WAIT_SECONDS); the database or broker being away retries the whole delivery
(nothing can be recorded meanwhile) up to ``outage_retries``; anything else fails the job with
its type and message. A failed job's step returns outcome "failed", which tasks/steps.py turns
into a raised StepFailed: the task is a FAILURE where operators look (Flower, the result
backend) and the later steps never run; a batch's chord still reaches its summary through the
summary's error callback (tasks/batch.py).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from time import perf_counter
from typing import Any

from celery import Task
from celery.exceptions import Reject, Retry

from orchestrator import faults, policy
from orchestrator.jobs import lifecycle
from orchestrator.jobs.jobspec import JobParams
from orchestrator.monitoring import progress as progress_meta
from orchestrator.paths import Share
from orchestrator.policy import OUTAGE, Action, Decision, Kind
from orchestrator.runtime.logs import job_context
from orchestrator.runtime.messages import JobMessage, misaddressed
from orchestrator.settings import get_settings
from orchestrator.steps.context import StepContext
from orchestrator.store import jobs as store

log = logging.getLogger(__name__)

__all__ = ["OUTAGE", "StepTask"]  # OUTAGE: tasks/steps.py's error callback asks it too


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
                raise self._redeliver(message, self._decide(error)) from None

    def _decide(self, error: BaseException) -> Decision:
        return policy.decide(error, self.request.retries, self.name, get_settings())

    def _redeliver(self, message: JobMessage, decision: Decision) -> BaseException:
        """The database or broker is away: the same delivery again later, or give up to
        recovery (the step's lease runs out) when the outage outlasts ``outage_retries``."""
        error = decision.error
        if decision.action is Action.GIVE_UP:
            log.error("job %s: %s still unavailable after %d deliveries; left to recovery: %s",
                      message.job_id, type(error).__name__, decision.limit + 1,
                      str(error).splitlines()[0])
            return error
        log.warning("job %s: %s unavailable, delivery retried in %.1f s: %s",
                    message.job_id, type(error).__name__, decision.delay,
                    str(error).splitlines()[0])
        return self.retry(exc=error, countdown=decision.delay, max_retries=decision.limit)

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
        progress_meta.step_progress(self, job_id, self.step, fraction, lease)

    def _guarded(self, ctx: StepContext, message: JobMessage) -> JobMessage:
        try:
            faults.reach(faults.step_point(self.step), ctx.input_name)
            metrics = {} if ctx.settings.step_work == "noop" else self.run(ctx, message)
            self.finish(ctx, metrics)
            return message.with_metrics(**metrics)
        except Retry:
            raise
        except Exception as error:
            decision = self._decide(error)
            if decision.action in (Action.REDELIVER, Action.GIVE_UP):
                raise  # an outage: nothing can be recorded now, __call__ redelivers
            if decision.action is Action.RETRY:
                return self._retry(ctx, decision)
            if decision.kind is Kind.UNEXPECTED:
                log.exception("job %s: step %s crashed", ctx.job_id, self.step)
            return self._failed(ctx, message, decision.error)

    def _retry(self, ctx: StepContext, decision: Decision) -> JobMessage:
        """Record why and when the step runs again (the job is queued meanwhile), then retry."""
        retries, delay, error = self.request.retries, decision.delay, decision.error
        when = (store.now() + timedelta(seconds=delay)).isoformat(timespec="seconds")
        lifecycle.requeue(ctx.job_id, self.step,
                          f"retry {retries + 1}/{decision.limit} at {when} ({delay:.1f} s): "
                          f"{error}")
        raise self.retry(exc=error, countdown=delay, max_retries=decision.limit)

    def _failed(self, ctx: StepContext, message: JobMessage, error: BaseException) -> JobMessage:
        log.info("job %s failed in %s: %s", ctx.job_id, self.step, error)
        lifecycle.fail(ctx.share, ctx.job_id, self.step, error)
        return message.ended("failed")

    def run(self, ctx: StepContext, message: JobMessage) -> dict[str, Any]:  # type: ignore[override]
        raise NotImplementedError

    def finish(self, ctx: StepContext, metrics: dict[str, Any]) -> None:
        """After the work: the last step ends the job here (also when the work is a no-op)."""
