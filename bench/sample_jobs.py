"""N real jobs from the sample data through the whole pipeline, on each setup, timed.

    python -m bench.sample_jobs [--jobs 20] [--repeat 3] [--smoke] [--json out.json]

Each setup runs in a child process with its own PIPELINE_* environment and a real
``celery worker`` (prefork, 2 processes): the embedded default (files + SQLite) and
Redis + PostgreSQL (skipped with a note when a server is unreachable).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench.servers import create_database, drop_database, run_measured

SETUPS = ("embedded", "redis+postgresql")
REDIS = os.environ.get("PIPELINE_TEST_REDIS_URL", "redis://127.0.0.1:6379/11")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="3 jobs, 1 run: CI's check")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", choices=SETUPS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.smoke:
        args.jobs, args.repeat = 3, 1
    if args.child:
        print(json.dumps(run_setup(args.jobs)))
        return
    rows = [summarize(setup, [run_child(setup, args.jobs) for _ in range(args.repeat)])
            for setup in SETUPS]
    print_table(rows, args.jobs)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    if any(r.get("completed", 0) < args.jobs for r in rows if "skipped" not in r):
        raise SystemExit(1)


def run_child(setup: str, jobs: int) -> dict:
    root = Path(tempfile.mkdtemp(prefix=f"bench-{setup.split('+')[0]}-"))
    env = {**os.environ, "PIPELINE_SHARE_DIR": str(root / "share"),
           "PIPELINE_VAR_DIR": str(root / "var"),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    database = None
    try:
        if setup != "embedded":
            extra, database = server_environment()
            if extra is None:
                return {"skipped": "Redis or PostgreSQL unreachable"}
            env.update(extra)
        return run_measured("bench.sample_jobs", ["--child", setup, "--jobs", str(jobs)], env,
                         root, timeout=600)
    finally:
        if database:
            drop_database(database)
        shutil.rmtree(root, ignore_errors=True)


def server_environment() -> tuple[dict[str, str] | None, str | None]:
    import redis

    try:
        redis.Redis.from_url(REDIS).flushdb()
        url = create_database()
    except Exception:
        return None, None
    return {"PIPELINE_BROKER_URL": REDIS, "PIPELINE_RESULT_BACKEND": REDIS,
            "PIPELINE_DATABASE_URL": url}, url


def run_setup(count: int) -> dict:
    """In the child: start a worker, submit ``count`` sample jobs, wait for all to end."""
    from cli.demo import sample_csv
    from cli.processes import stop, worker_command
    from orchestrator.jobs.canvas import Orchestrator
    from orchestrator.store import jobs as store
    from orchestrator.store.db import migrate
    from orchestrator.store.states import FINAL, JobState

    migrate()
    orch = Orchestrator()
    orch.settings.var_dir.mkdir(parents=True, exist_ok=True)
    log = open(orch.settings.var_dir / "worker.log", "wb")  # noqa: SIM115
    worker = subprocess.Popen(worker_command(2, name="bench", loglevel="INFO"), stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    wait_ready(orch.settings.var_dir / "worker.log")
    started = time.perf_counter()
    ids = [orch.submit(sample_csv(), {"portfolio_size": 10 + i % 20}) for i in range(count)]
    while not all((jobs := [store.get_job(j) for j in ids])[k].state in FINAL
                  for k in range(count)):
        time.sleep(0.02)
    wall = time.perf_counter() - started
    stop([worker])
    durations = [(j.finished_at - j.created_at).total_seconds() for j in jobs]
    return {"wall_s": wall, "completed": sum(j.state is JobState.COMPLETED for j in jobs),
            "p50_job_s": statistics.median(durations), "max_job_s": max(durations)}


def wait_ready(log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and "ready." in log.read_text(errors="replace"):
            return
        time.sleep(0.1)
    raise SystemExit(f"worker not ready:\n{log.read_text(errors='replace')[-2000:]}")


def summarize(setup: str, runs: list[dict]) -> dict:
    if any("skipped" in r for r in runs):
        return {"setup": setup, "skipped": runs[0].get("skipped", "")}
    return {"setup": setup, "runs": len(runs),
            "wall_s": statistics.median(r["wall_s"] for r in runs),
            "jobs_per_s": statistics.median(r["completed"] / r["wall_s"] for r in runs),
            "p50_job_s": statistics.median(r["p50_job_s"] for r in runs),
            "max_job_s": max(r["max_job_s"] for r in runs),
            "completed": min(r["completed"] for r in runs)}


def print_table(rows: list[dict], jobs: int) -> None:
    print(f"\n{jobs} sample jobs (60 tickers x 756 days), worker -c 2; medians of runs")
    print(f"{'setup':<18} {'runs':>4} {'wall s':>8} {'jobs/s':>7} {'p50 job s':>10} "
          f"{'max job s':>10} {'completed':>10}")
    for r in rows:
        if "skipped" in r:
            print(f"{r['setup']:<18} skipped: {r['skipped']}")
            continue
        print(f"{r['setup']:<18} {r['runs']:>4} {r['wall_s']:>8.2f} {r['jobs_per_s']:>7.2f} "
              f"{r['p50_job_s']:>10.2f} {r['max_job_s']:>10.2f} {r['completed']:>7}/{jobs}")


if __name__ == "__main__":
    main()
