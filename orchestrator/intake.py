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
orchestrator/watch/repair.py.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.errors import DataError, PipelineError, TransientError
from orchestrator.jobspec import make_params, read_job_file, wants_force
from orchestrator.paths import Share, write_json
from orchestrator.store import intake as records
from orchestrator.store.jobs import NewJob
from orchestrator.store.states import JobState
from orchestrator.watch import faults
from orchestrator.watch.claim import Claim
from orchestrator.watch.jobrefs import named_csv

if TYPE_CHECKING:
    from orchestrator.pipeline import Orchestrator

log = logging.getLogger(__name__)


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
    def __init__(self, orchestrator: Orchestrator) -> None:
        self.orch = orchestrator
        self.share = orchestrator.share
        self.settings = orchestrator.settings
        self._owned = (self.share.input.resolve(), self.share.processing.resolve())

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
        faults.point("after_claim")
        self._record(taken, batch, dedupe, outcome)
        faults.point("after_record")
        records.finish(self._set_aside(taken, outcome))
        self._publish(taken, outcome, batch, keep_unpublished)
        return outcome

    # -- claim ------------------------------------------------------------------------------

    def take(self, path: Path, overrides: dict[str, Any], batch: Batch | None,
             note: str | None = None) -> Taken:
        """Read what the file asks for, then claim it (and the CSV a job file names)."""
        job_id = uuid.uuid4().hex
        error: PipelineError | None = None
        csv_path, force = path, False
        if path.is_symlink():
            error = DataError("a symbolic link; inputs must be regular files", file=path.name)
        elif path.suffix.lower() == ".json":
            try:
                csv_path, params = read_job_file(path, self.share, self.settings)
                overrides = {**params.model_dump(exclude_unset=True), **overrides}
                force = wants_force(path)
            except DataError as bad:
                error, csv_path = _noted(bad, note), self._companion(path)
        claim = Claim(self.share.job_dir(job_id), batch_id=batch.id if batch else None)
        claimed = self._claim(claim, path)
        if csv_path != path:
            try:
                claimed = self._claim(claim, csv_path)
            except FileNotFoundError:
                error = DataError(f"its CSV {csv_path.name} was taken by another job before "
                                  "this job file could claim it", file=path.name)
        params: dict[str, Any] = overrides
        if error is None:
            try:
                params = make_params(self.settings, overrides, file=path.name).model_dump()
            except DataError as bad:
                error = bad
        digest, size = fingerprint(claimed, self.settings.max_input_bytes)
        job = NewJob(id=job_id, input_name=path.name, input_sha256=digest, input_size=size,
                     params=params, batch_id=batch.id if batch else None,
                     detail={"source": str(path)})
        return Taken(job, claim, error, force)

    def _claim(self, claim: Claim, source: Path) -> Path:
        return claim.take(source, claim.job_dir / "input" / source.name,
                          move=self._owns(source))

    def _companion(self, job_file: Path) -> Path:
        """The CSV a refused job file names, when it sits beside it in a folder we own: it
        goes with the job file into failed/, rather than run alone with default parameters."""
        csv = named_csv(job_file)
        if (csv is not None and csv.parent == job_file.parent and self._owns(csv)
                and csv.is_file() and not csv.is_symlink()):
            return csv
        return job_file

    def _owns(self, source: Path) -> bool:
        """Files in input/ (or a batch folder claimed into processing/) are moved; the rest of
        the share, and files outside it, are the user's: copied, left where they are."""
        parent = source.parent.resolve()
        return any(parent == root or parent.is_relative_to(root) for root in self._owned)

    # -- record -----------------------------------------------------------------------------

    def _record(self, taken: list[Taken], batch: Batch | None, dedupe: bool,
                outcome: Outcome) -> None:
        refused = {t.job.id: {**t.error.to_dict(), "step": None}
                   for t in taken if t.error is not None}
        try:
            outcome.duplicates = records.record(
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
        """Refused inputs to failed/ (with error.json), duplicates to duplicates/ (with a note
        naming the original job); returns their reasons, for their rows to end next."""
        ended: dict[str, dict[str, Any]] = {}
        for t in taken:
            if t.error is not None:
                ended[t.job.id] = {**t.error.to_dict(), "step": None}
            elif t.job.id in outcome.duplicates:
                ended[t.job.id] = records.duplicate_error(outcome.duplicates[t.job.id])
            else:
                continue
            t.claim.done()
            set_aside(self.share, t.job.id, ended[t.job.id])
            log.info("%s not run (job %s): %s", t.job.input_name, t.job.id,
                     ended[t.job.id]["message"])
        return ended

    # -- publish ----------------------------------------------------------------------------

    def _publish(self, taken: list[Taken], outcome: Outcome, batch: Batch | None,
                 keep_unpublished: bool) -> None:
        good = set(outcome.published)
        claims = [t.claim for t in taken if t.job.id in good]
        try:
            self.orch._publish(outcome.published, batch.id if batch else None,
                               names={t.job.id: t.job.input_name for t in taken})
        except Exception as error:
            if not keep_unpublished:  # the user sees the error now: fail the jobs, keep files
                self._fail_unpublished(claims, error)
            raise TransientError(f"broker unavailable: {error}") from error
        faults.point("after_publish")
        for claim in claims:
            claim.done()

    def _fail_unpublished(self, claims: list[Claim], error: Exception) -> None:
        from orchestrator import lifecycle

        for claim in claims:
            claim.done()
            lifecycle.fail(self.share, claim.job_dir.name, None,
                           TransientError(f"could not publish to the broker: {error}"))


def set_aside(share: Share, job_id: str, reason: dict[str, Any]) -> None:
    """Put a job that will not run where its end says, with the reason beside its input:
    failed/<id>/error.json, or duplicates/<id>/duplicate.json."""
    duplicate = records.ending_of(reason) is JobState.CANCELLED
    folder = share.locate(job_id)
    if folder is None:
        return
    write_json(folder / ("duplicate.json" if duplicate else "error.json"), reason)
    share.move_job(job_id, "duplicates" if duplicate else "failed")


def _noted(error: DataError, note: str | None) -> DataError:
    if note is None:
        return error
    return type(error)(f"{error.reason} ({note})", file=error.file, row=error.row,
                       column=error.column)


def fingerprint(path: Path, limit: int | None = None) -> tuple[str, int]:
    """sha256 and size of a regular file; a link or special file is not read (no /dev/zero).

    A file that cannot be read, or is larger than ``limit`` (validate refuses it unread), gets a
    digest of its own (it matches nothing, so it is no one's duplicate): the job goes on and
    its first step reports why.
    """
    digest = hashlib.sha256()
    if path.is_symlink() or not path.is_file():
        return digest.hexdigest(), 0
    if limit is not None and (whole := path.stat().st_size) > limit:
        return uuid.uuid4().hex * 2, whole
    size = 0
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
    except OSError:
        return uuid.uuid4().hex * 2, size
    return digest.hexdigest(), size
