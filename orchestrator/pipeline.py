"""The Pipeline Orchestrator: turns files into jobs and jobs into Celery canvases.

    submit ─► chain(validate ─► optimize ─► archive)      one job; link_error records crashes
    batch  ─► chord(group(chain per file), summarize)     one batch
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celery import Celery, chain, chord
from celery.canvas import Signature

from orchestrator import lifecycle
from orchestrator.errors import DataError, IllegalTransition, PipelineError, TransientError
from orchestrator.jobspec import make_params, read_job_file
from orchestrator.paths import Share
from orchestrator.settings import Settings, get_settings
from orchestrator.store import jobs as store
from orchestrator.store.states import STEPS, JobState

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """A claimed input, recorded as a job; ``error`` when it cannot run at all."""

    job: store.NewJob
    error: PipelineError | None = None
    sources: list[Path] = field(default_factory=list)


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

    def submit(self, path: Path, params: dict[str, Any] | None = None) -> str:
        """Claim ``path`` (a CSV, or a JSON job file), record the job, publish its chain."""
        prepared = self._prepare(Path(path), params or {}, batch_id=None)
        store.create_jobs([prepared.job])
        self._start([prepared], batch_id=None)
        return prepared.job.id

    def submit_batch(self, paths: list[Path], params: dict[str, Any] | None = None,
                     name: str | None = None) -> str:
        """Every file becomes a job of one batch: chord(group(chain per file), summarize)."""
        batch_id = uuid.uuid4().hex
        prepared = [self._prepare(Path(p), params or {}, batch_id=batch_id) for p in paths]
        store.create_jobs([p.job for p in prepared], batch_name=name or batch_id)
        self._start(prepared, batch_id=batch_id)
        return batch_id

    def _prepare(self, path: Path, overrides: dict[str, Any], batch_id: str | None) -> Prepared:
        job_id = uuid.uuid4().hex
        error: PipelineError | None = None
        csv_path = path
        if path.is_symlink():
            error = DataError("a symbolic link; inputs must be regular files", file=path.name)
        elif path.suffix.lower() == ".json":
            try:
                csv_path, params = read_job_file(path, self.share, self.settings)
                overrides = {**params.model_dump(exclude_unset=True), **overrides}
            except DataError as bad:
                error, csv_path = bad, path
        claimed = [self._claim(p, job_id) for p in dict.fromkeys([path, csv_path])]
        if error is None:
            try:
                params_dict = make_params(self.settings, overrides, file=path.name).model_dump()
            except DataError as bad:
                error, params_dict = bad, overrides
        else:
            params_dict = overrides
        digest, size = _fingerprint(claimed[-1])
        job = store.NewJob(id=job_id, input_name=path.name, input_sha256=digest,
                           input_size=size, params=params_dict, batch_id=batch_id,
                           detail={"source": str(path)})
        return Prepared(job, error, claimed)

    def _claim(self, source: Path, job_id: str) -> Path:
        """Inputs dropped in input/ are renamed (the rename decides who owns them); files
        from elsewhere are copied, leaving the user's file where it was."""
        if source.parent.resolve() == self.share.input.resolve():
            return self.share.claim_input(source, job_id)
        target = self.share.job_dir(job_id) / "input" / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.part")
        shutil.copyfile(source, partial)
        partial.rename(target)
        return target

    def _start(self, prepared: list[Prepared], batch_id: str | None) -> None:
        for bad in (p for p in prepared if p.error is not None):
            lifecycle.fail(self.share, bad.job.id, None, bad.error)  # type: ignore[arg-type]
        good = [p.job.id for p in prepared if p.error is None]
        try:
            self._publish(good, batch_id)
        except Exception as error:  # the broker refused: fail the jobs, keep their files
            for job_id in good:
                lifecycle.fail(self.share, job_id, None,
                               TransientError(f"could not publish to the broker: {error}"))
            raise TransientError(f"broker unavailable: {error}") from error

    def _publish(self, job_ids: list[str], batch_id: str | None) -> None:
        if batch_id is None:
            for job_id in job_ids:
                self.job_chain(job_id).apply_async()
            return
        if not job_ids:
            from orchestrator.batches import summarize_batch

            summarize_batch(batch_id)
            return
        body = self.app.signature("pipeline.summarize", kwargs={"batch_id": batch_id})
        body.link_error(self.app.signature("pipeline.summarize_after_error"))
        header = [self.job_chain(j, batch_id=batch_id) for j in job_ids]
        chord(header, body).apply_async()

    # -- canvases ---------------------------------------------------------------------------

    def job_chain(self, job_id: str, batch_id: str | None = None, from_step: str = "validate",
                  run: int = 0) -> Signature:
        """chain(validate, optimize, archive) from ``from_step``, crash-recorded by link_error."""
        steps = STEPS[STEPS.index(from_step):]
        message = {"job_id": job_id, "batch_id": batch_id, "outcome": "ok", "metrics": {}}
        sigs = [self.app.signature(f"pipeline.{step}", task_id=task_id(job_id, step, run))
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
        job = store.get_job(job_id)
        step = from_step or _restart_step(self.share, job)
        folder = self.share.move_job(job_id, "processing")
        (folder / "error.json").unlink(missing_ok=True)
        queued = store.transition(job_id, JobState.QUEUED,
                                  sources={JobState.FAILED, JobState.CANCELLED}, step=None,
                                  detail=f"retry from {step}", error=None, finished_at=None)
        self.job_chain(job_id, job.batch_id, from_step=step, run=queued.attempts).apply_async()
        return queued

    def cancel(self, job_id: str) -> store.Job:
        """Stop a job: revoke its queued tasks, terminate a running one, mark it cancelled."""
        job = store.transition(job_id, JobState.CANCELLED,
                               sources={JobState.PENDING, JobState.QUEUED, JobState.PROCESSING},
                               detail="cancelled by an operator")
        ids = [task_id(job_id, s, n) for s in STEPS for n in range(job.attempts + 1)]
        self.app.control.revoke(ids, terminate=True, signal="SIGTERM")
        if self.share.locate(job_id) is not None:
            self.share.move_job(job_id, "failed")
        return job


def task_id(job_id: str, step: str, run: int) -> str:
    """Known task ids, so that cancel can revoke a job's tasks without a lookup."""
    return f"{job_id}.{step}.{run}"


def _restart_step(share: Share, job: store.Job) -> str:
    if job.state not in (JobState.FAILED, JobState.CANCELLED):
        raise IllegalTransition(f"job {job.id} is {job.state}; only failed or cancelled jobs "
                                "can be retried")
    step = (job.error or {}).get("step") or job.step or "validate"
    return step if step in STEPS else "validate"


def _fingerprint(path: Path) -> tuple[str, int]:
    """sha256 and size of a regular file; a link or special file is not read (no /dev/zero)."""
    digest = hashlib.sha256()
    if path.is_symlink() or not path.is_file():
        return digest.hexdigest(), 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest(), path.stat().st_size
