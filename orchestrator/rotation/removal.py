"""Removing a job's original folder once its rows say archived.

The folder is first renamed to ``.<job>.removing`` (atomic), then deleted: a crash half-way
leaves a hidden name that no reader takes for a job, and that the next run deletes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from collections.abc import Iterable
from pathlib import Path

from orchestrator.paths import Share

#: Where a finished job's folder can be; never processing/.
FOLDERS = ("completed", "failed", "duplicates")


def _doomed(parent: Path, job_id: str) -> Path:
    return parent / f".{job_id}.removing"


def remove_job_folder(share: Share, job_id: str) -> bool:
    """Remove the job's folder wherever it is (and any half-removed leftover); True if any."""
    removed = False
    for name in FOLDERS:
        parent = share.root / name
        folder, doomed = parent / job_id, _doomed(parent, job_id)
        # A leftover of a crash half-way, or a link planted under the hidden name (which would
        # make the rename fail, every run): cleared before the rename.
        removed = _remove(doomed) or removed
        if folder.is_dir() and not folder.is_symlink():
            with contextlib.suppress(FileNotFoundError):  # another remover was first
                os.rename(folder, doomed)
            removed = _remove(doomed) or removed
    return removed


def _remove(doomed: Path) -> bool:
    """The hidden leftover removed; True if it was a folder. Anything else found under that
    name (a link planted there) loses its name only: a link is never followed, and what it
    points to is never touched."""
    try:
        st = os.lstat(doomed)
    except FileNotFoundError:
        return False
    if not stat.S_ISDIR(st.st_mode):
        doomed.unlink(missing_ok=True)
        return False
    shutil.rmtree(doomed, onerror=_gone_is_fine)  # rmtree itself never follows a link
    return True


def remove_job_folders(share: Share, job_ids: Iterable[str]) -> int:
    return sum(remove_job_folder(share, job_id) for job_id in job_ids)


def _gone_is_fine(function: object, path: str, exc_info: tuple[type, BaseException, object],
                  ) -> None:
    # Two removers racing on one leftover: what the other removed first is not an error.
    if not isinstance(exc_info[1], FileNotFoundError):
        raise exc_info[1]
