"""Where things live in the share, and the atomic moves between those places.

Moves inside the share are renames (atomic on one filesystem); outputs are written to a
temporary name and renamed into place, so a crash never leaves half a file under its final name.
"""

from __future__ import annotations

import fnmatch
import json
import os
import uuid
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def write_atomic(path: Path, data: str | bytes) -> None:
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        with open(partial, "wb") as handle:
            handle.write(data.encode() if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)  # a full disk leaves no debris, and no half file
        raise


def write_json(path: Path, payload: Any) -> None:
    write_atomic(path, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


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
        """``relative`` resolved from ``base``; refused if it leaves the share (``..``, links)."""
        if os.path.isabs(relative):
            raise DataError(f"{field} must be a path relative to the job file, got absolute "
                            f"{relative!r}", file=file)
        candidate = (base / relative)
        resolved = candidate.resolve()
        if not resolved.is_relative_to(self.root.resolve()):
            kind = "a symlink that points" if candidate.is_symlink() else "a path"
            raise DataError(f"{field} {relative!r} is {kind} outside the share", file=file)
        if not resolved.is_file():
            raise DataError(f"{field} {relative!r} does not exist in the share", file=file)
        return resolved
