"""The Pipeline Orchestrator: turns files into jobs and jobs into Celery canvases.

    submit ─► chain(validate ─► optimize ─► archive)      one job; link_error records crashes
    batch  ─► chord(group(chain per file), summarize)     one batch
"""

from __future__ import annotations

import logging
import uuid
from contextlib import suppress
from pathlib import Path
from typing import Any

from celery import Celery, chain, chord
from celery.canvas import Signature

from orchestrator.errors import IllegalTransition
from orchestrator.jobs import lifecycle
from orchestrator.jobs.lifecycle import task_id
from orchestrator.paths import Share
from orchestrator.runtime.messages import addressed_to
from orchestrator.settings import Settings, get_settings
from orchestrator.store import jobs as store
from orchestrator.store.states import ACTIVE, JobState

log = logging.getLogger(__name__)


class Orchestrator:
    def __init__(self, settings: Settings | None = None, app: Celery | None = None) -> None:
        self.settings = settings or get_settings()
        self.share = Share(self.settings.share_dir).ensure()
        self._app = app

    @property
    def app(self) -> Celery:
        if self._app is None:
            from orchestrator.celery import app

            self._app = app
        return self._app

    # -- submitting -------------------------------------------------------------------------

    def submit(self, path: Path, params: dict[str, Any] | None = None, *,
               dedupe: bool = False) -> str:
        """Claim ``path`` (a CSV, or a JSON job file), record the job, publish its chain.

        ``dedupe``: the same input and parameters submitted within PIPELINE_DEDUPE_WINDOW is
        recorded as a cancelled duplicate, not run (``pipeline submit`` and the watcher ask
        for it; a job file's ``"force": true`` overrides it).
        """
        from orchestrator.intake.submission import Intake

        outcome = Intake(self).submit([Path(path)], params or {}, dedupe=dedupe)
        return outcome.job_ids[0]

    def submit_many(self, paths: list[Path], params: dict[str, Any] | None = None, *,
                    dedupe: bool = False) -> tuple[list[str], list[Path]]:
        """Each file its own job, submitted as one group (``pipeline submit a.csv b.csv``):
        every file claimed, all jobs recorded in one transaction, then each job's chain
        published. Returns the job ids in order, and the files that were gone by the time
        they were claimed (another watcher or submitter took them first).

        One transaction for the group rather than one per file: on PostgreSQL the per-file
        round trips were the submitter's largest cost after publishing (issue 18).
        """
        from orchestrator.intake.submission import Intake

        outcome = Intake(self).submit([Path(p) for p in paths], params or {}, dedupe=dedupe,
                                      lost_ok=True)
        return outcome.job_ids, outcome.lost

    def submit_batch(self, paths: list[Path], params: dict[str, Any] | None = None,
                     name: str | None = None, *, batch_id: str | None = None,
                     dedupe: bool = False) -> str:
        """Every file becomes a job of one batch: chord(group(chain per file), summarize)."""
        from orchestrator.intake.submission import Batch, Intake

        batch_id = batch_id or uuid.uuid4().hex
        batch = Batch(batch_id, name or batch_id)
        Intake(self).submit([Path(p) for p in paths], params or {}, batch=batch, dedupe=dedupe)
        return batch.id

    def publish(self, job_ids: list[str], batch_id: str | None, run: int = 0,
                 names: dict[str, str] | None = None) -> None:
        """Publish each job's chain, or one chord for a batch. Tasks name their input (Flower);
        ``names`` saves the query when the caller has them."""
        if names is None:
            names = store.input_names(job_ids)
        if batch_id is None:
            for job_id in job_ids:
                self.job_chain(job_id, run=run, input_name=names.get(job_id)).apply_async()
            return
        if not job_ids:
            from orchestrator.jobs.batches import summarize_batch

            summarize_batch(batch_id)
            return
        body = self.app.signature("pipeline.summarize", kwargs={"batch_id": batch_id})
        body.link_error(self.app.signature("pipeline.summarize_after_error"))
        header = [self.job_chain(j, batch_id=batch_id, run=run, input_name=names.get(j))
                  for j in job_ids]
        chord(header, body).apply_async()

    # -- canvases ---------------------------------------------------------------------------

    def job_chain(self, job_id: str, batch_id: str | None = None, from_step: str | None = None,
                  run: int = 0, input_name: str | None = None) -> Signature:
        """The chain of the job's steps (orchestrator/steps/registry.py) from ``from_step``
        (default: the first), crash-recorded by link_error."""
        registry = self.settings.steps
        steps = registry.from_step(from_step or registry.first)
        message = {"job_id": job_id, "batch_id": batch_id, "outcome": "ok", "metrics": {}}
        if input_name is None:
            input_name = store.input_names([job_id]).get(job_id, "")
        shown = describe(job_id, input_name, batch_id)  # what Flower and logs show as args
        sigs = [self.app.signature(f"pipeline.{step}", kwargs=addressed_to(step),  # signed
                                   task_id=task_id(job_id, step, run), argsrepr=shown)
                for step in steps]
        sigs[0] = sigs[0].clone(args=(message,))
        if batch_id is not None:
            sigs[-1].set(ignore_result=False)  # the chord counts the last step's results
        canvas = chain(*sigs)
        canvas.link_error(self.app.signature("pipeline.record_crash"))
        return canvas

    # -- operator actions -------------------------------------------------------------------

    def retry(self, job_id: str, from_step: str | None = None) -> store.Job:
        """Run a failed or cancelled job again, from ``from_step`` (default: the failed step)."""
        queued = lifecycle.retry(self.share, job_id, from_step)
        self.job_chain(job_id, queued.batch_id, from_step=queued.step,
                       run=queued.attempts).apply_async()
        return queued

    def cancel(self, job_id: str) -> store.Job:
        """Stop a job: mark it cancelled, revoke its queued tasks, terminate a running one."""
        job = lifecycle.cancel(self.share, job_id)
        self.app.control.revoke(lifecycle.task_ids(job), terminate=True, signal="SIGTERM")
        return job


def retry_batch(orchestrator: Orchestrator, batch_id: str) -> list[str]:
    """Retry every failed or cancelled job of a batch; the ids retried."""
    members = store.list_jobs(batch_id=batch_id, limit=1_000_000)
    ended = [j.id for j in members if j.state in (JobState.FAILED, JobState.CANCELLED)]
    for job_id in ended:
        orchestrator.retry(job_id)
    return ended


def cancel_batch(orchestrator: Orchestrator, batch_id: str) -> list[str]:
    """Cancel every job of a batch that has not ended; the ids cancelled."""
    members = store.list_jobs(batch_id=batch_id, limit=1_000_000)
    active = [j.id for j in members if j.state in ACTIVE]
    for job_id in active:
        with suppress(IllegalTransition):  # it ended while we went through the batch
            orchestrator.cancel(job_id)
    return active


def describe(job_id: str, input_name: str, batch_id: str | None) -> str:
    """A step task's arguments as people read them: the job and its input, not the message."""
    batch = f", batch={batch_id!r}" if batch_id else ""
    return f"(job={job_id!r}, input={input_name!r}{batch})"
