"""Time limits, looked up by task name: the one source of Celery's ``task_annotations``.

Before, the steps' limits were annotations built in celeryconfig.py and the rotation batch's
were decorator arguments evaluated when tasks/rotation.py was imported (so a test or a worker
that changed the settings afterwards kept the old ones, and nothing listed them together).
Now every limited task is named here, and celeryconfig.py passes :func:`task_annotations` to
Celery, which sets them on the task when it binds to the app.
"""

from __future__ import annotations

from typing import Any

from orchestrator.settings import Settings

ROTATE_BATCH = "pipeline.rotate_batch"


def _rotation_limits(settings: Settings) -> tuple[int, int]:
    """A minute (or a tenth of the limit) to record the batch's failure before the kill."""
    hard = settings.rotation_time_limit
    return hard - min(60, hard // 10), hard


def limited_tasks(settings: Settings) -> list[str]:
    """Every task that has time limits: the configured pipeline's steps, a rotation batch."""
    return [*(step.task_name for step in settings.steps), ROTATE_BATCH]


def time_limits(task: str, settings: Settings) -> tuple[int, int] | None:
    """(soft, hard) seconds for ``task`` (a Celery task name), or None if it has none."""
    if task == ROTATE_BATCH:
        return _rotation_limits(settings)
    for step in settings.steps:
        if step.task_name == task:
            return settings.time_limits(step.name)
    return None


def _rate_limits(settings: Settings) -> dict[str, str]:
    """Tasks whose starts per second are bounded (rotation: not to crowd out the steps)."""
    rate = settings.rotation_task_rate_limit
    return {ROTATE_BATCH: rate} if rate else {}


def task_annotations(settings: Settings) -> dict[str, dict[str, Any]]:
    """Celery ``task_annotations``: every task's time limits, and its rate limit if any."""
    out: dict[str, dict[str, Any]] = {}
    for task in limited_tasks(settings):
        soft, hard = time_limits(task, settings) or (None, None)
        out[task] = {"soft_time_limit": soft, "time_limit": hard}
    for task, rate in _rate_limits(settings).items():
        out.setdefault(task, {})["rate_limit"] = rate
    return out
