"""Stuck-job recovery (beat): jobs whose step or message was lost are moved on.

- processing, lease expired: a live step never outlives its hard time limit and renews its
  lease with progress, so an expired lease means the step's worker is gone. Requeued from
  that step while attempts remain, else failed, with an event saying why.
- queued on the embedded broker, message gone: a worker killed with SIGKILL takes the
  messages it had fetched with it (the files are removed on fetch; nothing is acked). Redis and
  RabbitMQ redeliver by themselves, so this check runs only for the embedded broker.
"""

from __future__ import annotations

import json
import logging
from contextlib import suppress
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from orchestrator import lifecycle
from orchestrator.errors import IllegalTransition, TransientError
from orchestrator.pipeline import Orchestrator
from orchestrator.store import jobs as store
from orchestrator.store.db import transaction
from orchestrator.store.states import JobState
from orchestrator.store.tables import jobs

log = logging.getLogger(__name__)


def expired_leases() -> list[store.Job]:
    query = select(jobs).where((jobs.c.state == JobState.PROCESSING.value)
                               & (jobs.c.lease_until < store.now()))
    with transaction() as conn:
        return [store.Job.from_row(row) for row in conn.execute(query)]


def queued_before(age: timedelta) -> list[store.Job]:
    query = select(jobs).where((jobs.c.state == JobState.QUEUED.value)
                               & (jobs.c.updated_at < store.now() - age))
    with transaction() as conn:
        return [store.Job.from_row(row) for row in conn.execute(query)]


def jobs_with_messages(queue_folder: Path) -> set[str]:
    """Job ids named by the task messages waiting in the embedded broker's folder."""
    found = set()
    for path in list(queue_folder.glob("*.msg")) + list(queue_folder.glob(".claimed/*.msg")):
        try:
            task_id = json.loads(path.read_bytes())["headers"]["id"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        found.add(str(task_id).split(".", 1)[0])
    return found


def recover_stuck_jobs(orchestrator: Orchestrator | None = None) -> dict[str, int]:
    orchestrator = orchestrator or Orchestrator()
    outcome = {"requeued": 0, "failed": 0, "republished": 0}
    for job in expired_leases():
        with suppress(IllegalTransition):  # it moved on while we looked
            outcome[_recover_step(orchestrator, job)] += 1
    if orchestrator.settings.embedded_broker:
        for job in _lost_messages(orchestrator):
            with suppress(IllegalTransition):
                outcome[_republish(orchestrator, job)] += 1
    return outcome


def _recover_step(orchestrator: Orchestrator, job: store.Job) -> str:
    step = job.step or "validate"
    if job.attempts > orchestrator.settings.max_retries:
        lifecycle.fail(orchestrator.share, job.id, step, TransientError(
            f"step {step} lost its worker {job.attempts} times; giving up"))
        return "failed"
    store.transition(job.id, JobState.QUEUED, sources={JobState.PROCESSING}, step=step,
                     from_step=step, where=jobs.c.lease_until < store.now(),
                     detail=f"recovered: the lease of step {step} expired (worker lost)")
    orchestrator.job_chain(job.id, job.batch_id, from_step=step, run=job.attempts).apply_async()
    return "requeued"


def _lost_messages(orchestrator: Orchestrator) -> list[store.Job]:
    waiting = queued_before(timedelta(seconds=orchestrator.settings.requeue_lost_after))
    if not waiting:
        return []
    present = jobs_with_messages(orchestrator.settings.broker_folder / "queue")
    return [job for job in waiting if job.id not in present]


def _republish(orchestrator: Orchestrator, job: store.Job) -> str:
    step = job.step or "validate"
    store.transition(job.id, JobState.QUEUED, sources={JobState.QUEUED}, step=job.step,
                     where=jobs.c.updated_at == job.updated_at,  # a second beat finds it moved
                     detail=f"recovered: the message for step {step} was lost; published again")
    orchestrator.job_chain(job.id, job.batch_id, from_step=step,
                           run=job.attempts + 1).apply_async()
    return "republished"
