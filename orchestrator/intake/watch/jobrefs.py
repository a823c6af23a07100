"""Which CSV a job file names, read early and leniently, so the watcher can wait for it.

Full validation (parameters, the path staying inside the share, links) happens when the job
file is submitted (orchestrator/jobs/jobspec.py). Here the watcher only needs to know the CSV a job
file is about, even before the job file itself has settled, so that the CSV is kept for the job
file rather than run alone with default parameters.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from orchestrator import safeopen
from orchestrator.errors import DataError

MAX_JOB_FILE = 1 << 20


def named_csv(job_file: Path) -> Path | None:
    """The path ``input_file`` names, relative to the job file, normalized without following
    links; None when the file is not (yet) a JSON object naming a relative path. The job file
    is read by the share's rules (orchestrator/safeopen.py: its own folder as the boundary), so
    a FIFO or a link swapped in after the watcher's look is never read."""
    try:
        raw = json.loads(safeopen.read_bounded(job_file.parent, job_file, MAX_JOB_FILE))
    except (OSError, ValueError, RecursionError, DataError):  # DataError: safeopen refused it
        return None
    target = raw.get("input_file") if isinstance(raw, dict) else None
    if not isinstance(target, str) or not target or os.path.isabs(target):
        return None
    return Path(os.path.normpath(job_file.parent / target))


@dataclass
class JobRef:
    """A job file seen in input/: the CSV it names and since when it has been waiting."""

    csv: Path | None
    first_seen: float
    key: tuple[int, int]


def refresh(path: Path, st: os.stat_result, now: float, old: JobRef | None) -> JobRef:
    """Re-read the job file only when it changed since the last look."""
    key = (st.st_size, st.st_mtime_ns)
    if old is not None and old.key == key:
        return old
    first = old.first_seen if old is not None else now
    readable = stat.S_ISREG(st.st_mode) and st.st_size <= MAX_JOB_FILE  # never /dev/zero
    return JobRef(named_csv(path) if readable else None, first, key)


def batch_members(folder: Path) -> list[Path]:
    """The job files and CSVs of a batch folder. A CSV named by a job file beside it goes with
    that job file, not as a job of its own; READY and temporary names are not members."""
    from orchestrator.paths import is_input, is_temporary

    names = sorted(p for p in folder.iterdir() if p.name != "READY"
                   and not is_temporary(p.name) and is_input(p.name)
                   and (p.is_file() or p.is_symlink()))
    named = {named_csv(p) for p in names if p.suffix.lower() == ".json"
             and p.is_file() and not p.is_symlink()}
    return [p for p in names if p not in named]
