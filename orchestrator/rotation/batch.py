"""One batch, all or nothing: archive written and verified → rows in one transaction →
originals removed. See the package docstring for why this order survives a crash."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from orchestrator import faults
from orchestrator.errors import (
    CorruptArchive,
    IllegalTransition,
    PipelineError,
    StorageFull,
    StoragePermission,
    TransientError,
)
from orchestrator.jobs import lifecycle
from orchestrator.paths import Share, write_json
from orchestrator.rotation import journal
from orchestrator.rotation.failures import classify_os_error, kind_of
from orchestrator.rotation.packing import (
    Source,
    Written,
    discard,
    expected_members,
    fsync_dir,
    manifest_path,
    verify_archive,
    write_archive,
)
from orchestrator.rotation.plan import (
    BatchSpec,
    after,
    archive_relpath,
    decode_key,
    eligible,
    up_to,
)
from orchestrator.rotation.removal import remove_job_folders
from orchestrator.rotation.resume import finish_committed
from orchestrator.rotation.throttle import BURST_SECONDS, Throttle
from orchestrator.settings import Settings
from orchestrator.store import jobs as store
from orchestrator.store.db import transaction
from orchestrator.store.states import JobState
from orchestrator.store.tables import jobs

log = logging.getLogger(__name__)
Progress = Callable[[dict[str, Any]], None]
HANDLED = (StorageFull, StoragePermission, CorruptArchive, TransientError)


@dataclass
class Outcome:
    run_id: str
    seq: int
    status: str  # archived | empty | skipped | already | failed
    jobs: int = 0
    bytes: int = 0
    archive: str | None = None
    sha256: str | None = None
    kind: str | None = None
    message: str | None = None
    refused: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Batch:
    run_id: str
    spec: BatchSpec
    archive: str
    settings: Settings
    share: Share
    throttle: Throttle
    progress: Progress | None


def run_batch(run_id: str, cutoffs: dict[str, datetime], spec: BatchSpec, settings: Settings,
              *, rate: float | None = None, progress: Progress | None = None) -> Outcome:
    """Rotate the jobs of ``spec`` that are still eligible. Safe to run again (redelivery).

    ``rate``: the run's bytes-per-second budget, shared with its other batches (None: none).
    """
    share = Share(settings.share_dir)
    archive = archive_relpath(spec.day, run_id, spec.seq)
    if journal.run_stopping(run_id):
        journal.count_skipped(run_id)
        return Outcome(run_id, spec.seq, "skipped", message="the run was stopped")
    status = journal.begin_batch(run_id, spec.seq, archive, spec.jobs, spec.bytes)
    if status == "committed":  # a redelivery after a crash between rows and removal

        finish_committed(share, run_id, spec.seq, archive)
        return Outcome(run_id, spec.seq, "already", archive=archive)
    if status != "writing":
        return Outcome(run_id, spec.seq, "already", archive=archive, message=status)
    # Credit for idle budget up to one batch's worth: the time this batch spends verifying,
    # committing and removing (no reads) is made up by its next reads, so the run's average
    # is the budget, and it never runs more than one batch ahead of it.
    burst = max(BURST_SECONDS, spec.bytes / rate) if rate else BURST_SECONDS
    throttle = Throttle(rate, burst=burst, reserve=(lambda n: journal.reserve_bytes(
        run_id, n, rate, burst)) if rate else None)
    batch = _Batch(run_id, spec, archive, settings, share, throttle, progress)
    try:
        return _rotate(batch, cutoffs)
    finally:
        throttle.close()


def _rotate(batch: _Batch, cutoffs: dict[str, datetime]) -> Outcome:
    for _attempt in range(2):  # a job that changed state meanwhile: once more without it
        sources = select_sources(batch.share, cutoffs, batch.spec)
        if not sources:
            journal.finish_batch(batch.run_id, batch.spec.seq)
            return Outcome(batch.run_id, batch.spec.seq, "empty")
        try:
            written = _pack(batch, sources)
        except HANDLED as error:
            return _failed(batch, error)
        if not written.jobs:  # every job refused: no archive of nothing
            discard(batch.share.root / batch.archive)
            _refused(batch, written)
            journal.finish_batch(batch.run_id, batch.spec.seq)
            return Outcome(batch.run_id, batch.spec.seq, "empty",
                           refused=len(written.refused))
        faults.reach(faults.ROTATION_AFTER_ARCHIVE, batch.share.root / batch.archive)
        try:
            _commit(batch, written)
        except IllegalTransition as error:
            log.info("rotation batch %s: %s; redoing it", batch.archive, error)
            discard(batch.share.root / batch.archive)
            continue
        faults.reach(faults.ROTATION_AFTER_ROWS, batch.share.root / batch.archive)
        _refused(batch, written)
        _report(batch, "removing", len(written.jobs), written.bytes)
        remove_job_folders(batch.share, [job.id for job in written.jobs])
        journal.finish_batch(batch.run_id, batch.spec.seq)
        return Outcome(batch.run_id, batch.spec.seq, "archived", len(written.jobs),
                       written.bytes, batch.archive, written.sha256,
                       refused=len(written.refused))
    return _failed(batch, TransientError("jobs kept changing state during the batch"))


def select_sources(share: Share, cutoffs: dict[str, datetime], spec: BatchSpec) -> list[Source]:
    """The jobs of the batch's key range that are still eligible, with their folders."""
    query = (select(jobs.c.id, jobs.c.state, jobs.c.finished_at)
             .where(eligible(cutoffs) & after(decode_key(spec.first), inclusive=True)
                    & up_to(decode_key(spec.last)))
             .order_by(jobs.c.finished_at, jobs.c.id))
    with transaction() as conn:
        rows = conn.execute(query).all()
    return [Source(row.id, row.state, store._utc(row.finished_at).isoformat(),  # type: ignore[union-attr]
                   share.locate(row.id)) for row in rows]


