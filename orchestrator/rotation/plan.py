"""Which jobs rotate, and how they are cut into batches.

Eligible: a job in ``completed``, ``failed`` or ``cancelled`` whose ``finished_at`` is older
than that state's retention. Jobs are taken in (finished_at, id) order, a page at a time, each
page in its own short transaction (on SQLite every transaction holds the write lock, so a long
read would stall the pipeline's workers), and sizes are measured outside any transaction.

A batch is a key range: the (finished_at, id) of its first and last job, all finished on one
UTC day (so an archive folder ``YYYY/MM/DD`` holds the jobs that finished that day). Messages
stay small at any size, and a batch task that runs twice selects the same jobs, minus those
already archived.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, Row, or_, select

from orchestrator import safeopen
from orchestrator.paths import Share
from orchestrator.settings import Settings
from orchestrator.store.db import transaction
from orchestrator.store.jobs import _utc
from orchestrator.store.tables import jobs

PAGE = 1000
Key = tuple[str, str]  # (finished_at ISO, job id)


@dataclass(frozen=True)
class Candidate:
    id: str
    state: str
    finished_at: datetime
    folder: Path | None
    bytes: int

    @property
    def day(self) -> str:
        return self.finished_at.date().isoformat()

    @property
    def key(self) -> Key:
        return (self.finished_at.isoformat(), self.id)


@dataclass
class BatchSpec:
    """One batch: jobs from ``first`` to ``last`` (inclusive) that are still eligible."""

    seq: int
    day: str
    first: Key
    last: Key
    jobs: int
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "day": self.day, "first": list(self.first),
                "last": list(self.last), "jobs": self.jobs, "bytes": self.bytes}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BatchSpec:
        return cls(int(data["seq"]), str(data["day"]), tuple(data["first"]),  # type: ignore[arg-type]
                   tuple(data["last"]), int(data["jobs"]), int(data["bytes"]))  # type: ignore[arg-type]


def cutoffs_for(settings: Settings, at: datetime, older_than: timedelta | None = None,
                ) -> dict[str, datetime]:
    """Per state, the finish time before which a job rotates (``older_than`` overrides all)."""
    return {state: at - (older_than if older_than is not None else timedelta(days=days))
            for state, days in settings.retention().items()}


def encode_cutoffs(cutoffs: dict[str, datetime]) -> dict[str, str]:
    return {state: at.isoformat() for state, at in cutoffs.items()}


def decode_cutoffs(data: dict[str, str]) -> dict[str, datetime]:
    return {state: datetime.fromisoformat(at) for state, at in data.items()}


def eligible(cutoffs: dict[str, datetime]) -> ColumnElement[bool]:
    return or_(*[(jobs.c.state == state) & (jobs.c.finished_at < cutoff)
                 for state, cutoff in cutoffs.items()])


def after(key: tuple[datetime, str], inclusive: bool = False) -> ColumnElement[bool]:
    at, job_id = key
    tie = jobs.c.id >= job_id if inclusive else jobs.c.id > job_id
    return (jobs.c.finished_at > at) | ((jobs.c.finished_at == at) & tie)


def up_to(key: tuple[datetime, str]) -> ColumnElement[bool]:
    at, job_id = key
    return (jobs.c.finished_at < at) | ((jobs.c.finished_at == at) & (jobs.c.id <= job_id))


def decode_key(key: Iterable[str]) -> tuple[datetime, str]:
    at, job_id = key
    return datetime.fromisoformat(at), job_id


def eligible_rows(cutoffs: dict[str, datetime], limit: int | None = None,
                  page: int = PAGE) -> Iterator[Row[Any]]:
    """(id, state, finished_at) of eligible jobs, oldest first, read a page at a time."""
    key: tuple[datetime, str] | None = None
    remaining = limit
    while remaining is None or remaining > 0:
        size = page if remaining is None else min(page, remaining)
        query = select(jobs.c.id, jobs.c.state, jobs.c.finished_at).where(eligible(cutoffs))
        if key is not None:
            query = query.where(after(key))
        with transaction() as conn:
            rows = conn.execute(query.order_by(jobs.c.finished_at, jobs.c.id).limit(size)).all()
        yield from rows
        if len(rows) < size:
            return
        key = (rows[-1].finished_at, rows[-1].id)
        remaining = None if remaining is None else remaining - len(rows)


def folder_bytes(root: Path, folder: Path | None) -> int:
    """Bytes of the regular files under ``folder``, walked by descriptor from the share's
    ``root`` (orchestrator/safeopen.py): a folder swapped for a link is not followed, so the
    sizes of files outside the share never reach the plan. A folder the share's rules refuse
    counts 0; its batch leaves it out and says why."""
    if folder is None:
        return 0
    try:
        with safeopen.open_folder(root, folder) as opened:
            return _bytes_below(opened)
    except (safeopen.Refused, FileNotFoundError):
        return 0


def _bytes_below(folder: safeopen.Opened) -> int:
    total = 0
    with os.scandir(folder.fd) as entries:
        for entry in entries:
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
            elif stat.S_ISDIR(st.st_mode):
                below = safeopen.open_below(folder, entry.name, entry.name)
                try:
                    total += _bytes_below(below)
                finally:
                    os.close(below.fd)
    return total


def candidates(share: Share, cutoffs: dict[str, datetime], limit: int | None = None,
               ) -> Iterator[Candidate]:
    for row in eligible_rows(cutoffs, limit):
        folder = share.locate(row.id)
        yield Candidate(row.id, row.state, _utc(row.finished_at), folder,  # type: ignore[arg-type]
                        folder_bytes(share.root, folder))


def plan_batches(found: Iterable[Candidate], batch_size: int) -> Iterator[BatchSpec]:
    """Consecutive candidates cut into batches of at most ``batch_size``, one day each."""
    current: BatchSpec | None = None
    seq = 0
    for candidate in found:
        if current is not None and (current.jobs >= batch_size or current.day != candidate.day):
            yield current
            current, seq = None, seq + 1
        if current is None:
            current = BatchSpec(seq, candidate.day, candidate.key, candidate.key, 0, 0)
        current.last = candidate.key
        current.jobs += 1
        current.bytes += candidate.bytes
    if current is not None:
        yield current


def archive_relpath(day: str, run_id: str, seq: int) -> str:
    """Where a batch's archive goes, relative to the share root."""
    year, month, dom = day.split("-")
    return f"archive/{year}/{month}/{dom}/rot-{run_id}-{seq:05d}.tar.gz"
