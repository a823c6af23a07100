"""Crashes at the two dangerous moments, a corrupt archive, a full disk, a refused folder:
after each, the promises hold and the next run completes the work."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from cli.exit_codes import Exit
from cli.rotate import exit_code
from orchestrator import faults
from orchestrator.rotation import journal, packing, resume
from orchestrator.store import jobs as store
from tests.rotation_support import check_consistent, days_ago, make_jobs, run_rotation, tree


class Crash(BaseException):
    """A crash: not an Exception, so no handler on the way cleans up after it."""


def crash_at(monkeypatch: pytest.MonkeyPatch, point: str, times: int = 1) -> list[Path]:
    """Make ``faults.reach`` crash the first ``times`` times ``point`` is reached."""
    reached: list[Path] = []

    def reach(name: str, path: str | Path = "") -> None:
        if name == point and len(reached) < times:
            reached.append(Path(path))
            raise Crash(name)

    monkeypatch.setattr(faults, "reach", reach)
    return reached


def old_jobs(share, count: int = 30) -> list[str]:  # type: ignore[no-untyped-def]
    return make_jobs(share.share, count, finished_at=days_ago(40))


def test_crash_after_the_archive_is_written_before_the_rows_change(share, monkeypatch):
    # Given old jobs, and a crash right after the first archive is written and verified
    ids = old_jobs(share)
    reached = crash_at(monkeypatch, faults.ROTATION_AFTER_ARCHIVE)
    with pytest.raises(Crash):
        run_rotation(share.settings)
    # Then the archive exists, but no row changed and every folder is still there
    assert reached[0].is_file()
    assert check_consistent(share.share) == {"completed": 30}
    # When the next run goes (no crash this time)
    monkeypatch.undo()
    run = run_rotation(share.settings)
    # Then it completes: all archived, folders gone, archives verified
    assert run.status == "completed" and run.jobs_done == 30
    assert check_consistent(share.share) == {"archived": 30}
    assert {store.get_job(j).archive_path for j in ids} != {str(reached[0])}
    # And once that batch's time limit has passed, the orphan archive is deleted
    monkeypatch.setattr(resume, "stale_after", lambda settings: timedelta(0))
    run_rotation(share.settings)
    assert not reached[0].exists()
    assert check_consistent(share.share) == {"archived": 30}


def test_crash_after_the_rows_change_before_the_folders_are_removed(share, monkeypatch):
    # Given old jobs, and a crash right after the rows moved to archived
    ids = old_jobs(share)
    crash_at(monkeypatch, faults.ROTATION_AFTER_ROWS)
    with pytest.raises(Crash):
        run_rotation(share.settings)
    # Then the rows say archived, their archive verifies, and the folders are still there
    assert check_consistent(share.share, pending_removal=True) == {"archived": 30}
    assert all((share.share / "completed" / j).is_dir() for j in ids)
    assert [b.status for b in journal.batches_in("committed")] == ["committed"]
    # When the next run goes
    monkeypatch.undo()
    run_rotation(share.settings)
    # Then the folders are removed and the journal says done
    assert check_consistent(share.share) == {"archived": 30}
    assert not any((share.share / "completed" / j).exists() for j in ids)
    assert journal.batches_in("committed") == []


def test_a_real_process_killed_after_the_rows_change(share):
    # Given a rotation in its own process that dies (exit 137, no cleanup) after the rows change
    old_jobs(share, 10)
    script = ("from orchestrator.settings import get_settings\n"
              "from tests.rotation_support import run_rotation\n"
              "run_rotation(get_settings())\n")
    died = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parents[3],
                          env={**share.environ(), "PIPELINE_FAULTS": "exit:rotation.after_rows"},
                          capture_output=True, text=True, timeout=120)
    assert died.returncode == faults.CRASH_EXIT, died.stderr
    assert check_consistent(share.share, pending_removal=True) == {"archived": 10}
    # When the next run goes, then everything holds
    run_rotation(share.settings)
    assert check_consistent(share.share) == {"archived": 10}


def test_a_corrupt_archive_fails_verification_and_nothing_is_deleted(share, monkeypatch):
    # Given old jobs, and a byte of the archive flipped between writing and reading back
    old_jobs(share)
    before = tree(share.share / "completed")

    def corrupt(name: str, path: str | Path = "") -> None:
        if name == faults.ROTATION_ARCHIVE_WRITTEN:
            data = bytearray(Path(path).read_bytes())
            data[len(data) // 2] ^= 0xFF
            Path(path).write_bytes(bytes(data))

    monkeypatch.setattr(faults, "reach", corrupt)
    # When a run goes
    run = run_rotation(share.settings)
    # Then the batch failed as corrupt, the run exits 13, nothing was archived or deleted
    assert run.status == "failed" and run.kinds() == {"corrupt": 1}
    assert exit_code(run) is Exit.CORRUPT_ARCHIVE
    assert check_consistent(share.share) == {"completed": 30}
    assert tree(share.share / "completed") == before
    assert not [p for p in (share.share / "archive").rglob("*") if p.is_file()]


def test_storage_full_stops_the_run_and_deletes_nothing(share, monkeypatch):
    # Given jobs of three different days, and archive storage that is full
    for days in (40, 41, 42):
        make_jobs(share.share, 5, finished_at=days_ago(days))

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "archive/x.tar.gz")

    monkeypatch.setattr(packing, "write_archive", full)
    monkeypatch.setattr("orchestrator.rotation.batch.write_archive", full)
    # When a run goes
    run = run_rotation(share.settings)
    # Then the first batch failed, the rest skipped, the run stopped; exit 11; all kept
    assert run.status == "stopped" and run.kinds() == {"storage_full": 1}
    assert run.batches_failed == 1 and run.batches_done == 2 and run.jobs_done == 0
    assert exit_code(run) is Exit.STORAGE_FULL
    assert check_consistent(share.share) == {"completed": 15}


def test_a_folder_that_cannot_be_read_fails_its_batch_only(share, monkeypatch):
    # Given jobs of two days, one job folder unreadable
    bad = make_jobs(share.share, 5, finished_at=days_ago(40))[2]
    good = make_jobs(share.share, 5, finished_at=days_ago(41))
    real_open = os.open  # rotation opens the share's files by descriptor (safeopen)

    def guarded_open(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if bad in str(path):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("os.open", guarded_open)
    # When a run goes
    run = run_rotation(share.settings)
    monkeypatch.undo()
    # Then that day's batch failed as a permission problem (exit 12), the other day rotated
    assert run.status == "failed" and run.kinds() == {"permission": 1}
    assert exit_code(run) is Exit.PERMISSION
    assert bad in run.error["messages"][0]
    assert {store.get_job(j).state.value for j in good} == {"archived"}
    assert check_consistent(share.share) == {"archived": 5, "completed": 5}