def _pack(batch: _Batch, sources: list[Source]) -> Written:
    """Write, read back and put in place the archive and its manifest; nothing else changes."""
    target = batch.share.root / batch.archive
    header = {"archive": batch.archive, "run_id": batch.run_id, "seq": batch.spec.seq,
              "day": batch.spec.day, "created_at": store.now().isoformat()}
    try:
        written = write_archive(
            target, sources, header, root=batch.share.root,
            level=batch.settings.rotation_compress_level,
            throttle=batch.throttle,
            progress=lambda n, size: _report(batch, "packing", n, size, len(sources)))
        faults.reach(faults.ROTATION_ARCHIVE_WRITTEN, written.part)
        _report(batch, "verifying", len(sources), written.bytes, len(sources))
        verify_archive(written.part, written.sha256, expected_members(written.jobs),
                       root=batch.share.root)
        os.replace(written.part, target)
        write_json(manifest_path(target), {**written.manifest, "sha256": written.sha256,
                                           "size": written.size})
        fsync_dir(target.parent)
    except OSError as error:
        discard(target)
        raise classify_os_error(error, batch.archive) from error
    except CorruptArchive:
        discard(target)
        raise
    return written


def _commit(batch: _Batch, written: Written) -> None:
    """Every job of the batch to archived, and the journal, in one transaction."""
    _report(batch, "committing", len(written.jobs), written.bytes)
    with transaction() as conn:
        for job in written.jobs:
            detail = (f"archived to {batch.archive} (sha256 {written.sha256[:16]}…, "
                      f"{len(job.files)} files, {job.bytes} bytes; run {batch.run_id})")
            lifecycle.archived(conn, job.id, JobState(job.state), detail,
                               archive_path=batch.archive, archive_sha256=written.sha256,
                               finished_at=datetime.fromisoformat(job.finished_at))
        journal.commit_batch(conn, batch.run_id, batch.spec.seq, written.sha256,
                             len(written.jobs), written.bytes)


def _refused(batch: _Batch, written: Written) -> None:
    """Jobs the share's rules kept out of the batch: each a problem on the run, their rows and
    folders as they were (a person looks; the next run tries them again)."""
    for refusal in written.refused:
        log.warning("rotation batch %s: %s", batch.archive, refusal.message)
        journal.record_problem(batch.run_id, "refused", refusal.message)


def _failed(batch: _Batch, error: PipelineError) -> Outcome:
    kind = kind_of(error)
    log.error("rotation batch %s failed (%s): %s; nothing was deleted", batch.archive, kind,
              error)
    journal.batch_failed(batch.run_id, batch.spec.seq, kind, str(error),
                         stop=isinstance(error, StorageFull))
    return Outcome(batch.run_id, batch.spec.seq, "failed", kind=kind, message=str(error))


def _report(batch: _Batch, phase: str, jobs_done: int, bytes_done: int,
            jobs_total: int | None = None) -> None:
    if batch.progress is not None:
        batch.progress({"run_id": batch.run_id, "seq": batch.spec.seq, "phase": phase,
                        "archive": batch.archive, "jobs_done": jobs_done,
                        "jobs_total": jobs_total or batch.spec.jobs, "bytes_done": bytes_done,
                        "bytes_total": batch.spec.bytes})
