"""Where things live in the share, and the atomic moves between those places.

Moves inside the share are renames (atomic on one filesystem); outputs are written to a
temporary name and renamed into place, so a crash never leaves half a file under its final name.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import operator
import os
import stat
import uuid
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator import safeopen
from orchestrator.errors import DataError

#: Hidden files (also LibreOffice's ``.~lock.*#``), Office owner files (``~$*``), partial
#: downloads and uploads (browsers, WinSCP, rsync's dot-names), editor swap and backup files.
TEMPORARY_PATTERNS = (".*", "~$*", "~*", "*~", "*.tmp", "*.temp", "*.part", "*.partial",
                      "*.crdownload", "*.download", "*.filepart", "*.swp", "*.lck", "*.lock",
                      "thumbs.db", "desktop.ini")
FOLDERS = ("input", "processing", "completed", "failed", "duplicates", "archive")


#: What the share takes as input: price files (plain or gzip) and job files.
INPUT_SUFFIXES = (".csv", ".csv.gz", ".json")


def is_input(name: str) -> bool:
    return name.lower().endswith(INPUT_SUFFIXES)


def is_temporary(name: str) -> bool:
    """Names that are still being written or belong to an editor, never inputs.

    Case-insensitive: Windows clients write ``PRICES.TMP`` as often as ``prices.tmp``.
    """
    lowered = name.lower()
    return any(fnmatch.fnmatchcase(lowered, pattern) for pattern in TEMPORARY_PATTERNS)


def write_atomic(path: Path, data: str | bytes, mode: int | None = None) -> None:
    """``mode``: the permission bits the file gets (default: as the umask says)."""
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        with open(partial, "wb") as handle:
            if mode is not None:
                os.fchmod(handle.fileno(), mode)
            handle.write(data.encode() if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)  # a full disk leaves no debris, and no half file
        raise


def write_json(path: Path, payload: Any, mode: int | None = None) -> None:
    write_atomic(path, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n", mode)


def write_error(job_dir: Path, name: str, payload: Any) -> None:
    """error.json (or duplicate.json) beside a job's input, never more readable than that input:
    the reason may quote a line of it."""
    write_json(job_dir / name, payload, input_mode(job_dir))


def input_mode(job_dir: Path) -> int | None:
    """The permission bits every regular file in ``job_dir/input`` allows (owner read/write
    kept); None when there is none."""
    modes = []
    with suppress(OSError):
        for entry in os.scandir(job_dir / "input"):
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(st.st_mode):
                modes.append(stat.S_IMODE(st.st_mode))
    return functools.reduce(operator.and_, modes, 0o777) | 0o600 if modes else None


@dataclass(frozen=True)
class Share:
    root: Path

    @property
    def input(self) -> Path:
        return self.root / "input"

    @property
    def processing(self) -> Path:
        return self.root / "processing"

    @property
    def completed(self) -> Path:
        return self.root / "completed"

    @property
    def failed(self) -> Path:
        return self.root / "failed"

    @property
    def duplicates(self) -> Path:
        return self.root / "duplicates"

    @property
    def archive(self) -> Path:
        return self.root / "archive"

    def ensure(self) -> Share:
        for name in FOLDERS:
            (self.root / name).mkdir(parents=True, exist_ok=True)
        return self

    def job_dir(self, job_id: str, folder: str = "processing") -> Path:
        return self.root / folder / job_id

    def locate(self, job_id: str) -> Path | None:
        """The folder that holds the job now, wherever its state put it."""
        for folder in ("processing", "completed", "failed", "duplicates"):
            path = self.job_dir(job_id, folder)
            if path.is_dir():
                return path
        return None

    def claim_input(self, source: Path, job_id: str) -> Path:
        """Rename ``source`` into ``processing/<job_id>/input/``; the rename decides who owns it.

        Raises FileNotFoundError when another claimer was first.
        """
        target_dir = self.job_dir(job_id) / "input"
        target_dir.mkdir(parents=True, exist_ok=True)
        target = target_dir / source.name
        try:
            os.rename(source, target)
        except FileNotFoundError:
            # Lost the race: leave no empty job folder behind.
            for folder in (target_dir, target_dir.parent):
                with suppress(OSError):
                    folder.rmdir()
            raise
        return target

    def move_job(self, job_id: str, folder: str) -> Path:
        """Move the job folder to ``folder``; a repeat (redelivery) finds it there and is fine."""
        target = self.job_dir(job_id, folder)
        current = self.locate(job_id)
        if current == target:
            return target
        if current is None:
            raise FileNotFoundError(f"job folder {job_id} is in no share folder")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(current, target)
        return target

    def inputs_of(self, job_dir: Path) -> list[Path]:
        folder = job_dir / "input"
        return sorted(folder.iterdir()) if folder.is_dir() else []

    def resolve_inside(self, base: Path, relative: str, *, file: str, field: str) -> Path:
        """``relative`` from the folder ``base``: a regular file inside the share, reached
        without a symbolic link (orchestrator/safeopen.py), or DataError saying why not.

        Resolved by its text: a ``..`` may climb within the share, never out of it."""
        if os.path.isabs(relative):
            raise DataError(f"{field} must be a path relative to the job file, got absolute "
                            f"{relative!r}", file=file)
        candidate = Path(os.path.normpath(os.path.join(os.path.realpath(base), relative)))
        if safeopen.inside(self.root, candidate) is None:
            raise DataError(f"{field} {relative!r} is a path outside the share", file=file)
        try:
            safeopen.check(self.root, candidate)
        except FileNotFoundError:
            raise DataError(f"{field} {relative!r} does not exist in the share",
                            file=file) from None
        except safeopen.Refused as refused:
            raise DataError(f"{field} {relative!r} is refused: {refused.reason}",
                            file=file) from None
        return candidate
