"""The second retention (``PIPELINE_HISTORY_RETENTION_DAYS``, off unless set): history events
of archived jobs older than that are deleted, except each job's move to ``archived`` (which
says where its files are); and the result backend's expired entries are cleaned up.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select

from orchestrator.store.db import transaction
from orchestrator.store.jobs import now
from orchestrator.store.states import JobState
from orchestrator.store.tables import job_events, jobs

log = logging.getLogger(__name__)
PAGE = 500


def prune_history(days: int) -> int:
    """Delete old events of archived jobs, a page of jobs per transaction; the count deleted."""
    cutoff = now() - timedelta(days=days)
    deleted, last = 0, ""
    while True:
        with transaction() as conn:
            ids = conn.execute(select(jobs.c.id).where(
                (jobs.c.state == JobState.ARCHIVED.value) & (jobs.c.id > last))
                .order_by(jobs.c.id).limit(PAGE)).scalars().all()
            if not ids:
                return deleted
            deleted += conn.execute(delete(job_events).where(
                job_events.c.job_id.in_(ids) & (job_events.c.at < cutoff)
                & (job_events.c.to_state != JobState.ARCHIVED.value))).rowcount
        last = ids[-1]


def prune_results(app: Any) -> None:
    """Expired result-backend entries (file and database backends; Redis expires its own)."""
    cleanup = getattr(app.backend, "cleanup", None)
    if callable(cleanup):
        cleanup()
