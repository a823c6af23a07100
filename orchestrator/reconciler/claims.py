"""The reconciler's claims sweep: what a crash between claim and publish leaves behind, mended
when a watcher starts (and every minute after, for what another watcher left).

- A claim marker with no job row: the claimer died before recording the job. The claim is
  undone: the files go back where they were dropped (input/, or the batch's folder) and are
  picked up again as new drops. The job was never recorded, so it was never published.
- A claim marker beside a job row that never started (queued, no step, no attempt): the
  claimer died around the publish. The job is published again under new task ids, so that if
  the first publish did go out, the second copy of a step is refused while the first holds its
  lease. If the job's input is gone from processing/, it fails with that reason instead.
- A marker beside a job that did start: the publish happened; the marker goes.
- A batch folder claimed into ``processing/.batch-<id>/`` whose batch was never recorded goes
  back to input/ whole; one whose batch was recorded has its leftovers put away.
- A refused input or a duplicate recorded pending (its reason in the row): it is set aside and
  ended, as the claimer would have done.

Work of a process that may still be running is left alone: on this host, a process that is
alive (same pid and start time); on another host, anything younger than ``GRACE`` seconds.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from orchestrator.errors import DataError, IllegalTransition
from orchestrator.intake.watch.claim import BATCH_PREFIX, Claim, Owner, abandoned, read_marker
from orchestrator.jobs import lifecycle
from orchestrator.store import intake as records
from orchestrator.store.db import transaction
from orchestrator.store.states import JobState
from orchestrator.store.tables import jobs

if TYPE_CHECKING:
    from orchestrator.jobs.canvas import Orchestrator

log = logging.getLogger(__name__)

GRACE = 120.0
S = JobState


@dataclass
class Repaired:
    returned: list[Path] = field(default_factory=list)
    published: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    moved: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.returned or self.published or self.failed or self.moved)


def reconcile_claims(orch: Orchestrator, grace: float = GRACE) -> Repaired:
    done = Repaired()
    unpublished: dict[str | None, list[tuple[Any, Claim]]] = {}
    for job_dir, row in _rows_of(_job_dirs(orch.share.processing)).items():
        if row is None:
            done.returned += _undo_claim(job_dir, grace)
        elif row.state in (S.FAILED, S.CANCELLED):
            _put_away(orch, job_dir, row.id, row.error, done)
        else:
            claim = Claim.read(job_dir)
            if claim is not None and abandoned(claim.owner, claim.at, grace):
                _mend_recorded(row, claim, unpublished)
    for staging in orch.share.processing.glob(f"{BATCH_PREFIX}*"):
        done.returned += _mend_batch(orch, staging, grace)
    _end_set_aside(orch, grace, done)
    for batch_id, items in unpublished.items():
        _publish_again(orch, batch_id, items, done)
    if done:
        log.warning("repair after a crash: %d input(s) returned to input/, %d job(s) published, "
                    "%d failed (input gone), %d folder(s) put away", len(done.returned),
                    len(done.published), len(done.failed), len(done.moved))
    return done


def _job_dirs(processing: Path) -> list[Path]:
    try:
        return [p for p in processing.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except FileNotFoundError:
        return []


def _rows_of(job_dirs: list[Path]) -> dict[Path, Any]:
    by_id = {p.name: p for p in job_dirs}
    found: dict[str, Any] = {}
    ids = list(by_id)
    columns = (jobs.c.id, jobs.c.state, jobs.c.step, jobs.c.attempts, jobs.c.error,
               jobs.c.batch_id, jobs.c.updated_at)
    for start in range(0, len(ids), records.CHUNK):
        chunk = ids[start:start + records.CHUNK]
        with transaction() as conn:
            for row in conn.execute(select(*columns).where(jobs.c.id.in_(chunk))):
                found[row.id] = row
    return {path: found.get(job_id) for job_id, path in by_id.items()}


def _undo_claim(job_dir: Path, grace: float) -> list[Path]:
    claim = Claim.read(job_dir)
    if claim is None:
        if time.time() - _mtime(job_dir) > grace and not _holds_files(job_dir):
            shutil.rmtree(job_dir, ignore_errors=True)  # a claim that never got a file
        return []
    if not abandoned(claim.owner, claim.at, grace):
        return []
    returned = claim.undo()
    for path in returned:
        log.warning("claimed but never recorded (claimer %s/%s gone): %s returned to %s",
                    claim.owner.host, claim.owner.pid, path.name, path.parent)
    return returned


def _holds_files(folder: Path) -> bool:
    return any(p.is_file() or p.is_symlink() for p in folder.rglob("*"))


def _mend_recorded(row: Any, claim: Claim,
                   unpublished: dict[str | None, list[tuple[Any, Claim]]]) -> None:
    """A recorded job whose claimer died before removing its marker."""
    if row.state == S.QUEUED and row.step is None and row.attempts == 0:
        unpublished.setdefault(row.batch_id, []).append((row, claim))
    elif row.state != S.PENDING:
        claim.done()  # it started: the publish went out
    # pending: a refused input or a duplicate, finished by _end_set_aside


def _publish_again(orch: Orchestrator, batch_id: str | None, items: list[tuple[Any, Claim]],
                   done: Repaired) -> None:
    """Publish jobs recorded but maybe never published (a batch: one chord for all of them)."""
    ready = []
    for row, claim in items:
        if not orch.share.inputs_of(claim.job_dir):
            claim.done()
            lifecycle.fail(orch.share, row.id, None, DataError(
                f"its input vanished from processing/{row.id}/input before the job was "
                "published (a crash, or someone moved it)"))
            done.failed.append(row.id)
            continue
        try:  # compare-and-set: of two watchers repairing at once, one publishes
            lifecycle.requeue_unpublished(row)
        except IllegalTransition:
            continue
        ready.append((row, claim))
    if not ready:
        return
    orch.publish([row.id for row, _ in ready], batch_id, run=1)
    for row, claim in ready:
        claim.done()
        done.published.append(row.id)


def _end_set_aside(orch: Orchestrator, grace: float, done: Repaired) -> None:
    """Refused inputs and duplicates whose claimer died before ending them."""
    for job in records.pending_jobs():
        owner = Owner.parse(job.owner) or Owner("?", -1, None)
        if not job.error or not abandoned(owner, job.updated_at.timestamp(), grace):
            continue
        folder = orch.share.locate(job.id)
        if folder is not None:
            Claim(folder).done()
        lifecycle.set_aside(orch.share, {job.id: job.error})
        done.moved.append(job.id)


def _put_away(orch: Orchestrator, job_dir: Path, job_id: str,
              error: dict[str, object] | None, done: Repaired) -> None:
    """A job that ended while its folder stayed in processing/ (an operator's cancel cut
    short): move it where it belongs."""
    if _young(job_dir):
        return  # perhaps being moved right now by whoever ended it
    Claim(job_dir).done()
    lifecycle.put_away(orch.share, job_id, error)
    done.moved.append(job_id)


def _young(path: Path) -> bool:
    return time.time() - _mtime(path) < 60


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return time.time()


# -- batches ------------------------------------------------------------------------------------

def batch_marker(staging: Path) -> Path:
    return staging.with_name(staging.name + ".json")


def write_batch_marker(staging: Path, name: str) -> None:
    batch_marker(staging).write_text(json.dumps(
        {"owner": Owner.me().__dict__, "at": time.time(), "name": name}))


def _mend_batch(orch: Orchestrator, staging: Path, grace: float) -> list[Path]:
    if staging.suffix == ".json":
        if not staging.with_suffix("").exists() and time.time() - _mtime(staging) > grace:
            staging.unlink(missing_ok=True)  # died before the folder's rename
        return []
    try:
        data = json.loads(read_marker(batch_marker(staging)))
        owner, at, name = Owner(**data["owner"]), data["at"], data["name"]
    except (OSError, ValueError, KeyError, TypeError, DataError):
        owner, at, name = Owner("?", -1, None), _mtime(staging), staging.name
    if not abandoned(owner, at, grace):
        return []
    batch_id = staging.name.removeprefix(BATCH_PREFIX)
    if records.batch_exists(batch_id):
        finish_staging(orch, staging, batch_id)
        return []
    back = free_name(orch.share.input / name)
    os.rename(staging, back)
    batch_marker(staging).unlink(missing_ok=True)
    log.warning("batch folder claimed but never recorded: returned to %s", back)
    return [back]


def finish_staging(orch: Orchestrator, staging: Path, batch_id: str) -> None:
    """After a batch is recorded: what stayed in its folder (READY, ignored names) is kept
    beside the batch summary, and the claim marker goes."""
    (staging / "READY").unlink(missing_ok=True)
    if any(staging.iterdir()):
        target = orch.share.completed / "batches" / batch_id / "unused"
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(staging, target)
    else:
        staging.rmdir()
    batch_marker(staging).unlink(missing_ok=True)


def free_name(path: Path) -> Path:
    candidate, n = path, 0
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name} (returned {n})")
    return candidate
