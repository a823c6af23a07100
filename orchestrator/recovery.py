"""Stuck-job recovery: a job whose step outlived its hard time limit has lost its task.

On the embedded broker a killed worker's messages are gone for good, so the status store is
what brings such jobs back: requeued from their current step while attempts remain, else failed.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from orchestrator import lifecycle
from orchestrator.errors import IllegalTransition, TransientError
from orchestrator.pipeline import Orchestrator
from orchestrator.store import jobs as store
from orchestrator.store.db import transaction
from orchestrator.store.states import JobState
from orchestrator.store.tables import jobs

GRACE_SECONDS = 30


def stuck_jobs(older_than: timedelta) -> list[store.Job]:
    cutoff = store.now() - older_than
    query = select(jobs).where((jobs.c.state == JobState.PROCESSING.value)
                               & (jobs.c.updated_at < cutoff))
    with transaction() as conn:
        return [store.Job.from_row(row) for row in conn.execute(query)]


def recover_stuck_jobs(orchestrator: Orchestrator | None = None) -> dict[str, int]:
    orchestrator = orchestrator or Orchestrator()
    limit = timedelta(seconds=orchestrator.settings.step_time_limit + GRACE_SECONDS)
    outcome = {"requeued": 0, "failed": 0}
    for job in stuck_jobs(limit):
        try:
            outcome[_recover(orchestrator, job)] += 1
        except IllegalTransition:
            continue  # it moved on while we looked
    return outcome


def _recover(orchestrator: Orchestrator, job: store.Job) -> str:
    step = job.step or "validate"
    if job.attempts > orchestrator.settings.max_retries:
        lifecycle.fail(orchestrator.share, job.id, step, TransientError(
            f"step {step} stopped responding {job.attempts} times; giving up"))
        return "failed"
    store.transition(job.id, JobState.QUEUED, sources={JobState.PROCESSING}, step=step,
                     from_step=step, detail=f"recovered: step {step} stopped responding")
    orchestrator.job_chain(job.id, job.batch_id, from_step=step,
                           run=job.attempts).apply_async()
    return "requeued"
