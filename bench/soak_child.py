"""The soak run of ``bench.soak``, in a child process with its own environment.

    python -m bench.soak_child JOBS WINDOW_SECONDS AHEAD

Starts one worker (-c 2), then drops and submits JOBS files in chunks, keeping at most AHEAD
jobs unfinished, and samples every WINDOW_SECONDS; prints one JSON line: the windows, then the
database's figures at the end.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from bench.rotation import rss_mb
from bench.throughput_child import Pipeline
from cli.processes import stop

CHUNK = 50  # files submitted between two looks at the backlog and the clock
STALL = 120.0  # seconds without a completion (at least 3 windows) before giving up


def main() -> None:
    total, window, ahead = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
    runner = Pipeline()  # migrates: the database is as small as it gets from here on
    empty = database_figures()["database_bytes"]
    # No warm-up job: the database must end with exactly ``total`` completed jobs. The first
    # window therefore includes the worker's first tasks.
    worker = runner.start(2)
    try:
        windows = stream(runner, Windows(worker.pid, window), total, ahead)
    finally:
        stop([worker], timeout=60)
    from orchestrator.store.jobs import count_by_state

    print(json.dumps({"windows": windows, "submitted": runner.counter, "by_state": count_by_state(),
                      "empty_database_bytes": empty, **database_figures()}))


class Windows:
    """A sample every ``length`` seconds: jobs completed since the last one, the worker's RSS."""

    def __init__(self, pid: int, length: float) -> None:
        self.pid, self.length = pid, length
        self.started = self.last_at = self.progress_at = time.perf_counter()
        self.done = 0
        self.rss_peak = 0.0
        self.rows: list[dict[str, Any]] = []

    def due(self) -> bool:
        self.rss_peak = max(self.rss_peak, self.rss())
        return time.perf_counter() - self.last_at >= self.length

    def rss(self) -> float:
        # main process + prefork pool: what the machine gives the worker
        return sum(rss_mb(self.pid, "VmRSS").values())

    def stalled(self) -> bool:
        return time.perf_counter() - self.progress_at > max(STALL, 3 * self.length)

    def sample(self) -> None:
        now, done = time.perf_counter(), completed_jobs()
        seconds = now - self.last_at
        self.rows.append({"window": len(self.rows) + 1, "end_s": now - self.started,
                          "seconds": seconds, "jobs": done - self.done,
                          "jobs_per_s": (done - self.done) / seconds,
                          "unfinished": unfinished_jobs(),
                          # The window's peak, sampled at every look at the backlog: a single
                          # sample can fall just after a pool process was replaced
                          # (max tasks per child) and miss a whole process.
                          "rss_mb": max(self.rss_peak, self.rss())})
        self.rss_peak = 0.0
        if done > self.done:
            self.progress_at = now
        self.last_at, self.done = now, done


def stream(runner: Pipeline, windows: Windows, total: int, ahead: int) -> list[dict[str, Any]]:
    """Submit in chunks while fewer than ``ahead`` jobs are unfinished (the broker holds a
    steady backlog instead of every job at once), sampling on the way; until all have ended."""
    submitted = 0
    while not windows.stalled():
        if windows.due():
            windows.sample()
        backlog = unfinished_jobs()
        if submitted == total and backlog == 0:
            break
        room = min(ahead - backlog, CHUNK, total - submitted)
        if room <= 0:
            time.sleep(0.05)
            continue
        for path in runner.drop(room):
            runner.orch.submit(path)
        submitted += room
    windows.sample()  # the last, partial window: the backlog draining
    return windows.rows


# -- the status database ---------------------------------------------------------------------

def completed_jobs() -> int:
    """One GROUP BY over the jobs table, once a window; never the share's folders, which
    would be a listing of every finished job each time."""
    from orchestrator.store.jobs import count_by_state

    return count_by_state().get("completed", 0)


def unfinished_jobs() -> int:
    """Jobs not ended yet, polled several times a second: the (state, …) index keeps this to
    the backlog's rows however many jobs have completed."""
    from sqlalchemy import func, select

    from orchestrator.store.db import transaction
    from orchestrator.store.states import ACTIVE
    from orchestrator.store.tables import jobs

    query = select(func.count()).select_from(jobs).where(jobs.c.state.in_(
        [s.value for s in ACTIVE]))
    with transaction() as conn:
        return int(conn.execute(query).scalar_one())


def database_figures() -> dict[str, int]:
    from sqlalchemy import text

    from orchestrator.store.db import transaction

    query = text("SELECT (SELECT count(*) FROM jobs WHERE state = 'completed'),"
                 " (SELECT count(*) FROM job_events),"
                 " pg_database_size(current_database()),"
                 " pg_total_relation_size('jobs'), pg_total_relation_size('job_events')")
    with transaction() as conn:
        row = conn.execute(query).one()
    keys = ("completed", "job_events", "database_bytes", "jobs_bytes", "job_events_bytes")
    return dict(zip(keys, (int(v) for v in row), strict=True))


if __name__ == "__main__":
    main()
