"""The orchestrator against raw Celery: the same broker, database and worker settings.

    python -m bench.throughput [--jobs 2000] [--light 200] [--repeat 3] [--smoke] [--json out]

Setups, each with one real ``celery worker`` (prefork, 2 processes, prefetch multiplier 4):

- ``raw celery (redis)``: a hand-written chain of three no-op tasks, each taking and returning
  a small dict, Redis broker and result backend (every result stored, as wired by hand);
- ``pipeline (redis+pg)``: our pipeline with ``PIPELINE_STEP_WORK=noop`` (the steps do no
  work; what is left is the orchestration: job records, history, share moves, canvas);
- ``pipeline (redis+pg; async commit)``: the same with ``PIPELINE_DB_SYNCHRONOUS_COMMIT=false``
  (commits do not wait for the WAL flush: the trade-off in docs/performance.md);
- ``pipeline (embedded)``: the same on the embedded default (files + SQLite).

Measured: jobs/s end to end (all jobs submitted at once), worker CPU ms per job (the worker's
process tree, from /proc), Redis calls per job (INFO commandstats), SQL statements and commits
per job (counted by the workers and the submitter; a write in autocommit counts as a commit),
p50/p99 latency submit→completed at light load (one job every 20 ms). A second table splits
the CPU per job by process: worker main (the consumer), worker pool, the submitter (this
benchmark's publishing process) and the PostgreSQL and Redis servers, which on one machine share
the same two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench.servers import create_database, drop_database, run_measured

ROOT = Path(__file__).resolve().parents[1]
REDIS = os.environ.get("PIPELINE_TEST_REDIS_URL", "redis://127.0.0.1:6379/11")
SETUPS = ("raw celery (redis)", "pipeline (redis+pg)", "pipeline (redis+pg; async commit)",
          "pipeline (embedded)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--light", type=int, default=200, help="jobs at one per 20 ms")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="100 jobs, 20 light, 1 run")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--setups", default=",".join(SETUPS),
                        help="comma-separated subset of: " + ", ".join(SETUPS))
    args = parser.parse_args()
    chosen = [s.strip() for s in args.setups.split(",")]
    unknown = [s for s in chosen if s not in SETUPS]
    if unknown:
        parser.error(f"unknown setup {unknown[0]!r}; choose from {', '.join(SETUPS)}")
    if args.smoke:
        args.jobs, args.light, args.repeat = 100, 20, 1
    rows = [summarize(setup, runs) for setup, runs in interleaved(chosen, args).items()]
    for row in rows:  # the ratio within each round (same load), beside the medians' ratio
        row["x_raw_rounds"] = [round(mine / theirs, 2) for mine, theirs in zip(
            row["jobs_per_s_runs"], rows[0]["jobs_per_s_runs"], strict=True)]
    print_table(rows, args)
    print_cpu_split(rows)
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)},
                                         "rows": rows}, indent=2))


def interleaved(chosen: list[str], args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    """Every setup once per round, round after round: on a shared machine the load drifts
    over minutes, and a ratio is only fair between runs made under the same load."""
    runs: dict[str, list[dict[str, Any]]] = {setup: [] for setup in chosen}
    for _ in range(args.repeat):
        for setup in chosen:
            runs[setup].append(run_setup(setup, args.jobs, args.light))
    return runs


# -- one run ---------------------------------------------------------------------------------

def run_setup(setup: str, jobs: int, light: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="bench-throughput-"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PIPELINE_SHARE_DIR": str(root / "share"),
           "PIPELINE_VAR_DIR": str(root / "var"), "PIPELINE_STEP_WORK": "noop",
           "PIPELINE_PREFETCH_MULTIPLIER": "4", "PIPELINE_SQL_STATS_DIR": str(root / "sql"),
           "PIPELINE_LOG_LEVEL": "WARNING"}
    database = None
    try:
        if setup != "pipeline (embedded)":
            flush_redis()
        if setup.startswith("pipeline (redis+pg"):
            database = create_database()
            env.update(PIPELINE_BROKER_URL=REDIS, PIPELINE_RESULT_BACKEND=REDIS,
                       PIPELINE_DATABASE_URL=database)
        if setup.endswith("async commit)"):
            env["PIPELINE_DB_SYNCHRONOUS_COMMIT"] = "false"
        return run_measured("bench.throughput_child", [setup, str(jobs), str(light)], env, root,
                         timeout=1800)
    finally:
        if database:
            drop_database(database)
        shutil.rmtree(root, ignore_errors=True)


def flush_redis() -> None:
    import redis

    redis.Redis.from_url(REDIS).flushdb()


# -- the table -------------------------------------------------------------------------------

def summarize(setup: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("jobs_per_s", "cpu_ms_per_job", "redis_calls_per_job", "sql_statements_per_job",
            "sql_commits_per_job", "p50_ms", "p99_ms")
    row: dict[str, Any] = {"setup": setup, "runs": len(runs)}
    for key in keys:
        values = [r[key] for r in runs if r.get(key) is not None]
        row[key] = statistics.median(values) if values else None
    parts = runs[0]["cpu_ms_per_job_by_process"]
    row["cpu_ms_per_job_by_process"] = {
        part: statistics.median(r["cpu_ms_per_job_by_process"][part] for r in runs)
        for part in parts}
    row["jobs_per_s_runs"] = [round(r["jobs_per_s"], 1) for r in runs]
    row["completed"] = min(r["completed"] for r in runs)
    return row


def print_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    anchor = rows[0]
    print(f"\n{args.jobs} jobs (throughput), {args.light} jobs at 1 per 20 ms (latency); "
          f"worker -c 2, prefetch 4; medians of {args.repeat} run(s)")
    head = (f"{'setup':<34}{'jobs/s':>8}{'x raw':>7}{'cpu ms/job':>11}{'redis/job':>10}"
            f"{'sql/job':>8}{'commits/job':>12}{'p50 ms':>8}{'x raw':>7}{'p99 ms':>8}"
            f"{'done':>8}")
    print(head)
    for r in rows:
        speed = r["jobs_per_s"] / anchor["jobs_per_s"]
        delay = r["p50_ms"] / anchor["p50_ms"]
        print(f"{r['setup']:<34}{r['jobs_per_s']:>8.1f}{speed:>7.2f}"
              f"{_f(r['cpu_ms_per_job'])}{_f(r['redis_calls_per_job'], 10)}"
              f"{_f(r['sql_statements_per_job'], 8)}{_f(r['sql_commits_per_job'], 12)}"
              f"{_f(r['p50_ms'], 8)}{delay:>7.2f}{_f(r['p99_ms'], 8)}{r['completed']:>8}")
        print(f"{'':<34}runs: {r['jobs_per_s_runs']}; x raw per round: {r['x_raw_rounds']}")


def print_cpu_split(rows: list[dict[str, Any]]) -> None:
    """Where the CPU goes: on one machine every process shares the same cores."""
    parts = list(rows[0]["cpu_ms_per_job_by_process"])
    print("\nCPU ms per job by process (throughput runs; servers = PostgreSQL + Redis)")
    print(f"{'setup':<34}" + "".join(f"{p:>13}" for p in parts) + f"{'total':>9}")
    for r in rows:
        split = r["cpu_ms_per_job_by_process"]
        print(f"{r['setup']:<34}" + "".join(f"{split[p]:>13.1f}" for p in parts)
              + f"{sum(split.values()):>9.1f}")


def _f(value: float | None, width: int = 11) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.1f}"


if __name__ == "__main__":
    main()
