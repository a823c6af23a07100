"""Recording new jobs in bulk: one transaction for a group of claimed inputs, with the
duplicate check; ending the ones that will not run once their folders are put away.

A job that will run is recorded ``queued`` (pending, then queued: two events) before its chain
is published; whether the publish happened is told by the claim marker, which is removed only
after it (orchestrator/intake/watch/claim.py, orchestrator/reconciler/claims.py). A refused
input or a
duplicate is recorded ``pending`` with its reason, and ends failed or cancelled after its
folder moved (files first, then the row, as everywhere).

The duplicate check runs in the transaction that inserts the row. On SQLite that transaction
holds the write lock from BEGIN, on PostgreSQL an advisory lock keyed by the content hash is
taken first, so two watchers recording the same content at once cannot both miss each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, insert, select, text, update

from orchestrator.store.db import transaction
from orchestrator.store.jobs import NewJob, _event, create_queued, insert_jobs, now
from orchestrator.store.states import JobState
from orchestrator.store.tables import batches, job_events, jobs

S = JobState
#: Jobs that count as "already ran" for the duplicate check: a failed or cancelled job's input
#: dropped again is how a user runs it again, so those do not count.
COUNTED = (S.PENDING, S.QUEUED, S.PROCESSING, S.COMPLETED, S.ARCHIVED)
CHUNK = 500


@dataclass(frozen=True)
class Original:
    """The earlier job a duplicate repeats."""

    id: str
    input_name: str
    state: str
    created_at: datetime


def record(new: Sequence[NewJob], *, batch_name: str | None = None,
           dedupe_window: float | None = None, refused: dict[str, dict[str, Any]] | None = None,
           forced: set[str] | None = None) -> dict[str, Original]:
    """Insert ``new`` as queued in one transaction; return the duplicates found.

    ``refused`` maps job ids to an error payload (their input cannot be used). With
    ``dedupe_window`` (seconds), a job whose input hash and parameters match a counted job
    created within the window is a duplicate, returned with the original it repeats;
    ``forced`` ids are not checked. Refused and duplicate rows stay pending with their reason
    in ``error``: :func:`finish` ends them once their folders are put away.
    """
    refused = refused or {}
    unchecked = set(refused) | (forced or set())
    at = now()
    alone = (len(new) == 1 and batch_name is None and new[0].id not in refused
             and (not dedupe_window or new[0].id in unchecked))
    if alone and create_queued(new[0], at):  # one submission, nothing to check: one statement
        return {}
    duplicates: dict[str, Original] = {}
    with transaction() as conn:
        if batch_name is not None and new:
            conn.execute(insert(batches).values(id=new[0].batch_id, name=batch_name,
                                                size=len(new), created_at=at))
        if not dedupe_window:  # nothing to check row by row: all rows in two statements
            insert_jobs(conn, new, at, reasons=refused)
            return duplicates
        _lock_contents(conn, [job for job in new if job.id not in unchecked])
        for job in new:
            original = None
            if dedupe_window and job.id not in unchecked:
                original = _original(conn, job, at - timedelta(seconds=dedupe_window))
            reason = refused.get(job.id)
            if original is not None:
                duplicates[job.id] = original
                reason = duplicate_error(original)
            insert_jobs(conn, [job], at, reasons={job.id: reason} if reason else None)
    return duplicates


def ending_of(error: dict[str, Any] | None) -> JobState:
    """The state a refused (failed) or duplicate (cancelled) job ends in."""
    return S.CANCELLED if (error or {}).get("type") == "DuplicateInput" else S.FAILED


def finish(ended: dict[str, dict[str, Any]]) -> None:
    """One transaction: ``ended`` jobs (id -> reason) leave pending for failed or cancelled."""
    if not ended:
        return
    at = now()
    with transaction() as conn:
        for job_id, error in ended.items():
            target = ending_of(error)
            done = conn.execute(update(jobs).where(
                (jobs.c.id == job_id) & (jobs.c.state == S.PENDING.value)).values(
                state=target.value, error=error, updated_at=at, finished_at=at))
            if done.rowcount:
                _event(conn, job_id, S.PENDING, target, step=None, attempt=0,
                       detail=str(error.get("message")), at=at)


def duplicate_error(original: Original) -> dict[str, Any]:
    when = original.created_at.isoformat(timespec="seconds")
    return {"type": "DuplicateInput", "step": None, "original_job": original.id,
            "message": f"same content and parameters as job {original.id} "
                       f"({original.input_name}, {original.state}, submitted {when}); not run. "
                       "Submit with --force, or set \"force\": true in a job file, to run it"}


def _lock_contents(conn: Connection, checked: Sequence[NewJob]) -> None:
    """PostgreSQL: serialize the duplicate checks of one content across sessions, with an
    advisory lock per content hash held to the commit. Taken all at once in ascending order:
    two submitters each holding one group's locks and waiting for the other's would deadlock
    if each took them in its own files' order."""
    if conn.dialect.name != "postgresql":
        return  # SQLite: the transaction holds the write lock from BEGIN
    for key in sorted({int(job.input_sha256[:15], 16) for job in checked}):
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def _original(conn: Connection, job: NewJob, since: datetime) -> Original | None:
    rows = conn.execute(
        select(jobs.c.id, jobs.c.input_name, jobs.c.state, jobs.c.created_at, jobs.c.params,
               jobs.c.error)
        .where((jobs.c.input_sha256 == job.input_sha256) & (jobs.c.created_at >= since)
               & jobs.c.state.in_([s.value for s in COUNTED]))
        .order_by(jobs.c.created_at)).all()
    for row in rows:
        if row.state == S.PENDING.value and row.error:
            continue  # about to end as refused or a duplicate itself
        if row.params == job.params:
            created = row.created_at if row.created_at.tzinfo else row.created_at.replace(
                tzinfo=since.tzinfo)
            return Original(row.id, row.input_name, row.state, created)
    return None


