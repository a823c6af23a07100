"""The rotation's own records: runs (what was asked, with which settings, how far it got) and
the batch journal (which archive each batch writes, and how far it got).

A batch's journal row moves ``writing → committed → done`` (or ``failed``/``abandoned``), and
``committed`` is written in the same transaction as the job rows, so after a crash the journal
says exactly what is left to do. The run's counters move in those same transactions: the run
is finished when every batch has been counted once.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, case, insert, select, update
from sqlalchemy.exc import IntegrityError

from orchestrator.store.db import transaction
from orchestrator.store.jobs import _utc, now, worker_name
from orchestrator.store.tables import rotation_batches, rotation_runs

ACTIVE = ("planning", "running", "stopping")
MESSAGES_KEPT = 5


class WindowTaken(Exception):
    """Another beat already started the run of this schedule window (celery issue 2856)."""


@dataclass(frozen=True)
class Run:
    id: str
    trigger: str
    actor: str | None
    status: str
    started_at: datetime
    dispatched_at: datetime | None
    updated_at: datetime
    finished_at: datetime | None
    cutoffs: dict[str, str]
    job_limit: int | None
    settings: dict[str, Any] | None
    planned_jobs: int
    planned_bytes: int
    planned_batches: int
    jobs_done: int
    bytes_done: int
    batches_done: int
    batches_failed: int
    error: dict[str, Any] | None
    window_key: str | None = None
    budget_clock: float | None = None

    @classmethod
    def from_row(cls, row: Any) -> Run:
        data = dict(row._mapping)
        for key in ("started_at", "dispatched_at", "updated_at", "finished_at"):
            data[key] = _utc(data[key])
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (v.isoformat() if isinstance(v, datetime) else v)
                for f in fields(self) for v in [getattr(self, f.name)]}

    @property
    def finished(self) -> bool:
        return self.finished_at is not None

    def kinds(self) -> dict[str, int]:
        return dict((self.error or {}).get("kinds", {}))


def new_run_id(at: datetime) -> str:
    return f"{at:%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"


def batch_id(run_id: str, seq: int) -> str:
    return f"{run_id}-{seq:05d}"


def create_run(run_id: str, *, trigger: str, actor: str | None, cutoffs: dict[str, str],
               limit: int | None, settings: dict[str, Any], window_key: str | None = None,
               ) -> None:
    at = now()
    try:
        with transaction() as conn:
            conn.execute(insert(rotation_runs).values(
                id=run_id, window_key=window_key, trigger=trigger, actor=actor,
                status="planning", started_at=at, updated_at=at, cutoffs=cutoffs,
                job_limit=limit, settings=settings, planned_jobs=0, planned_bytes=0,
                planned_batches=0, jobs_done=0, bytes_done=0, batches_done=0,
                batches_failed=0))
    except IntegrityError:
        if window_key is None:
            raise
        raise WindowTaken(window_key) from None


def planned(run_id: str, jobs: int, size: int, batches: int) -> None:
    """The plan is made: totals known, batches about to be dispatched."""
    at = now()
    with transaction() as conn:
        conn.execute(update(rotation_runs).where(rotation_runs.c.id == run_id).values(
            planned_jobs=jobs, planned_bytes=size, planned_batches=batches, status="running",
            dispatched_at=at, updated_at=at))
        _finish_if_complete(conn, run_id)


def abort_run(run_id: str, message: str) -> None:
    """The run could not be planned or dispatched: it ends here, failed, saying why."""
    at = now()
    with transaction() as conn:
        conn.execute(update(rotation_runs).where(
            (rotation_runs.c.id == run_id) & rotation_runs.c.finished_at.is_(None)).values(
            status="failed", finished_at=at, updated_at=at,
            error={"kinds": {"error": 1}, "messages": [f"not dispatched: {message}"]}))


def get_run(run_id: str) -> Run:
    with transaction() as conn:
        row = conn.execute(select(rotation_runs).where(rotation_runs.c.id == run_id)).first()
    if row is None:
        from orchestrator.errors import JobNotFound

        raise JobNotFound(f"no rotation run {run_id}")
    return Run.from_row(row)


def list_runs(limit: int = 20) -> list[Run]:
    query = select(rotation_runs).order_by(rotation_runs.c.started_at.desc()).limit(limit)
    with transaction() as conn:
        return [Run.from_row(row) for row in conn.execute(query)]


def run_stopping(run_id: str) -> bool:
    with transaction() as conn:
        status = conn.execute(select(rotation_runs.c.status)
                              .where(rotation_runs.c.id == run_id)).scalar_one_or_none()
    return status in ("stopping", "stopped", "interrupted")


def begin_batch(run_id: str, seq: int, archive: str, jobs: int, size: int) -> str:
    """Record that this batch writes ``archive``; the batch's status if it existed already
    (a redelivered task): ``writing`` is redone, ``committed`` finished, the rest left alone."""
    at, ident = now(), batch_id(run_id, seq)
    with transaction() as conn:
        row = conn.execute(select(rotation_batches.c.status)
                           .where(rotation_batches.c.id == ident)).first()
        if row is None:
            conn.execute(insert(rotation_batches).values(
                id=ident, run_id=run_id, seq=seq, status="writing", archive_path=archive,
                jobs=jobs, bytes=size, started_at=at, updated_at=at, worker=worker_name()))
            return "writing"
        if row.status == "writing":
            conn.execute(update(rotation_batches).where(rotation_batches.c.id == ident)
                         .values(updated_at=at, worker=worker_name(), archive_path=archive))
        return str(row.status)


def commit_batch(conn: Connection, run_id: str, seq: int, sha256: str, jobs: int,
                 size: int) -> None:
    """Inside the rows' transaction: the batch is committed, its jobs and bytes counted."""
    at = now()
    conn.execute(update(rotation_batches).where(rotation_batches.c.id == batch_id(run_id, seq))
                 .values(status="committed", archive_sha256=sha256, jobs=jobs, bytes=size,
                         updated_at=at))
    _count(conn, run_id, at, jobs=jobs, size=size)


