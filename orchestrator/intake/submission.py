"""From dropped files to published jobs: claim, record, publish, in that order.

    claim    marker, then rename into processing/<job_id>/input/ (a copy for files outside
             the share's input folders); the rename decides between two watchers
    record   one transaction for the group: rows ``queued``; refused inputs and duplicates
             ``pending`` with their reason
    set aside  refused inputs to failed/, duplicates to duplicates/; then their rows end
             (failed, cancelled) in one transaction
    publish  each job's chain, or one chord for a batch; then the claim markers go

A crash between two of these leaves a state the watcher's repair recognizes: a claim marker
without a row (undo the claim: the files go back to input/), a marker beside a row never
started (publish it), a pending row with a reason (finish setting it aside). See
orchestrator/reconciler/claims.py.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from orchestrator import faults, safeopen
from orchestrator.errors import DataError, PipelineError, TransientError
from orchestrator.intake.watch.claim import BATCH_PREFIX, Claim
from orchestrator.intake.watch.jobrefs import named_csv
from orchestrator.jobs import lifecycle
from orchestrator.jobs.jobspec import make_params, read_job_file, wants_force
from orchestrator.paths import Share
from orchestrator.safeopen import Refused
from orchestrator.settings import Settings
from orchestrator.store import intake as records
from orchestrator.store.jobs import NewJob

log = logging.getLogger(__name__)


class Publisher(Protocol):
    """What the intake needs of the orchestrator (orchestrator/jobs/canvas.py): where the share is,
    the settings, and a way to publish recorded jobs. A protocol rather than an import, so the
    orchestrator can use the intake without the two importing each other."""

    share: Share
    settings: Settings

    def publish(self, job_ids: list[str], batch_id: str | None, run: int = 0,
                names: dict[str, str] | None = None) -> None: ...


@dataclass
class Taken:
    """One claimed input, ready to be recorded."""

    job: NewJob
    claim: Claim
    error: PipelineError | None = None
    force: bool = False


@dataclass
class Outcome:
    """What one submission made: job ids in order, and which of them were duplicates."""

    job_ids: list[str] = field(default_factory=list)
    duplicates: dict[str, records.Original] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)
    lost: list[Path] = field(default_factory=list)

    @property
    def published(self) -> list[str]:
        skip = set(self.duplicates) | set(self.refused)
        return [j for j in self.job_ids if j not in skip]


@dataclass(frozen=True)
class Batch:
    id: str
    name: str


class Intake:
    def __init__(self, orchestrator: Publisher) -> None:
        self.orch = orchestrator
        self.share = orchestrator.share
        self.settings = orchestrator.settings

    def submit(self, paths: list[Path], overrides: dict[str, Any], *, batch: Batch | None = None,
               dedupe: bool = False, keep_unpublished: bool = False, lost_ok: bool = False,
               notes: dict[Path, str] | None = None) -> Outcome:
        """Claim, record, publish ``paths`` (each a CSV or a job file).

        ``lost_ok``: a file another claimer took first is skipped (the watcher), rather than
        raising FileNotFoundError (a user's ``pipeline submit``). ``keep_unpublished``: when the
        broker refuses, leave the jobs queued with their claim markers, for the repair to
        publish (the watcher), rather than failing them (a user's ``pipeline submit``, who sees
        the error at once).
        ``notes``: words added to the reason when that path's job is refused.
        """
        outcome = Outcome()
        taken: list[Taken] = []
        for path in paths:
            try:
                taken.append(self.take(path, overrides, batch, (notes or {}).get(path)))
            except FileNotFoundError:
                if not lost_ok:
                    raise
                outcome.lost.append(path)
        faults.reach(faults.INTAKE_AFTER_CLAIM)
        self._record(taken, batch, dedupe, outcome)
        faults.reach(faults.INTAKE_AFTER_RECORD)
        lifecycle.set_aside(self.share, self._set_aside(taken, outcome))
        self._publish(taken, outcome, batch, keep_unpublished)
        return outcome

    # -- claim ------------------------------------------------------------------------------

    def take(self, path: Path, overrides: dict[str, Any], batch: Batch | None,
             note: str | None = None) -> Taken:
        """Read what the file asks for, then claim it (and the CSV a job file names).

        ``path`` is the caller's (a command-line argument) or one the watcher found in input/;
        the CSV a job file names comes from the share and is held to its rules. Whatever is
        refused (a link, FIFO, hard link...) is claimed all the same when it is ours to move,
        so that it is set aside in failed/ with the reason, never read.
        """
        job_id = uuid.uuid4().hex
        error: PipelineError | None = None
        csv_path, force = path, False
        if path.suffix.lower() == ".json":
            try:
                csv_path, params = read_job_file(path, self.share, self.settings)
                overrides = {**params.model_dump(exclude_unset=True), **overrides}
                force = wants_force(path, self.share)
            except DataError as bad:
                error, csv_path = _noted(bad, note), self._companion(path)
        claim = Claim(self.share.job_dir(job_id), batch_id=batch.id if batch else None)
        claimed, error = self._claim_inputs(claim, path, csv_path, error)
        params: dict[str, Any] = overrides
        if error is None:
            try:
                params = make_params(self.settings, overrides, file=path.name).model_dump()
            except DataError as bad:
                error = bad
        digest, size = _EMPTY, 0
        if claimed is not None:
            try:
                digest, size = fingerprint(self.share.root, claimed,
                                           self.settings.max_input_bytes)
            except Refused as refused:
                error = error or refused
        job = NewJob(id=job_id, input_name=path.name, input_sha256=digest, input_size=size,
                     params=params, batch_id=batch.id if batch else None,
                     detail={"source": str(path)})
        return Taken(job, claim, error, force)

    def _claim_inputs(self, claim: Claim, path: Path, csv_path: Path,
                      error: PipelineError | None) -> tuple[Path | None, PipelineError | None]:
        """Claim the dropped file, then the CSV its job file names; the last one claimed (None:
        nothing could be), and the first error."""
        try:
            claimed = self._claim(claim, path, caller_named=True)
        except Refused as refused:  # a caller's file that cannot be copied: nothing claimed
            return None, error or refused
        if csv_path == path:
            return claimed, error
        try:
            return self._claim(claim, csv_path, job_file=path), error
        except FileNotFoundError:
            return claimed, DataError(f"its CSV {csv_path.name} was taken by another job "
                                      "before this job file could claim it", file=path.name)
        except Refused as refused:
            return claimed, error or DataError(f"input_file {csv_path.name!r} is refused: "
                                               f"{refused.reason}", file=path.name)

    def _claim(self, claim: Claim, source: Path, *, job_file: Path | None = None,
               caller_named: bool = False) -> Path:
        return claim.take(source, claim.job_dir / "input" / source.name,
                          move=self._owns(source, job_file), root=self.share.root,
                          caller_named=caller_named)

    def _companion(self, job_file: Path) -> Path:
        """The CSV a refused job file names, when it sits beside it in a folder we own: it
        goes with the job file into failed/, rather than run alone with default parameters."""
        csv = named_csv(job_file)
        if (csv is not None and csv.parent == job_file.parent and self._owns(csv, job_file)
                and csv.is_file() and not csv.is_symlink()):
            return csv
        return job_file

    def _owns(self, source: Path, job_file: Path | None = None) -> bool:
        """Which files are moved (renamed) into the job rather than copied: those dropped in
        input/, and those of a batch folder claimed into processing/ (a job file there may only
        take a CSV of its own batch folder). The rest of the share (another job's input, a
        result), and files outside it, are left where they are: copied."""
        names = safeopen.inside(self.share.root, source)
        if names is None or len(names) < 2:
            return False
        if names[0] == "input":
            return True
        if names[0] != "processing" or not names[1].startswith(BATCH_PREFIX):
            return False
        return job_file is None or (safeopen.inside(self.share.root, job_file) or ())[:2] \
            == names[:2]

    # -- record -----------------------------------------------------------------------------

    def _record(self, taken: list[Taken], batch: Batch | None, dedupe: bool,
                outcome: Outcome) -> None:
        refused = {t.job.id: {**t.error.to_dict(), "step": None}
                   for t in taken if t.error is not None}
        try:
            outcome.duplicates = lifecycle.create(
                [t.job for t in taken], batch_name=batch.name if batch else None,
                dedupe_window=self.settings.dedupe_window if dedupe else None,
                refused=refused, forced={t.job.id for t in taken if t.force})
        except Exception as error:
            for t in taken:  # no row: the files go back, to be taken again later
                t.claim.undo()
            raise TransientError(f"could not record the jobs: {error}") from error
        outcome.job_ids = [t.job.id for t in taken]
        outcome.refused = list(refused)

    def _set_aside(self, taken: list[Taken], outcome: Outcome) -> dict[str, dict[str, Any]]:
        """The reasons of refused inputs and duplicates (naming the original job), their claims
        done: the lifecycle sets them aside (orchestrator/jobs/lifecycle.py)."""
        ended: dict[str, dict[str, Any]] = {}
        for t in taken:
            if t.error is not None:
                ended[t.job.id] = {**t.error.to_dict(), "step": None}
            elif t.job.id in outcome.duplicates:
                ended[t.job.id] = records.duplicate_error(outcome.duplicates[t.job.id])
            else:
                continue
            t.claim.done()
            log.info("%s not run (job %s): %s", t.job.input_name, t.job.id,
                     ended[t.job.id]["message"])
        return ended

    # -- publish ----------------------------------------------------------------------------

    def _publish(self, taken: list[Taken], outcome: Outcome, batch: Batch | None,
                 keep_unpublished: bool) -> None:
        good = set(outcome.published)
        claims = [t.claim for t in taken if t.job.id in good]
        try:
            self.orch.publish(outcome.published, batch.id if batch else None,
                               names={t.job.id: t.job.input_name for t in taken})
        except Exception as error:
            if not keep_unpublished:  # the user sees the error now: fail the jobs, keep files
                self._fail_unpublished(claims, error)
            raise TransientError(f"broker unavailable: {error}") from error
        faults.reach(faults.INTAKE_AFTER_PUBLISH)
        for claim in claims:
            claim.done()

    def _fail_unpublished(self, claims: list[Claim], error: Exception) -> None:
        for claim in claims:
            claim.done()
            lifecycle.fail(self.share, claim.job_dir.name, None,
                           TransientError(f"could not publish to the broker: {error}"))


def _noted(error: DataError, note: str | None) -> DataError:
    if note is None:
        return error
    return type(error)(f"{error.reason} ({note})", file=error.file, row=error.row,
                       column=error.column)


_EMPTY = hashlib.sha256().hexdigest()


def fingerprint(root: Path, path: Path, limit: int | None = None) -> tuple[str, int]:
    """sha256 and size of a claimed input, read by the share's rules (orchestrator/safeopen.py):
    a link, FIFO, device or hard-linked file is Refused, never read (no /dev/zero, no secret).

    A file that cannot be read, or is larger than ``limit`` (validate refuses it unread), gets a
    digest of its own (it matches nothing, so it is no one's duplicate): the job goes on and
    its first step reports why.
    """
    try:
        with safeopen.open_file(root, path) as opened:
            if limit is not None and opened.st.st_size > limit:
                return uuid.uuid4().hex * 2, opened.st.st_size
            return _digest(opened.fd)
    except FileNotFoundError:
        return _EMPTY, 0


def _digest(fd: int) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    try:
        while chunk := os.read(fd, 1 << 20):
            digest.update(chunk)
            size += len(chunk)
    except OSError:
        return uuid.uuid4().hex * 2, size
    return digest.hexdigest(), size
