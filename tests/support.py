"""Small helpers the integration tests share."""

from __future__ import annotations

import time
from pathlib import Path

from orchestrator.store import jobs as store
from orchestrator.store.states import FINAL


def wait_final(job_ids: list[str], timeout: float = 90) -> list[store.Job]:
    """Poll the status store until every job has ended."""
    deadline = time.monotonic() + timeout
    jobs: list[store.Job] = []
    while time.monotonic() < deadline:
        jobs = [store.get_job(j) for j in job_ids]
        if all(j.state in FINAL for j in jobs):
            return jobs
        time.sleep(0.1)
    raise AssertionError(f"not final after {timeout} s: {[(j.id, j.state) for j in jobs]}")


def wait_path(pattern_root: Path, pattern: str, count: int = 1, timeout: float = 60) -> list[Path]:
    deadline = time.monotonic() + timeout
    found: list[Path] = []
    while time.monotonic() < deadline:
        found = sorted(pattern_root.glob(pattern))
        if len(found) >= count:
            return found
        time.sleep(0.1)
    return found


def bad_cell_copy(sample: Path, folder: Path, name: str = "bad.csv") -> Path:
    """The sample with a non-numeric cell on line 11 in column AMD: fails in validate."""
    lines = sample.read_text().splitlines()
    header, cells = lines[0].split(","), lines[10].split(",")
    cells[header.index("AMD")] = "n/a?"
    lines[10] = ",".join(cells)
    bad = folder / name
    bad.write_text("\n".join(lines) + "\n")
    return bad