def finish_batch(run_id: str, seq: int) -> None:
    """The batch is done (folders removed, or nothing to do): counted once on its run, which
    ends when every batch is counted."""
    at = now()
    with transaction() as conn:
        changed = conn.execute(update(rotation_batches).where(
            (rotation_batches.c.id == batch_id(run_id, seq))
            & rotation_batches.c.status.in_(("writing", "committed")))
            .values(status="done", updated_at=at)).rowcount
        if changed:
            _count(conn, run_id, at, done=1)


def count_skipped(run_id: str) -> None:
    """A batch not started because its run was stopped: counted so that the run ends."""
    with transaction() as conn:
        _count(conn, run_id, now(), done=1)


def mark(ident: str, status: str, error: str | None = None) -> None:
    with transaction() as conn:
        conn.execute(update(rotation_batches).where(rotation_batches.c.id == ident)
                     .values(status=status, error=error, updated_at=now()))


def batch_failed(run_id: str, seq: int, kind: str, message: str, *,
                 stop: bool = False) -> str | None:
    """Record a batch's failure on its run, with its kind; ``stop`` skips the run's remaining
    batches. Returns the batch's status before: a ``writing`` batch becomes ``failed``; a
    ``committed`` one (its folders not all removed) keeps its status, so that the next run
    finishes the removal. Either is counted as failed on its run, once."""
    at, ident = now(), batch_id(run_id, seq)
    with transaction() as conn:
        before = conn.execute(select(rotation_batches.c.status)
                              .where(rotation_batches.c.id == ident)
                              .with_for_update()).scalar_one_or_none()
        conn.execute(update(rotation_batches).where(rotation_batches.c.id == ident).values(
            status="failed" if before == "writing" else rotation_batches.c.status,
            error=f"{kind}: {message}", updated_at=at))
        _add_problem(conn, run_id, kind, message)
        if stop:
            conn.execute(update(rotation_runs).where(rotation_runs.c.id == run_id).values(
                status=case((rotation_runs.c.status.in_(ACTIVE), "stopping"),
                            else_=rotation_runs.c.status)))
        if before in ("writing", "committed", None):
            _count(conn, run_id, at, failed=1)
    return before


