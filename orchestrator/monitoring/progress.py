"""A step's progress as Celery task state meta (``PROGRESS``), beside the job row's percentage.

:func:`step_progress` is the one call a running step makes: it writes the job row (the record,
which also renews the step's lease) and then this meta.

The job row is the record (``pipeline status``); this is for whoever reads Celery results
(``AsyncResult(task_id).info``, Flower's task page): ``{"job_id", "step", "step_progress",
"progress"}``. Written only when the app has a result backend, at most every
:data:`MIN_INTERVAL` seconds per task (plus the step's end), and never allowed to fail a step.
When a step that ignores its result ends well, its state is set to SUCCESS with the same meta, so
a reader is not left with PROGRESS for the length of ``result_expires``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Task, states
from celery.app.task import get_actual_ignore_result
from celery.backends.base import DisabledBackend

from orchestrator.jobs.lifecycle import report_progress
from orchestrator.settings import get_settings

log = logging.getLogger(__name__)
PROGRESS = "PROGRESS"
MIN_INTERVAL = 0.5
_written: dict[str, tuple[float, dict[str, Any]]] = {}  # task id -> (monotonic, last meta)


def percent(step: str, fraction: float) -> float:
    return round(get_settings().steps.progress_at(step, fraction), 1)


def step_progress(task: Task, job_id: str, step: str, fraction: float,
                  lease_seconds: float) -> None:
    """A running step is ``fraction`` done: on the job row (renewing its lease), then as task
    state meta. The row first: it is the record, and it must not wait on the result backend."""
    report_progress(job_id, step, fraction, lease_seconds)
    report(task, job_id, step, fraction)


def report(task: Task, job_id: str, step: str, fraction: float) -> None:
    task_id = task.request.id
    if not task_id or isinstance(task.backend, DisabledBackend):
        return
    meta = {"job_id": job_id, "step": step, "step_progress": round(fraction, 4),
            "progress": percent(step, fraction)}
    previous = _written.get(task_id)
    if previous is not None and time.monotonic() - previous[0] < MIN_INTERVAL:
        _written[task_id] = (previous[0], meta)  # kept for the end-of-step write
        return
    if _store(task, task_id, meta, PROGRESS):
        _written[task_id] = (time.monotonic(), meta)


def finished(task: Task, outcome: str) -> None:
    """The step ended: replace PROGRESS with SUCCESS unless Celery stores a result itself.

    Not for a failed job: its step raises and Celery stores FAILURE, which a stored SUCCESS
    would block (result backends never overwrite a SUCCESS).
    """
    task_id = task.request.id
    written = _written.pop(task_id, None) if task_id else None
    if written is None or outcome == "failed" or not get_actual_ignore_result(task, task.request):
        return
    _store(task, task_id, {**written[1], "outcome": outcome}, states.SUCCESS)


def _store(task: Task, task_id: str, meta: dict[str, Any], state: str) -> bool:
    try:
        task.backend.store_result(task_id, meta, state, request=task.request)
    except Exception as error:  # progress is a courtesy: the step goes on without it
        log.debug("progress of task %s not stored: %s", task_id, error)
        return False
    return True
