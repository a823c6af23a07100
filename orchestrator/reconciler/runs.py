"""The reconciler's runs sweep (beat): jobs whose step or message was lost are moved on.

- processing, lease expired: a live step never outlives its hard time limit and renews its
  lease with progress, so an expired lease means the step's worker is gone. Requeued from
  that step while attempts remain, else failed, with an event saying why.
- queued for longer than ``requeue_lost_after``, message gone: published again as a new run
  of the job's chain (task ids ``<job>.<step>.<run>``; the row names the run, so a late
  original is refused by :func:`orchestrator.jobs.lifecycle.begin_step`). Messages get lost on
  every broker: the embedded one loses what a SIGKILLed worker had fetched; Redis loses a
  message published just before it stopped (acknowledged, yet not in its AOF: issue 13 item 4)
  and everything on a restart without persistence. Where the messages can be seen (the embedded
  broker's folder; Redis's queue lists and its unacked hash) a job is republished only when no
  message names it. RabbitMQ's queues cannot be read without consuming them, so a job queued
  for that long is republished once; if its original turns up after all, it is refused.
"""

from __future__ import annotations

import json
import logging
from contextlib import suppress
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from orchestrator.errors import IllegalTransition
from orchestrator.jobs import lifecycle
from orchestrator.jobs.canvas import Orchestrator
from orchestrator.jobs.lifecycle import REPUBLISHED
from orchestrator.runtime import redis_broker
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


def reconcile_runs(orchestrator: Orchestrator | None = None) -> dict[str, int]:
    orchestrator = orchestrator or Orchestrator()
    outcome = {"requeued": 0, "failed": 0, "republished": 0}
    for job in expired_leases():
        with suppress(IllegalTransition):  # it moved on while we looked
            outcome[_recover_step(orchestrator, job)] += 1
    for job in _lost_messages(orchestrator):
        with suppress(IllegalTransition):
            outcome[_republish(orchestrator, job)] += 1
    return outcome


def _recover_step(orchestrator: Orchestrator, job: store.Job) -> str:
    queued, run = lifecycle.requeue_abandoned(job, orchestrator.settings.max_retries)
    if queued is None:
        return "failed"
    orchestrator.job_chain(job.id, job.batch_id, from_step=queued.step, run=run).apply_async()
    return "requeued"


def _lost_messages(orchestrator: Orchestrator) -> list[store.Job]:
    waiting = queued_before(timedelta(seconds=orchestrator.settings.requeue_lost_after))
    if not waiting:
        return []
    present = messages_present(orchestrator)
    if present is None:  # cannot look (RabbitMQ): once per job
        return [job for job in waiting if not _republished_already(job)]
    return [job for job in waiting if job.id not in present]


def messages_present(orchestrator: Orchestrator) -> set[str] | None:
    """Ids of the jobs some broker message names; None where the broker cannot be read."""
    settings = orchestrator.settings
    if settings.embedded_broker:
        return jobs_with_messages(settings.broker_folder / "queue")
    if settings.broker.startswith(("redis://", "rediss://")):
        ids = redis_broker.task_ids(orchestrator.app, settings.steps.all_queues)
        return {task.split(".", 1)[0] for task in ids}
    return None


def _republished_already(job: store.Job) -> bool:
    last = store.history(job.id)[-1:]
    return bool(last) and (last[0].detail or "").startswith(REPUBLISHED)


def _republish(orchestrator: Orchestrator, job: store.Job) -> str:
    queued, run = lifecycle.requeue_lost_message(job)
    if queued is None:
        return "failed"
    orchestrator.job_chain(job.id, job.batch_id, from_step=queued.step, run=run).apply_async()
    return "republished"
