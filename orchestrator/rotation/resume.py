"""Finishing what an interrupted run left, from the journal (runs at the start of every run).

- ``committed`` batches: rows say archived, folders may remain. The archive is checked again
  (its sha256 against the journal) before any folder of its jobs is removed.
- ``writing`` batches older than a batch's time limit: their task is dead (the hard limit
  would have killed it), the rows never changed, so the archive is an orphan: deleted. Their
  jobs are still eligible and the new run archives them again.
- runs that stopped moving for that long: marked ``interrupted``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from orchestrator.errors import CorruptArchive
from orchestrator.paths import Share
from orchestrator.rotation import journal
from orchestrator.rotation.packing import discard, sha256_of
from orchestrator.rotation.removal import remove_job_folders
from orchestrator.settings import Settings
from orchestrator.store.db import transaction
from orchestrator.store.jobs import now
from orchestrator.store.states import JobState
from orchestrator.store.tables import jobs, rotation_batches

log = logging.getLogger(__name__)
GRACE_SECONDS = 60


@dataclass
class Resumed:
    finished_batches: int = 0
    folders_removed: int = 0
    orphans_deleted: int = 0
    damaged: int = 0
    runs_interrupted: int = 0


def stale_after(settings: Settings) -> timedelta:
    return timedelta(seconds=settings.rotation_time_limit + GRACE_SECONDS)


def finish_interrupted(settings: Settings, share: Share) -> Resumed:
    done = Resumed()
    for row in journal.batches_in("committed"):
        removed = finish_committed(share, row.run_id, row.seq, row.archive_path,
                                   row.archive_sha256)
        if removed is None:
            done.damaged += 1
        else:
            done.finished_batches += 1
            done.folders_removed += removed
    cutoff = now() - stale_after(settings)
    for row in journal.batches_in("writing", updated_before=cutoff):
        discard(share.root / row.archive_path)
        journal.mark(row.id, "abandoned", "its task died before the rows changed")
        done.orphans_deleted += 1
    done.runs_interrupted = journal.interrupt_stale_runs(cutoff)
    if any(vars(done).values()):
        log.warning("rotation: finished interrupted work: %s", vars(done))
    return done


def _verifies(share: Share, path: Path, sha256: str | None) -> bool:
    """The archive is there, read by the share's rules, with the sha256 it was verified with."""
    try:
        return sha256_of(path, share.root) == sha256
    except (FileNotFoundError, CorruptArchive):
        return False


def finish_committed(share: Share, run_id: str, seq: int, archive: str,
                     sha256: str | None = None) -> int | None:
    """Remove the remaining folders of a committed batch's jobs, after checking the archive.

    None (and nothing removed) when the archive is missing or changed: that needs a person.
    """
    ident = journal.batch_id(run_id, seq)
    if sha256 is None:
        with transaction() as conn:
            sha256 = conn.execute(select(rotation_batches.c.archive_sha256)
                                  .where(rotation_batches.c.id == ident)).scalar()
    path = share.root / archive
    if not _verifies(share, path, sha256):
        log.error("rotation: archive %s is missing or changed since it was verified; the job "
                  "folders of its batch are kept", archive)
        journal.mark(ident, "committed", "archive missing or changed; folders kept")
        return None
    with transaction() as conn:
        ids = conn.execute(select(jobs.c.id).where(
            (jobs.c.archive_path == archive) & (jobs.c.state == JobState.ARCHIVED.value))
        ).scalars().all()
    removed = remove_job_folders(share, ids)
    journal.finish_batch(run_id, seq)
    return removed