def count_waiting() -> int:
    """Jobs recorded but not yet started: what back-pressure limits."""
    query = select(func.count()).select_from(jobs).where(
        jobs.c.state.in_([S.PENDING.value, S.QUEUED.value]))
    with transaction() as conn:
        return int(conn.execute(query).scalar_one())


@dataclass(frozen=True)
class PendingJob:
    id: str
    batch_id: str | None
    updated_at: datetime
    owner: str | None
    error: dict[str, Any] | None


def pending_jobs() -> list[PendingJob]:
    """Every pending job, with the process that recorded it (its first event's worker)."""
    first = (select(job_events.c.worker).where((job_events.c.job_id == jobs.c.id)
                                               & job_events.c.from_state.is_(None))
             .limit(1).scalar_subquery())
    query = select(jobs.c.id, jobs.c.batch_id, jobs.c.updated_at, jobs.c.error,
                   first.label("owner")).where(jobs.c.state == S.PENDING.value)
    with transaction() as conn:
        rows = conn.execute(query).all()
    return [PendingJob(r.id, r.batch_id, r.updated_at if r.updated_at.tzinfo
                       else r.updated_at.replace(tzinfo=now().tzinfo), r.owner, r.error)
            for r in rows]


def known_ids(job_ids: Sequence[str]) -> set[str]:
    """Which of ``job_ids`` have a row."""
    found: set[str] = set()
    for start in range(0, len(job_ids), CHUNK):
        chunk = list(job_ids[start:start + CHUNK])
        with transaction() as conn:
            found.update(conn.execute(select(jobs.c.id).where(jobs.c.id.in_(chunk))).scalars())
    return found


def batch_exists(batch_id: str) -> bool:
    with transaction() as conn:
        return conn.execute(select(batches.c.id).where(batches.c.id == batch_id)).first() \
            is not None