def record_problem(run_id: str, kind: str, message: str) -> None:
    """A problem on the run that failed no batch (a job left out of its batch): shown with the
    run's other problems, counted by kind."""
    with transaction() as conn:
        _add_problem(conn, run_id, kind, message)


def _add_problem(conn: Connection, run_id: str, kind: str, message: str) -> None:
    current = conn.execute(select(rotation_runs.c.error).where(rotation_runs.c.id == run_id)
                           .with_for_update()).scalar_one_or_none() or {}
    kinds = dict(current.get("kinds", {}))
    kinds[kind] = kinds.get(kind, 0) + 1
    messages = [*current.get("messages", []), f"{kind}: {message}"][-MESSAGES_KEPT:]
    conn.execute(update(rotation_runs).where(rotation_runs.c.id == run_id)
                 .values(error={"kinds": kinds, "messages": messages}))


def _count(conn: Connection, run_id: str, at: datetime, *, jobs: int = 0, size: int = 0,
           done: int = 0, failed: int = 0) -> None:
    r = rotation_runs.c
    # A run already over (interrupted, then finished by a later run) keeps its final counts.
    conn.execute(update(rotation_runs).where((r.id == run_id) & r.finished_at.is_(None)).values(
        jobs_done=r.jobs_done + jobs, bytes_done=r.bytes_done + size,
        batches_done=r.batches_done + done, batches_failed=r.batches_failed + failed,
        updated_at=at))
    _finish_if_complete(conn, run_id)


def _finish_if_complete(conn: Connection, run_id: str) -> None:
    r = rotation_runs.c
    conn.execute(update(rotation_runs).where(
        (r.id == run_id) & r.finished_at.is_(None) & r.status.in_(("running", "stopping"))
        & (r.batches_done + r.batches_failed >= r.planned_batches)).values(
        status=case((r.status == "stopping", "stopped"), (r.batches_failed > 0, "failed"),
                    else_="completed"),
        finished_at=now()))


def batches_in(status: str, updated_before: datetime | None = None) -> list[Any]:
    """Journal rows in ``status`` (optionally not touched since ``updated_before``)."""
    query = select(rotation_batches).where(rotation_batches.c.status == status)
    if updated_before is not None:
        query = query.where(rotation_batches.c.updated_at < updated_before)
    with transaction() as conn:
        return list(conn.execute(query.order_by(rotation_batches.c.id)).all())


def interrupt_stale_runs(updated_before: datetime) -> int:
    """Runs that stopped moving (a worker lost its messages): marked interrupted."""
    r = rotation_runs.c
    with transaction() as conn:
        return conn.execute(update(rotation_runs).where(
            r.status.in_(ACTIVE) & r.finished_at.is_(None) & (r.updated_at < updated_before))
            .values(status="interrupted", finished_at=now())).rowcount


def reserve_bytes(run_id: str, count: int, rate: float, burst: float) -> float:
    """Book ``count`` bytes on the run's shared budget (a token bucket kept as the time up to
    which bytes are booked); returns when the booked slot starts. Unused time of an idle
    moment is credited up to ``burst`` seconds. A negative count gives bytes back."""
    moment = time.time()
    with transaction() as conn:
        booked = conn.execute(select(rotation_runs.c.budget_clock)
                              .where(rotation_runs.c.id == run_id).with_for_update()
                              ).scalar_one_or_none()
        start = max(booked or moment, moment - burst) if count > 0 else (booked or moment)
        conn.execute(update(rotation_runs).where(rotation_runs.c.id == run_id)
                     .values(budget_clock=start + count / rate))
    return start
