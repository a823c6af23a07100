"""The extra conditions of a step start (``lifecycle.begin_step``), as guards of a transition.

Each is a module-level function building its condition from bind parameters (``g_*``), so the
transition's statement is built once per process and only bound per call: the run check
written as a one-off ``where`` made every step start build and compile its statement again,
which profiled as half the CPU of a step start.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, bindparam, func

from orchestrator.store.tables import jobs
from orchestrator.store.transitions import at_param


def is_task() -> ColumnElement[bool]:
    """The row names this task: the previous step of the same run just ended."""
    return jobs.c.task_id == bindparam("g_task")


def queued_for() -> ColumnElement[bool]:
    """A queued job starts only the step its record expects (a message relabelled for another
    step is refused); a job with no step recorded expects the pipeline's first (``g_first``)."""
    return func.coalesce(jobs.c.step, bindparam("g_first")) == bindparam("g_step")


def queued_for_run() -> ColumnElement[bool]:
    """... and only in the run its record expects (a late original of a republished message
    is refused)."""
    return queued_for() & (jobs.c.task_id.is_(None) | jobs.c.task_id.like(bindparam("g_run")))


def redelivered() -> ColumnElement[bool]:
    """This very message came back, or the step's lease ran out (abandoned)."""
    return (jobs.c.task_id == bindparam("g_task")) | (jobs.c.lease_until < at_param())


def redelivered_in_run() -> ColumnElement[bool]:
    """... an abandoned step only by a message of the run that holds it."""
    return (jobs.c.task_id == bindparam("g_task")) | (
        (jobs.c.lease_until < at_param()) & jobs.c.task_id.like(bindparam("g_run")))
