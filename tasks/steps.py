"""The step tasks, made from the step registry, and the error callback for what the steps
could not catch.

A step that fails its job ends as a task FAILURE (:class:`~orchestrator.jobs.lifecycle.StepFailed`)
after the lifecycle has recorded the failure, so Flower and the result backend show the truth
and the chain stops: the later steps never run, so they never show as successes. A batch's
chord still reaches its summary: Celery counts the failed chain as the chord's part and calls
the summary's error callback (``pipeline.summarize_after_error``, tasks/batch.py).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task, shared_task

from orchestrator.jobs import lifecycle
from orchestrator.paths import Share
from orchestrator.runtime.messages import JobMessage
from orchestrator.settings import get_settings
from orchestrator.steps.context import StepContext
from orchestrator.steps.registry import Step
from tasks.base import OUTAGE, StepTask

log = logging.getLogger(__name__)


class TruthfulStep(StepTask):
    """A step whose failed job is a failed task.

    :class:`StepTask` records the failure and returns the message with outcome "failed"; here
    that outcome becomes a raise. ``throws``: an expected failure, logged without a traceback.
    Steps ignore their results, but this failure is stored (this request's ``ignore_result``
    is turned off) and Celery propagates it to the chain's later task ids, which non-Redis
    chord backends wait on. Only this failure: storing every error would also write to a
    result backend that is away during an outage, which the outage retries must not meet.
    A raise is not retried (no ``autoretry_for``; with ``task_acks_on_failure_or_timeout``
    the message is acknowledged).
    """

    throws = (lifecycle.StepFailed,)

    def __call__(self, payload: dict[str, Any], step: str | None = None) -> dict[str, Any]:
        arrived = JobMessage.decode(payload)
        result = super().__call__(payload, step)
        if arrived.outcome == "ok" and JobMessage.decode(result).outcome == "failed":
            self.request.ignore_result = False  # read by Celery's trace when it stores errors
            raise lifecycle.step_failed(arrived.job_id, self.step)
        return result

    def finish(self, ctx: StepContext, metrics: dict[str, Any]) -> None:
        """The last step ends the job (also when the work is a no-op)."""
        if self.step == ctx.settings.steps.last:
            lifecycle.complete(ctx.share, ctx.job_id, metrics)


def step_task(step: Step) -> Task:
    """The task of one step of the registry: ``pipeline.<name>``, a :class:`TruthfulStep`
    whose work is the step's plain function. A shared task (Celery's ``shared_task``): every
    app the composition root makes (orchestrator/celery.py) has it."""
    def run(task: TruthfulStep, ctx: StepContext, message: JobMessage) -> dict[str, Any]:
        # Imported on first use, not when the task is made: the step functions bring
        # pandas, pyarrow and SciPy, which a worker serving only rotation never needs. A
        # worker that serves the step has imported it before forking (orchestrator/celery.py).
        return step.function()(ctx)

    run.__name__ = run.__qualname__ = step.name
    run.__doc__ = f"The {step.name} step: {step.run}."
    task: Task = shared_task(bind=True, base=TruthfulStep, name=step.task_name,
                             step=step.name)(run)
    return task


#: The configured pipeline's step tasks (PIPELINE_STEP_REGISTRY), by step name.
STEP_TASKS = {step.name: step_task(step) for step in get_settings().steps}


@shared_task(name="pipeline.record_crash")
def record_crash(request: Any, exc: BaseException, traceback: Any) -> None:
    """Error callback: a step died where it could not catch it (hard time limit, worker lost)."""
    if isinstance(exc, lifecycle.StepFailed):
        return  # the step recorded its job's failure before raising
    payload = request.args[0] if request.args else {}
    job_id = JobMessage.decode(payload).job_id
    step = request.task.removeprefix("pipeline.") if request.task else None
    if isinstance(exc, OUTAGE):
        # The broker or database was away (e.g. the next step could not be published): not
        # the job's fault. Its lease runs out and recovery runs the step again.
        log.error("job %s: step %s interrupted by an outage, left to recovery: %r",
                  job_id, step, exc)
        return
    log.error("job %s: step %s ended by %r", job_id, step, exc)
    lifecycle.fail(Share(get_settings().share_dir), job_id, step, exc)
