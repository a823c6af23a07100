"""Reads the API needs beyond the store's own functions: a page of jobs (keyset) and a batch.

``store.list_jobs`` returns the newest N; a client walking thousands of jobs needs a stable
cursor instead of an offset (rows arrive while it reads, and an OFFSET re-reads every skipped
row). Ordered by (created_at, id) descending, the cursor is the last row's pair: a batch's
jobs share one created_at, so the id breaks ties. Rows become :class:`store.Job` as
everywhere.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, or_, select

from orchestrator.errors import JobNotFound, ParameterError
from orchestrator.store import jobs as store
from orchestrator.store.db import statement
from orchestrator.store.states import JobState
from orchestrator.store.tables import batches, jobs


@dataclass(frozen=True)
class Filters:
    state: JobState | None = None
    batch_id: str | None = None
    since: datetime | None = None
    input_name: str | None = None


def encode_cursor(job: store.Job) -> str:
    raw = json.dumps([job.created_at.astimezone(UTC).isoformat(), job.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        at, job_id = json.loads(raw)
        return datetime.fromisoformat(at), str(job_id)
    except (ValueError, TypeError) as error:
        raise ParameterError(f"field 'cursor': not a cursor this API gave ({error})") from None


def page_of_jobs(filters: Filters, limit: int, cursor: str | None,
                 ) -> tuple[list[store.Job], str | None]:
    """Up to ``limit`` jobs, newest first, after ``cursor``; and the next page's cursor."""
    query = select(jobs).order_by(jobs.c.created_at.desc(), jobs.c.id.desc()).limit(limit + 1)
    if filters.state is not None:
        query = query.where(jobs.c.state == filters.state.value)
    if filters.batch_id is not None:
        query = query.where(jobs.c.batch_id == filters.batch_id)
    if filters.since is not None:
        query = query.where(jobs.c.created_at >= _utc(filters.since))
    if filters.input_name is not None:
        query = query.where(jobs.c.input_name == filters.input_name)
    if cursor is not None:
        at, job_id = decode_cursor(cursor)
        query = query.where(or_(jobs.c.created_at < _utc(at),
                                and_(jobs.c.created_at == _utc(at), jobs.c.id < job_id)))
    with statement() as conn:
        found = [store.Job.from_row(row) for row in conn.execute(query)]
    more = len(found) > limit
    found = found[:limit]
    return found, encode_cursor(found[-1]) if more and found else None


def _utc(at: datetime) -> datetime:
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC)


def get_batch(batch_id: str) -> dict[str, Any]:
    """A batch's row (name, size, when, summary once every job ended); JobNotFound if none."""
    with statement() as conn:
        row = conn.execute(select(batches).where(batches.c.id == batch_id)).first()
    if row is None:
        raise JobNotFound(f"no batch {batch_id}")
    data = dict(row._mapping)
    for key in ("created_at", "finished_at"):
        value = data[key]
        if value is not None:
            data[key] = _utc(value).isoformat()
    return data
