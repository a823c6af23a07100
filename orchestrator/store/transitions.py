"""The SQL of a state change, built once per shape and reused.

A shape is everything about a change but its values: the target state, the states it may
come from, whether the step must match, which extra columns it sets. Building a SQLAlchemy
statement costs more CPU than running it (profiled: most of a state change's client time);
a statement built once is compiled once and then found in SQLAlchemy's cache, so each change
only binds its values.

On PostgreSQL the UPDATE and the history INSERT are one statement (a CTE), sent in autocommit:
one round trip, one transaction. The state the row had is the change's only source state when
it has one (every change on a step's hot path); else a locked sub-select supplies it, which
RETURNING cannot. SQLite has no data-modifying CTEs: there the caller runs the UPDATE and then
:data:`EVENT` in one transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Executable,
    String,
    bindparam,
    case,
    func,
    insert,
    literal,
    null,
    select,
    true,
    union_all,
    update,
)

from orchestrator.store.states import FINAL, JobState
from orchestrator.store.tables import job_events, jobs

#: The history row, for SQLite (bound per call).
EVENT = insert(job_events)
EVENT_COLUMNS = ("job_id", "at", "from_state", "to_state", "step", "attempt", "worker", "detail")


@dataclass(frozen=True)
class Shape:
    target: JobState
    sources: frozenset[JobState]
    match_step: bool
    new_attempt: bool
    columns: tuple[str, ...]  # extra columns set, sorted
    postgres: bool
    #: An extra condition written with bind parameters (``g_*``), so that it is part of the
    #: shape: a module-level function, built once per shape like the rest.
    guard: Callable[[], ColumnElement[bool]] | None = None


def params(job_id: str, at: datetime, step: str | None, from_step: str | None,
           detail: str | None, worker: str, values: dict[str, Any],
           guard_values: dict[str, Any] | None = None) -> dict[str, Any]:
    """The values a shape's statement binds."""
    return {"p_job_id": job_id, "p_at": at, "p_step": step, "p_from_step": from_step,
            "p_detail": detail, "p_worker": worker,
            **{f"v_{name}": value for name, value in values.items()},
            **{f"g_{name}": value for name, value in (guard_values or {}).items()}}


def at_param() -> Any:
    """The change's time (``p_at``), for a guard comparing a column with it."""
    return bindparam("p_at", type_=jobs.c.updated_at.type)


def statement(shape: Shape, where: ColumnElement[bool] | None = None) -> Executable:
    """The change's statement; cached unless ``where`` adds a one-off condition."""
    return _cached(shape) if where is None else _build(shape, where)


@lru_cache(maxsize=256)
def _cached(shape: Shape) -> Executable:
    return _build(shape, None)


def _build(shape: Shape, where: ColumnElement[bool] | None) -> Executable:
    condition = jobs.c.state.in_(sorted(s.value for s in shape.sources))
    if shape.match_step:
        condition &= jobs.c.step == bindparam("p_from_step")
    if shape.guard is not None:
        condition &= shape.guard()
    if where is not None:
        condition &= where
    if shape.postgres:
        return _moved_and_logged(condition, _changes(shape), shape.sources)
    return (update(jobs).where((jobs.c.id == bindparam("p_job_id")) & condition)
            .values(**_changes(shape)).returning(*jobs.c))


def _changes(shape: Shape) -> dict[str, Any]:
    at = bindparam("p_at", type_=jobs.c.updated_at.type)
    changes: dict[str, Any] = {"state": shape.target.value, "step": bindparam("p_step"),
                               "updated_at": at}
    changes.update({name: bindparam(f"v_{name}", type_=jobs.c[name].type)
                    for name in shape.columns})
    if shape.new_attempt:
        changes["attempts"] = jobs.c.attempts + 1
    if shape.target is JobState.PROCESSING:
        changes.setdefault("started_at", func.coalesce(jobs.c.started_at, at))
    else:
        changes.setdefault("lease_until", None)
    if shape.target in FINAL:
        changes.setdefault("finished_at", at)
    return changes


def _moved_and_logged(condition: ColumnElement[bool], changes: dict[str, Any],
                      sources: frozenset[JobState]) -> Executable:
    if len(sources) == 1:
        # The state it had is the only one it may come from: a constant, no locked sub-select
        # (whose row lock is one more WAL record per change, on every step start).
        moved = (update(jobs).where((jobs.c.id == bindparam("p_job_id")) & condition)
                 .values(**changes).returning(*jobs.c).cte("moved"))
        old_state: Any = literal(next(iter(sources)).value, type_=job_events.c.from_state.type)
    else:
        old = (select(jobs.c.id, jobs.c.state.label("old_state"))
               .where(jobs.c.id == bindparam("p_job_id")).with_for_update().subquery("old"))
        moved = (update(jobs).where((jobs.c.id == old.c.id) & condition).values(**changes)
                 .returning(*jobs.c, old.c.old_state).cte("moved"))
        old_state = moved.c.old_state
    logged = insert(job_events).from_select(list(EVENT_COLUMNS), select(
        moved.c.id, bindparam("p_at", type_=job_events.c.at.type), old_state,
        moved.c.state, moved.c.step, moved.c.attempts,
        bindparam("p_worker", type_=job_events.c.worker.type),
        bindparam("p_detail", type_=job_events.c.detail.type),
    )).cte("logged")
    return select(*(moved.c[column.name] for column in jobs.c)).add_cte(logged)


@lru_cache(maxsize=1)
def created_and_logged() -> Executable:
    """PostgreSQL: a new job, queued, and its two creation events (pending, then queued, in
    that order of ids) in one statement; the job's columns bound as ``j_*``."""
    state = {"state": JobState.QUEUED.value, "step": None, "progress": 0.0, "attempts": 0}
    row = {name: bindparam(f"j_{name}", type_=jobs.c[name].type) for name in (
        "id", "batch_id", "input_name", "input_sha256", "input_size", "params", "created_at")}
    created = (insert(jobs).values(**row, **state, updated_at=row["created_at"])
               .returning(jobs.c.id).cte("created"))
    # (a VALUES list with literal values has no cache key: it would be compiled every time)
    moves = union_all(*(
        select(literal(n).label("n"), literal(source, type_=String).label("from_state"),
               literal(target.value, type_=String).label("to_state"))
        for n, source, target in ((1, None, JobState.PENDING),
                                  (2, JobState.PENDING.value, JobState.QUEUED)))).subquery("moves")
    detail = case((moves.c.n == 1, bindparam("p_detail", type_=job_events.c.detail.type)),
                  else_=null())
    rows = (select(created.c.id, bindparam("p_at", type_=job_events.c.at.type),
                   moves.c.from_state, moves.c.to_state, null(), literal(0),
                   bindparam("p_worker", type_=job_events.c.worker.type), detail)
            .select_from(created.join(moves, true())).order_by(moves.c.n))
    return insert(job_events).from_select(list(EVENT_COLUMNS), rows).add_cte(created)
