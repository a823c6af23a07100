"""Structured logs: every line emitted while working on a job carries its job id and step.

The job and step live in a context variable that the step tasks set for the length of a
delivery (tasks/base.py); a filter copies them onto each record, so any logger anywhere (the
store, the optimizer, a library) gets them without passing them around. Readable text by
default; one JSON object a line with ``PIPELINE_LOG_FORMAT=json``.

Hooked once: Celery's ``after_setup_logger``/``after_setup_task_logger`` signals (workers,
beat) and :func:`configure` (the CLI's long-running commands: watch, up).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, Any

from celery import signals

TEXT_FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s:%(job)s %(message)s"
_TASK_ID = re.compile(r"^([0-9a-f]{32})\.([a-z_]+)\.\d+$")
_job: ContextVar[tuple[str, str | None] | None] = ContextVar("pipeline_job", default=None)
#: Record attributes that are not "extra" fields a caller added.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "job",
                                                             "job_id", "step"}


@contextmanager
def job_context(job_id: str, step: str | None = None) -> Iterator[None]:
    """Log lines inside this block carry ``job_id`` and ``step``."""
    token = _job.set((job_id, step))
    try:
        yield
    finally:
        _job.reset(token)


def current_job() -> tuple[str, str | None] | None:
    return _job.get()


class JobFilter(logging.Filter):
    """Adds ``job_id``, ``step`` and a ready-made `` [job … step]`` text to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        current = _job.get() or _from_task(record)
        if current is not None and not getattr(record, "job_id", None):
            record.job_id, record.step = current
        job_id, step = getattr(record, "job_id", None), getattr(record, "step", None)
        record.job = (f" [job {job_id}" + (f" {step}" if step else "") + "]") if job_id else ""
        return True


def _from_task(record: logging.LogRecord) -> tuple[str, str | None] | None:
    """Celery's own lines about a step task (received, succeeded, retry) name the task, whose
    id is ``<job id>.<step>.<run>`` (orchestrator/jobs/canvas.py): the job and step are in it."""
    data = getattr(record, "data", None)
    task_id = data.get("id") if isinstance(data, dict) else None
    match = _TASK_ID.match(task_id) if isinstance(task_id, str) else None
    return (match[1], match[2]) if match else None


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, process, message, job_id, step, extras."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "process": record.processName,
            "pid": record.process, "message": record.getMessage(),
            "job_id": getattr(record, "job_id", None), "step": getattr(record, "step", None),
        }
        out.update({k: v for k, v in record.__dict__.items()
                    if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def formatter(kind: str) -> logging.Formatter:
    return JsonFormatter() if kind == "json" else logging.Formatter(TEXT_FORMAT)


def install(logger: logging.Logger, kind: str) -> None:
    """Our filter and formatter on every handler of ``logger`` (once: safe to call again)."""
    for handler in logger.handlers:
        if not any(isinstance(f, JobFilter) for f in handler.filters):
            handler.addFilter(JobFilter())
        handler.setFormatter(formatter(kind))


def configure(level: str = "INFO", kind: str | None = None,
              stream: IO[str] | None = None) -> None:
    """The root logger of a CLI process: one stream handler with our format."""
    kind = kind or _setting_format()
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler(stream or sys.stderr))
    root.setLevel(level)
    install(root, kind)


def _setting_format() -> str:
    from orchestrator.settings import get_settings

    return get_settings().log_format


@signals.after_setup_logger.connect
@signals.after_setup_task_logger.connect
def _celery_logger(logger: logging.Logger, **_: object) -> None:
    install(logger, _setting_format())
