"""Storage rotation at scale: N small generated job folders through ``pipeline rotate`` and a
real ``celery worker`` on the maintenance queue, on the embedded default (files + SQLite).

    python -m bench.rotation [--sizes 10000,100000] [--smoke] [--lanes 2] [--batch-size 500]
                             [--job-bytes 2000] [--throttle-size N] [--json out.json] [--keep]

For each size: a fresh folder, N finished jobs generated directly (rows + three-file folders,
40-47 days old), a worker (``-c lanes``), then ``pipeline rotate --json`` timed. Reports jobs/s
and MB/s (source bytes) between dispatch and the run's end, the planning time, and the peak
RSS (VmHWM / ru_maxrss) of the worker's processes and of the CLI. Then, at ``--throttle-size``
(default: the first size), the same run with PIPELINE_ROTATION_BYTES_PER_SECOND set to half
the unthrottled MB/s, and the measured rate against that budget.

Checks (exit 1 if one fails; ``--smoke`` fails on memory only): every job archived; peak RSS of
worker and CLI the same within 20 % from the smallest to the largest size, and under 200 MB;
the throttled rate within 10 % of its budget.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from cli.processes import stop

REPO = Path(__file__).resolve().parents[1]
RSS_LIMIT_MB = 200.0
FLAT = 0.20
RATE_TOLERANCE = 0.10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--smoke", action="store_true", help="sizes 300,1200: CI's check")
    parser.add_argument("--lanes", type=int, default=2, help="PIPELINE_ROTATION_CONCURRENCY")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--job-bytes", type=int, default=2000)
    parser.add_argument("--throttle-size", type=int)
    parser.add_argument("--repeat", type=int, default=1,
                        help="throttle checks (each: unthrottled then half its rate)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the folders")
    parser.add_argument("--generate", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate:
        generate(args.generate, args.job_bytes)
        return
    sizes = [300, 1200] if args.smoke else [int(s) for s in args.sizes.split(",")]
    if args.smoke:
        args.throttle_size = args.throttle_size or 1200
    rows = [measure(n, args) for n in sizes]
    size = args.throttle_size or sizes[0]
    for repeat in range(args.repeat):
        base = next((r for r in rows if r["jobs"] == size), None) if repeat == 0 else None
        base = base or measure(size, args)
        if base not in rows:
            rows.append(base)
        rows.append(measure(size, args, budget=base["mb_per_s"] * 1e6 / 2))
    print_table(rows, args)
    failures = checks(rows)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "failures": failures}, indent=2))
    # Smoke runs last 1-3 s, so their rate is noise; their memory is not: a worker over the
    # limit at 300 jobs is over it at 100,000 (CI printed such a FAILED for two sessions
    # without failing, issue 7's 200 MB: see docs/performance.md).
    enforced = [f for f in failures if f.startswith("memory")] if args.smoke else failures
    if enforced:
        raise SystemExit(f"failed: {', '.join(enforced)}")


def generate(count: int, job_bytes: int) -> None:
    """In a child with the bench's environment: the jobs, spread over 8 days, 40+ days old."""
    from datetime import timedelta

    from orchestrator.paths import Share
    from orchestrator.settings import get_settings
    from orchestrator.store.db import migrate
    from orchestrator.store.jobs import now
    from tests.rotation_support import make_jobs

    migrate()
    Share(get_settings().share_dir).ensure()
    spacing = timedelta(days=8) / count
    make_jobs(get_settings().share_dir, count, finished_at=now() - timedelta(days=48),
              spacing=spacing, size=job_bytes)


def environment(root: Path, args: argparse.Namespace, budget: float | None) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    return {**clean, "PIPELINE_SHARE_DIR": str(root / "share"),
            "PIPELINE_VAR_DIR": str(root / "var"), "PYTHONPATH": str(REPO),
            "PIPELINE_ROTATION_BATCH_SIZE": str(args.batch_size),
            "PIPELINE_ROTATION_CONCURRENCY": str(args.lanes),
            "PIPELINE_ROTATION_BYTES_PER_SECOND": str(int(budget or 0))}


def measure(count: int, args: argparse.Namespace, budget: float | None = None) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix=f"bench-rotation-{count}-"))
    env = environment(root, args, budget)
    try:
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "bench.rotation", "--generate", str(count),
                        "--job-bytes", str(args.job_bytes)], env=env, cwd=REPO, check=True)
        generated = time.monotonic() - started
        worker, log = start_worker(env, root, args.lanes)
        try:
            base_mb = max(rss_mb(worker.pid, "VmRSS").values())
            run, cli_mb, wall = run_cli(env, root)
            worker_mb = rss_mb(worker.pid, "VmHWM")
            worker_mb = {"main": worker_mb.pop(worker.pid, 0.0),
                         "child": max(worker_mb.values(), default=0.0)}
        finally:
            stop([worker])
        if run.get("jobs_done") != count or run.get("status") != "completed":
            raise SystemExit(f"run incomplete at {count}: {run}\n{log.read_text()[-3000:]}")
        return summarize(count, run, budget, generated, wall, cli_mb, worker_mb, base_mb)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


