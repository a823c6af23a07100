"""Jobs and their history: create, move between states (compare-and-set), read.

Every state change is one transaction: a conditional UPDATE of the job row (it only matches
when the job is still in an expected state, so of two racing writers exactly one wins) and an
INSERT into the append-only history. An illegal change raises and writes nothing. On
PostgreSQL both are one statement sent in autocommit, so a state change costs one round trip
(reads too: no BEGIN/COMMIT around a lone SELECT).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    bindparam,
    func,
    insert,
    select,
    update,
)

from orchestrator.errors import IllegalTransition, JobNotFound
from orchestrator.store import transitions
from orchestrator.store.db import get_engine, statement, transaction
from orchestrator.store.states import JobState, is_legal, sources_of
from orchestrator.store.tables import batches, job_events, jobs

HOST = socket.gethostname()


def worker_name() -> str:
    """host/pid of this process (a pool child forked after import has its own pid)."""
    return f"{HOST}/{os.getpid()}"


def now() -> datetime:
    return datetime.now(UTC)


def _utc(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)  # SQLite returns naive datetimes
    return value


@dataclass(frozen=True)
class Job:
    id: str
    input_name: str
    input_sha256: str
    input_size: int
    params: dict[str, Any]
    state: JobState
    step: str | None
    progress: float
    attempts: int
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    batch_id: str | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    task_id: str | None = None
    lease_until: datetime | None = None
    archive_path: str | None = None
    archive_sha256: str | None = None

    @classmethod
    def from_row(cls, row: Any) -> Job:
        data = dict(row._mapping)
        data["state"] = JobState(data["state"])
        for key in ("created_at", "updated_at", "started_at", "finished_at", "lease_until"):
            data[key] = _utc(data[key])
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        return {k: v.isoformat() if isinstance(v, datetime) else str(v) if k == "state" else v
                for k, v in out.items()}


@dataclass(frozen=True)
class JobEvent:
    job_id: str
    at: datetime
    from_state: str | None
    to_state: str
    step: str | None
    attempt: int
    worker: str | None
    detail: str | None = None
    kind: str | None = None  # "note": a remark, not a state change (from = to = the state)

    @property
    def is_note(self) -> bool:
        return self.kind == "note"

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["at"] = self.at.isoformat()
        return out


@dataclass
class NewJob:
    id: str
    input_name: str
    input_sha256: str
    input_size: int
    params: dict[str, Any]
    batch_id: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def _event(conn: Connection, job_id: str, source: str | None, target: str, *, step: str | None,
           attempt: int, detail: str | None, at: datetime) -> None:
    conn.execute(transitions.EVENT, _event_row(job_id, source, target, detail, at, step=step,
                                               attempt=attempt))


def _event_row(job_id: str, source: str | None, target: str, detail: str | None, at: datetime,
               *, step: str | None = None, attempt: int = 0) -> dict[str, Any]:
    """A history row; creation events have no step and attempt 0."""
    return {"job_id": job_id, "at": at, "from_state": source, "to_state": target, "step": step,
            "attempt": attempt, "worker": worker_name(), "detail": detail}


def create_jobs(new: Sequence[NewJob], *, queued: bool = True, batch_name: str | None = None,
                url: str | None = None) -> None:
    """Record jobs as pending (and queued, when the caller publishes right after)."""
    at = now()
    with transaction(url) as conn:
        if batch_name is not None and new:
            conn.execute(insert(batches).values(id=new[0].batch_id, name=batch_name,
                                                size=len(new), created_at=at))
        insert_jobs(conn, new, at, queued=queued)


_INSERT_JOB = insert(jobs)  # statements built once and bound per call: building costs CPU


def insert_jobs(conn: Connection, new: Sequence[NewJob], at: datetime, *, queued: bool = True,
                reasons: dict[str, dict[str, Any]] | None = None) -> None:
    """Insert jobs and their creation events: two executemany statements, which psycopg
    pipelines, however many jobs (``pipeline submit *.csv``, a watcher's scan; issue 18).

    A job is queued (pending, then queued: two events) when ``queued``, unless ``reasons``
    holds an error for it (a refused input, a duplicate): then it stays pending with that
    reason, to be ended once its folder is put away.
    """
    if not new:
        return
    reasons = reasons or {}
    rows, events = [], []
    for job in new:
        reason = reasons.get(job.id)
        goes_on = queued and reason is None
        state = JobState.QUEUED if goes_on else JobState.PENDING
        rows.append({"id": job.id, "batch_id": job.batch_id, "input_name": job.input_name,
                     "input_sha256": job.input_sha256, "input_size": job.input_size,
                     "params": job.params, "state": state.value, "step": None,
                     "progress": 0.0, "attempts": 0, "error": reason, "created_at": at,
                     "updated_at": at})
        detail = json.dumps(job.detail) if job.detail else None
        events.append(_event_row(job.id, None, JobState.PENDING, detail, at))
        if goes_on:
            events.append(_event_row(job.id, JobState.PENDING, JobState.QUEUED, None, at))
    conn.execute(_INSERT_JOB, rows)
    conn.execute(transitions.EVENT, events)


def create_queued(job: NewJob, at: datetime, url: str | None = None) -> bool:
    """Record one job queued, with its two creation events, in one statement; False (nothing
    written) where that is not possible, and the caller records it in a transaction.

    On PostgreSQL: a CTE in autocommit, one round trip instead of four (BEGIN, the row, the
    events, COMMIT) on the path of every submission.
    """
    if get_engine(url).dialect.name != "postgresql":
        return False  # asked before a connection: on SQLite that would begin a transaction
    detail = json.dumps(job.detail) if job.detail else None
    with statement(url) as conn:
        conn.execute(transitions.created_and_logged(), {
            "j_id": job.id, "j_batch_id": job.batch_id, "j_input_name": job.input_name,
            "j_input_sha256": job.input_sha256, "j_input_size": job.input_size,
            "j_params": job.params, "j_created_at": at, "p_at": at, "p_detail": detail,
            "p_worker": worker_name()})
    return True


def transition(job_id: str, target: JobState, *, sources: Iterable[JobState] | None = None,
               step: str | None = None, from_step: str | None = None,
               detail: str | None = None, new_attempt: bool = False,
               where: ColumnElement[bool] | None = None, url: str | None = None,
               conn: Connection | None = None,
               guard: Callable[[], ColumnElement[bool]] | None = None,
               guard_values: dict[str, Any] | None = None, **values: Any) -> Job:
    """Move a job to ``target`` if it is in one of ``sources`` (default: every legal one).

    ``from_step`` narrows the match to a job at that step, ``where`` by any extra condition.
    ``guard`` is such a condition for the hot path: a module-level function that builds it from
    bind parameters ``g_<name>``, whose values are ``guard_values``; unlike ``where`` its
    statement is built once and reused (building one costs more CPU than running it).
    ``values`` are extra columns (progress, result, error, lease). Raises IllegalTransition,
    writing nothing, when the job is not in an expected state by the time the UPDATE runs.
    With ``conn``, it runs inside the caller's transaction (rotation moves a whole batch of
    jobs in one), which then decides commit or rollback.
    """
    allowed = frozenset(sources) if sources is not None else sources_of(target)
    bad = [s for s in allowed if not is_legal(s, target)]
    if bad:
        raise IllegalTransition(f"{bad[0]} -> {target} is not a legal transition")
    at = now()
    with _within(conn, url) as active:
        shape = transitions.Shape(target, allowed, from_step is not None, new_attempt,
                                  tuple(sorted(values)), active.dialect.name == "postgresql",
                                  guard)
        bound = transitions.params(job_id, at, step, from_step, detail, worker_name(), values,
                                   guard_values)
        row = active.execute(transitions.statement(shape, where), bound).first()
        if row is None:
            _refuse(active, job_id, target, allowed, from_step)
        if not shape.postgres:  # there the statement wrote the event too
            _event(active, job_id, _previous_state(active, job_id, allowed), target,
                   step=step, attempt=row.attempts, detail=detail, at=at)
    return Job.from_row(row)


@contextmanager
def _within(conn: Connection | None, url: str | None) -> Iterator[Connection]:
    if conn is not None:
        yield conn
        return
    with statement(url) as own:  # PostgreSQL: one statement; SQLite: one transaction
        yield own


def _previous_state(conn: Connection, job_id: str, allowed: frozenset[JobState]) -> JobState:
    if len(allowed) == 1:
        return next(iter(allowed))
    # The UPDATE cannot return the old value; the history's last entry holds it.
    return JobState(conn.execute(
        select(job_events.c.to_state).where(job_events.c.job_id == job_id)
        .order_by(job_events.c.id.desc()).limit(1)).scalar_one())


def _refuse(conn: Connection, job_id: str, target: JobState, allowed: frozenset[JobState],
            from_step: str | None) -> None:
    row = conn.execute(select(jobs.c.state, jobs.c.step).where(jobs.c.id == job_id)).first()
    if row is None:
        raise JobNotFound(f"no job {job_id}")
    expected = "/".join(sorted(allowed)) + (f" at step {from_step}" if from_step else "")
    raise IllegalTransition(
        f"job {job_id} is {row.state}" + (f" at step {row.step}" if row.step else "")
        + f"; cannot go to {target} (expected {expected})")


def set_progress(job_id: str, percent: float, lease_until: datetime | None = None,
                 url: str | None = None) -> None:
    """Record progress of the running step (renewing its lease); no event: not a transition."""
    values: dict[str, Any] = {"progress": round(percent, 1), "updated_at": now()}
    if lease_until is not None:
        values["lease_until"] = lease_until
    with statement(url) as conn:
        conn.execute(update(jobs).where((jobs.c.id == job_id)
                                        & (jobs.c.state == JobState.PROCESSING.value))
                     .values(**values))


def note(job_id: str, detail: str, url: str | None = None) -> None:
    """Append a remark to the history without changing the job (from = to = its state, kind
    "note", so readers tell it from a transition), e.g. the outcome of a notification."""
    with transaction(url) as conn:
        row = conn.execute(select(jobs.c.state, jobs.c.attempts)
                           .where(jobs.c.id == job_id)).first()
        if row is None:
            raise JobNotFound(f"no job {job_id}")
        conn.execute(transitions.EVENT, {
            **_event_row(job_id, row.state, row.state, detail, now(), attempt=row.attempts),
            "kind": "note"})


def input_names(job_ids: Sequence[str], url: str | None = None) -> dict[str, str]:
    """Job id -> input name, for many jobs at once."""
    found: dict[str, str] = {}
    with statement(url) as conn:
        for start in range(0, len(job_ids), 500):
            chunk = list(job_ids[start:start + 500])
            rows = conn.execute(select(jobs.c.id, jobs.c.input_name)
                                .where(jobs.c.id.in_(chunk)))
            found.update((row.id, row.input_name) for row in rows)
    return found


_JOB = select(jobs).where(jobs.c.id == bindparam("job_id"))  # built once: it is read often


def get_job(job_id: str, url: str | None = None) -> Job:
    with statement(url) as conn:
        row = conn.execute(_JOB, {"job_id": job_id}).first()
    if row is None:
        raise JobNotFound(f"no job {job_id}")
    return Job.from_row(row)


_STATE = select(jobs.c.state, jobs.c.step).where(jobs.c.id == bindparam("job_id"))


def state_of(job_id: str, url: str | None = None) -> tuple[JobState, str | None]:
    """A job's state and step only: what a check before a file move reads (a whole row is
    twenty columns, JSON among them, to fetch and decode)."""
    with statement(url) as conn:
        row = conn.execute(_STATE, {"job_id": job_id}).first()
    if row is None:
        raise JobNotFound(f"no job {job_id}")
    return JobState(row.state), row.step


def find_job(prefix: str, url: str | None = None) -> Job:
    """A job by its id or an unambiguous prefix of it (people type short ids)."""
    with statement(url) as conn:
        matching = jobs.c.id.startswith(prefix, autoescape=True)
        rows = conn.execute(select(jobs).where(matching).limit(2)).all()
    if not rows:
        raise JobNotFound(f"no job {prefix}")
    if len(rows) > 1:
        raise JobNotFound(f"{prefix} matches several jobs; give more of the id")
    return Job.from_row(rows[0])


def find_batch(prefix: str, url: str | None = None) -> str:
    """A batch id from its id or an unambiguous prefix of it."""
    with statement(url) as conn:
        ids = conn.execute(select(batches.c.id).where(
            batches.c.id.startswith(prefix, autoescape=True)).limit(2)).scalars().all()
    if len(ids) != 1:
        raise JobNotFound(f"no job or batch {prefix}" if not ids else
                          f"{prefix} matches several batches; give more of the id")
    return ids[0]


def list_jobs(state: JobState | None = None, since: datetime | None = None,
              batch_id: str | None = None, limit: int = 50, url: str | None = None) -> list[Job]:
    query = select(jobs).order_by(jobs.c.created_at.desc()).limit(limit)
    if state is not None:
        query = query.where(jobs.c.state == state.value)
    if since is not None:  # stored as UTC; SQLite compares the text
        aware = since if since.tzinfo else since.replace(tzinfo=UTC)
        query = query.where(jobs.c.created_at >= aware.astimezone(UTC))
    if batch_id is not None:
        query = query.where(jobs.c.batch_id == batch_id)
    with statement(url) as conn:
        return [Job.from_row(row) for row in conn.execute(query)]


def history(job_id: str, url: str | None = None) -> list[JobEvent]:
    query = (select(job_events).where(job_events.c.job_id == job_id)
             .order_by(job_events.c.id))
    with statement(url) as conn:
        rows = conn.execute(query).all()
    return [JobEvent(**{k: v for k, v in row._mapping.items() if k != "id"} | {
        "at": _utc(row.at)}) for row in rows]


def count_by_state(job_ids: Sequence[str] | None = None, url: str | None = None,
                   ) -> dict[str, int]:
    query = select(jobs.c.state, func.count()).group_by(jobs.c.state)
    if job_ids is not None:
        query = query.where(jobs.c.id.in_(list(job_ids)))
    with statement(url) as conn:
        return {state: n for state, n in conn.execute(query)}


def finish_batch(batch_id: str, summary: dict[str, Any], url: str | None = None) -> None:
    with statement(url) as conn:
        conn.execute(update(batches).where(batches.c.id == batch_id)
                     .values(finished_at=now(), summary=summary))
