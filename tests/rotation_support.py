"""Old finished jobs made directly (rows + small folders), not through workers: for the
rotation tests and bench/rotation.py.

Rotation cuts its batches at UTC day boundaries, so old jobs laid out from "now minus N days"
cut differently depending on the hour the suite runs (after ~17:20 UTC, 100 jobs 4 minutes
apart no longer fit before midnight). Old jobs start at :func:`days_ago` instead: midnight,
whatever the time of day.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select

from orchestrator.store.db import transaction
from orchestrator.store.tables import job_events, jobs


def days_ago(days: int, now: datetime | None = None) -> datetime:
    """00:00 UTC of the day ``days`` days before ``now``'s day (default: the clock's now).

    Jobs laid out from there, less than a day's worth, fall on one day at any hour; they are
    between ``days`` and ``days + 1`` days old, so keep ``days`` a day clear of a retention.
    """
    at = (now or datetime.now(UTC)).astimezone(UTC)
    return at.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=days)


FOLDER_OF = {"completed": "completed", "failed": "failed", "cancelled": "failed"}
CHUNK = 2000


def _files(job_id: str, size: int) -> dict[str, bytes]:
    """A job folder's files, like the pipeline's, with content that differs per job."""
    seed = hashlib.sha256(job_id.encode()).hexdigest()
    weights = "ticker,weight\n" + "".join(f"T{seed[i:i + 3].upper()},0.{seed[i:i + 8]}\n"
                                          for i in range(0, 40, 4))
    report = json.dumps({"job_id": job_id, "holdings": 10, "note": seed}) + "\n"
    row = ",".join(str(int(seed[i:i + 4], 16) / 100) for i in range(0, 40, 4))
    prices = "date," + ",".join(f"T{i}" for i in range(10)) + "\n"
    rows = max(1, (size - len(weights) - len(report)) // (len(row) + 12))
    prices += "".join(f"2020-01-{(d % 28) + 1:02d},{row}\n" for d in range(rows))
    return {"weights.csv": weights.encode(), "report.json": report.encode(),
            "input/prices.csv": prices.encode()}


def _job_row(job_id: str, state: str, finished_at: datetime) -> dict[str, Any]:
    return {"id": job_id, "batch_id": None, "input_name": "prices.csv",
            "input_sha256": "ab" * 32, "input_size": 1234, "params": {"portfolio_size": 10},
            "state": state, "step": "archive", "progress": 100.0, "attempts": 1,
            "created_at": finished_at - timedelta(seconds=5), "updated_at": finished_at,
            "started_at": finished_at - timedelta(seconds=4), "finished_at": finished_at}


def make_jobs(share: Path, count: int, *, finished_at: datetime, state: str = "completed",
              spacing: timedelta = timedelta(seconds=1), size: int = 2000,
              folders: bool = True) -> list[str]:
    """``count`` jobs in ``state``, finished at ``finished_at`` + i × ``spacing``, each with a
    folder of three files (about ``size`` bytes) in completed/ or failed/."""
    ids: list[str] = []
    for start in range(0, count, CHUNK):
        chunk = [uuid.uuid4().hex for _ in range(start, min(count, start + CHUNK))]
        times = [finished_at + (start + i) * spacing for i in range(len(chunk))]
        with transaction() as conn:
            conn.execute(insert(jobs), [_job_row(j, state, t) for j, t in zip(chunk, times,
                                                                                  strict=True)])
            conn.execute(insert(job_events), [
                {"job_id": j, "at": t, "from_state": "processing", "to_state": state,
                 "step": "archive", "attempt": 1, "worker": "test", "detail": None}
                for j, t in zip(chunk, times, strict=True)])
        if folders:
            for job_id in chunk:
                write_folder(share / FOLDER_OF[state] / job_id, job_id, size)
        ids.extend(chunk)
    return ids


def write_folder(folder: Path, job_id: str, size: int) -> None:
    for name, data in _files(job_id, size).items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` (relative path -> sha256), for before/after comparisons."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def rows() -> Iterator[tuple[Any, ...]]:
    """Every job row and event, for before/after comparisons."""
    with transaction() as conn:
        yield from (tuple(r) for r in conn.execute(select(jobs).order_by(jobs.c.id)))
        yield from (tuple(r) for r in conn.execute(select(job_events).order_by(job_events.c.id)))


def run_rotation(settings: Any, **options: Any) -> Any:
    """A whole run in this process (the batches one after the other, no Celery)."""
    from orchestrator.rotation import runner

    return runner.start_run(settings, trigger="test", dispatch=runner.run_here, **options)


def check_consistent(share: Path, *, pending_removal: bool = False,
                     only: list[str] | None = None) -> dict[str, int]:
    """The rotation's promises, checked on every job: an archived row has its archive, whose
    sha256 is the recorded one and whose manifest lists the job, and (unless a removal is
    pending) no folder left; a job that is not archived still has its folder. Returns the
    count of jobs by state. ``only``: these jobs (a database shared with other tests)."""
    import json as _json

    from orchestrator.rotation.packing import manifest_path, sha256_of

    by_state: dict[str, int] = {}
    hashes: dict[Path, str] = {}
    listed: dict[Path, set[str]] = {}
    with transaction() as conn:
        found = conn.execute(select(jobs.c.id, jobs.c.state, jobs.c.archive_path,
                                    jobs.c.archive_sha256)).all()
    wanted = set(only) if only is not None else None
    for job in found:
        if wanted is not None and job.id not in wanted:
            continue
        by_state[job.state] = by_state.get(job.state, 0) + 1
        folder = share / FOLDER_OF.get(job.state, "completed") / job.id
        if job.state != "archived":
            assert folder.is_dir(), f"job {job.id} is {job.state} but has no folder"
            continue
        archive = share / job.archive_path
        assert archive.is_file(), f"job {job.id} archived in {archive}, which does not exist"
        if archive not in hashes:
            hashes[archive] = sha256_of(archive)
            manifest = _json.loads(manifest_path(archive).read_text())
            listed[archive] = {j["id"] for j in manifest["jobs"]}
        assert hashes[archive] == job.archive_sha256, f"{archive} changed"
        assert job.id in listed[archive]
        if not pending_removal:
            assert not any((share / f / job.id).exists() for f in ("completed", "failed"))
    return by_state