def start_worker(env: dict[str, str], root: Path, lanes: int,
                 ) -> tuple[subprocess.Popen[bytes], Path]:
    log = root / "worker.log"
    handle = open(log, "wb")  # noqa: SIM115 - the child owns it
    name = f"bench-rot-{os.getpid()}@%h"
    proc = subprocess.Popen([sys.executable, "-m", "celery", "-A", "orchestrator", "worker",
                             "-Q", "maintenance", "-c", str(lanes), "-n", name,
                             "--without-gossip", "--without-mingle", "--without-heartbeat",
                             "--loglevel", "INFO"], env=env, cwd=root, stdout=handle,
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 90
    while "ready." not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"worker did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    return proc, log


def run_cli(env: dict[str, str], root: Path) -> tuple[dict[str, Any], float, float]:
    """``pipeline rotate --json``: (its run record, its peak RSS in MB, its wall time)."""
    out, err = root / "cli.json", root / "cli.err"
    started = time.monotonic()
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "cli.main", "rotate", "--json"], env=env,
                                cwd=root, stdout=stdout, stderr=stderr)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"pipeline rotate exited {proc.returncode}:\n{err.read_text()[-3000:]}")
    return json.loads(out.read_text()), usage.ru_maxrss / 1024, wall


def rss_mb(pid: int, field: str) -> dict[int, float]:
    """``field`` (VmRSS, VmHWM) in MB of ``pid`` and its children (the prefork pool)."""
    pids = [pid]
    with contextlib.suppress(OSError):
        pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    out = {}
    for each in pids:
        try:
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    out[each] = int(line.split()[1]) / 1024
        except OSError:
            continue
    return out


def summarize(count: int, run: dict[str, Any], budget: float | None, generated: float,
              wall: float, cli_mb: float, worker_mb: dict[str, float], base_mb: float,
              ) -> dict[str, Any]:
    at = {k: datetime.fromisoformat(run[k]) for k in ("started_at", "dispatched_at",
                                                      "finished_at")}
    seconds = (at["finished_at"] - at["dispatched_at"]).total_seconds()
    return {"jobs": count, "batches": run["planned_batches"], "bytes": run["bytes_done"],
            "budget_mb_per_s": budget / 1e6 if budget else None,
            "generate_s": round(generated, 1),
            "plan_s": round((at["dispatched_at"] - at["started_at"]).total_seconds(), 2),
            "rotate_s": round(seconds, 2), "cli_wall_s": round(wall, 2),
            "jobs_per_s": round(count / seconds, 1), "mb_per_s": round(run["bytes_done"] / 1e6
                                                                       / seconds, 3),
            "worker_main_mb": round(worker_mb["main"], 1),
            "worker_child_mb": round(worker_mb["child"], 1),
            "worker_peak_mb": round(max(worker_mb.values()), 1),
            "worker_ready_mb": round(base_mb, 1),
            "cli_mb": round(cli_mb, 1)}


def print_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(f"\nrotation benchmark: {args.lanes} lanes, batches of {args.batch_size}, "
          f"~{args.job_bytes} B per job (3 files), embedded default (files + SQLite), "
          f"{os.cpu_count()} cores\n")
    head = ("| jobs | budget MB/s | batches | plan s | rotate s | jobs/s | MB/s | "
            "worker peak RSS MB (main / busiest child) | CLI peak RSS MB |")
    print(head)
    print("|" + "|".join(["---"] * (head.count("|") - 1)) + "|")
    for r in rows:
        budget = f"{r['budget_mb_per_s']:.3f}" if r["budget_mb_per_s"] else "none"
        print(f"| {r['jobs']:,} | {budget} | {r['batches']} | {r['plan_s']} | {r['rotate_s']} "
              f"| {r['jobs_per_s']:,.0f} | {r['mb_per_s']:.2f} | {r['worker_main_mb']:.0f} / "
              f"{r['worker_child_mb']:.0f} | {r['cli_mb']:.0f} |")


def checks(rows: list[dict[str, Any]]) -> list[str]:
    plain = [r for r in rows if not r["budget_mb_per_s"]]
    small, large = min(plain, key=lambda r: r["jobs"]), max(plain, key=lambda r: r["jobs"])
    failures = []
    print()
    for key, label in (("worker_peak_mb", "worker"), ("cli_mb", "CLI")):
        growth = large[key] / small[key] - 1
        ok = abs(growth) <= FLAT and large[key] < RSS_LIMIT_MB
        print(f"memory {label}: {small[key]:.0f} MB at {small['jobs']:,} jobs, "
              f"{large[key]:.0f} MB at {large['jobs']:,} ({growth:+.1%}; limit ±{FLAT:.0%} "
              f"and < {RSS_LIMIT_MB:.0f} MB): {'ok' if ok else 'FAILED'}")
        if not ok:
            failures.append(f"memory {label}")
    offs = []
    for r in (r for r in rows if r["budget_mb_per_s"]):
        offs.append(r["mb_per_s"] / r["budget_mb_per_s"] - 1)
        print(f"rate limit: budget {r['budget_mb_per_s']:.3f} MB/s (half the unthrottled "
              f"rate just before), measured {r['mb_per_s']:.3f} MB/s ({offs[-1]:+.1%})")
    median = statistics.median(offs)
    ok = abs(median) <= RATE_TOLERANCE
    print(f"rate limit, median of {len(offs)}: {median:+.1%} (limit ±{RATE_TOLERANCE:.0%}): "
          f"{'ok' if ok else 'FAILED'}")
    if not ok:
        failures.append("rate limit")
    return failures


if __name__ == "__main__":
    main()
