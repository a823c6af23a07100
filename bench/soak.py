"""A long steady run: does the pipeline keep its pace and its memory over many jobs?

    python -m bench.soak [--jobs 50000] [--window 30] [--ahead 500] [--smoke] [--json out.json]

One child process (``bench.soak_child``) on Redis (broker and result backend) and a throwaway
PostgreSQL database, ``PIPELINE_STEP_WORK=noop``, one real ``celery worker -c 2`` (prefetch
multiplier 4). The child submits the jobs in a steady stream (chunks of 50 while fewer than
``--ahead`` jobs are unfinished, so the broker holds a backlog instead of every job at once)
and samples every ``--window`` seconds: jobs completed in the window (from the status
database), the worker's peak RSS in the window (VmRSS of the main process and its pool
processes, sampled at every look at the backlog), the jobs not ended yet. At the end:
completed jobs in the database (must be ``--jobs``: exit 1 otherwise), job_events per job, and
the database's size per job (whole database, and the jobs and job_events tables with their
indexes).

Summary: the median of the first quarter of the windows against the last quarter's, for jobs/s
and RSS; a ratio close to 1.0 is flat. A window shorter than half ``--window`` (the last one,
while the backlog drains) is shown but left out of the quarters.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from bench.servers import run_on_servers

KB, MB = 1000, 1_000_000


def main() -> None:
    args = parse_args()
    print(f"soak: {args.jobs} jobs, a sample every {args.window:g} s ...", file=sys.stderr,
          flush=True)
    out = run_on_servers("bench.soak_child", [str(args.jobs), str(args.window), str(args.ahead)],
                         timeout=600 + args.jobs * 0.2)
    summary = summarize(out, args)
    print_series(out["windows"], args)
    print_summary(summary, args)
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)},
                                         "summary": summary, "run": out}, indent=2))
    if summary["completed"] != args.jobs:
        raise SystemExit(f"FAILED: {summary['completed']} jobs completed in the database, "
                         f"not {args.jobs} (by state: {out['by_state']})")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--window", type=float, default=30.0, help="seconds per sample")
    parser.add_argument("--ahead", type=int, default=500, help="most jobs unfinished at once")
    parser.add_argument("--smoke", action="store_true", help="500 jobs, 3 s windows (< 60 s)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.smoke:
        args.jobs, args.window = 500, 3.0
    return args


# -- the summary -----------------------------------------------------------------------------

def quarters(windows: list[dict[str, Any]], length: float,
             ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    full = [w for w in windows if w["seconds"] >= length / 2] or windows
    size = max(1, len(full) // 4)
    return full[:size], full[-size:]


def compare(first: list[dict[str, Any]], last: list[dict[str, Any]], key: str,
            ) -> dict[str, float]:
    before = statistics.median(w[key] for w in first)
    after = statistics.median(w[key] for w in last)
    return {"first": before, "last": after, "ratio": after / before if before else float("nan")}


def summarize(out: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    windows, jobs = out["windows"], args.jobs
    first, last = quarters(windows, args.window)
    return {
        "first_quarter": [w["window"] for w in first],
        "last_quarter": [w["window"] for w in last],
        "jobs_per_s": compare(first, last, "jobs_per_s"),
        "rss_mb": compare(first, last, "rss_mb"),
        "peak_rss_mb": max(w["rss_mb"] for w in windows),
        "overall_jobs_per_s": out["completed"] / windows[-1]["end_s"],
        "submitted": out["submitted"], "completed": out["completed"],
        "job_events_per_job": out["job_events"] / jobs,
        "database_mb": out["database_bytes"] / MB,
        "database_kb_per_job": out["database_bytes"] / jobs / KB,
        "growth_kb_per_job": (out["database_bytes"] - out["empty_database_bytes"]) / jobs / KB,
        "jobs_table_kb_per_job": out["jobs_bytes"] / jobs / KB,
        "job_events_table_kb_per_job": out["job_events_bytes"] / jobs / KB,
    }


# -- the tables ------------------------------------------------------------------------------

def print_series(windows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(f"\n{args.jobs} jobs, at most {args.ahead} unfinished; Redis + PostgreSQL, noop steps, "
          f"worker -c 2, prefetch 4; a sample every {args.window:g} s")
    print(f"{'window':>6}{'end s':>9}{'jobs':>8}{'jobs/s':>9}{'RSS MB':>9}{'unfinished':>12}")
    for w in windows:
        short = "  (short)" if w["seconds"] < args.window / 2 else ""
        print(f"{w['window']:>6}{w['end_s']:>9.1f}{w['jobs']:>8}{w['jobs_per_s']:>9.1f}"
              f"{w['rss_mb']:>9.1f}{w['unfinished']:>12}{short}")


def print_summary(s: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"\nfirst quarter ({_span(s['first_quarter'])}) against the last "
          f"({_span(s['last_quarter'])}), medians:")
    print(f"{'':<9}{'first':>9}{'last':>9}{'ratio':>8}")
    for label, key in (("jobs/s", "jobs_per_s"), ("RSS MB", "rss_mb")):
        c = s[key]
        print(f"{label:<9}{c['first']:>9.1f}{c['last']:>9.1f}{c['ratio']:>8.2f}")
    print(f"peak RSS {s['peak_rss_mb']:.1f} MB; {s['overall_jobs_per_s']:.1f} jobs/s overall")
    print(f"jobs: {s['submitted']} submitted, {s['completed']} completed in the database "
          f"(of {args.jobs}); {s['job_events_per_job']:.2f} job_events per job")
    print(f"database: {s['database_mb']:.1f} MB, {s['database_kb_per_job']:.2f} KB/job "
          f"({s['growth_kb_per_job']:.2f} KB/job grown since empty); tables with indexes: "
          f"jobs {s['jobs_table_kb_per_job']:.2f} KB/job, "
          f"job_events {s['job_events_table_kb_per_job']:.2f} KB/job")


def _span(numbers: list[int]) -> str:
    if len(numbers) == 1:
        return f"window {numbers[0]}"
    return f"windows {numbers[0]}-{numbers[-1]}"


if __name__ == "__main__":
    main()
