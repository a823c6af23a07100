"""How the pipeline scales with worker processes, and what a batch's chord costs.

    python -m bench.scaling [--jobs 1000] [--repeat 3] [--smoke] [--json out.json]

Every worker configuration runs in its own child process (``bench.scaling_child``; the
batches share the ``-c 2`` one) on Redis (broker and result backend) and a throwaway PostgreSQL
database, with ``PIPELINE_STEP_WORK=noop`` (the steps do no work: what is measured is the
orchestration) and prefetch multiplier 4, with real ``celery worker`` processes started by
``cli.processes.worker_command``:

- throughput, N jobs submitted at once, end to end: one worker at ``-c 1``, ``-c 2``, ``-c 4``;
  one worker ``-c 3`` on all queues against three workers ``-c 1``, one per queue (validate,
  optimize, archive + maintenance);
- batch chord: one batch of 100 and of 1000 files (``Orchestrator.submit_batch``), one worker
  ``-c 2``: time until the last job finished and until the summary was recorded, and the
  callback latency between the two (``jobs.finished_at``, ``batches.finished_at``).

Medians of ``--repeat`` runs; the setups take turns, so a busy minute on the machine spreads
over all of them instead of spoiling one. Worker CPU: the process trees' user + system time.
"submit s" is how long the submitting loop took: on a small machine it shares the cores with
the workers, and when it takes most of the wall time more worker processes cannot help.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from bench.servers import run_on_servers

#: label, then one [concurrency, queues] per worker process (None: every queue)
THROUGHPUT: tuple[tuple[str, list[list[Any]]], ...] = (
    ("one worker -c 1", [[1, None]]),
    ("one worker -c 2", [[2, None]]),
    ("one worker -c 4", [[4, None]]),
    ("one worker -c 3, all queues", [[3, None]]),
    # The batch callback and crash records are routed to maintenance; archive's worker takes
    # it because the callback follows the archive step.
    ("3 workers -c 1, one per queue",
     [[1, "validate"], [1, "optimize"], [1, "archive,maintenance"]]),
)
BATCH_WORKERS: list[list[Any]] = [[2, None]]
THROUGHPUT_KEYS = ("jobs_per_s", "wall_s", "submit_s", "cpu_ms_per_job")
BATCH_KEYS = ("submit_s", "last_job_s", "total_s", "callback_ms", "jobs_per_s", "cpu_ms_per_job")


def main() -> None:
    args = parse_args()
    runs: dict[str, list[dict[str, Any]]] = {}
    for turn in range(args.repeat):
        for workers, measures in plan(args):
            labels = [label for label, _, _ in measures]
            print(f"[{turn + 1}/{args.repeat}] {', '.join(labels)}", file=sys.stderr, flush=True)
            for label, out in zip(labels, run(workers, measures), strict=True):
                runs.setdefault(label, []).append(out)
    speeds = [summarize(label, runs[label], THROUGHPUT_KEYS) for label, _ in THROUGHPUT]
    batches = [summarize(f"batch of {n}", runs[f"batch of {n}"], BATCH_KEYS) | {"jobs": n}
               for n in args.batches]
    print_throughput(speeds, args)
    print_batches(batches, args)
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)},
                                         "throughput": speeds, "batches": batches}, indent=2))


def plan(args: argparse.Namespace) -> list[tuple[list[list[Any]], list[tuple[str, str, int]]]]:
    """One child per worker configuration; the batches share the -c 2 one (a worker start
    and stop cost about 6 s, which --smoke cannot spend twice more)."""
    configs = []
    for label, workers in THROUGHPUT:
        measures = [(label, "throughput", args.jobs)]
        if workers == BATCH_WORKERS:
            measures += [(f"batch of {n}", "batch", n) for n in args.batches]
        configs.append((workers, measures))
    return configs


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1000, help="jobs per throughput run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--smoke", action="store_true",
                        help="100 jobs, batches of 20 and 100, 1 run (< 90 s)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.batches = [100, 1000]
    if args.smoke:
        args.jobs, args.batches, args.repeat = 100, [20, 100], 1
    return args


def run(workers: list[list[Any]], measures: list[tuple[str, str, int]],
        ) -> list[dict[str, Any]]:
    spec = {"workers": workers, "measures": [[kind, jobs] for _, kind, jobs in measures]}
    jobs = sum(jobs for _, _, jobs in measures)
    return run_on_servers("bench.scaling_child", [json.dumps(spec)], timeout=600 + jobs)


# -- the tables ------------------------------------------------------------------------------

def summarize(label: str, runs: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, Any]:
    row: dict[str, Any] = {"setup": label, "runs": runs}
    row.update({key: statistics.median(r[key] for r in runs) for key in keys})
    row["completed"] = min(r["completed"] for r in runs)
    return row


def print_throughput(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    anchor = rows[0]["jobs_per_s"]  # one worker -c 1
    print(f"\n{args.jobs} jobs submitted at once; Redis + PostgreSQL, noop steps, prefetch 4; "
          f"medians of {args.repeat} run(s)")
    print(f"{'setup':<31}{'procs':>6}{'jobs/s':>8}{'x -c 1':>8}{'wall s':>8}{'submit s':>10}"
          f"{'cpu ms/job':>11}{'done':>7}")
    for row, (_, workers) in zip(rows, THROUGHPUT, strict=True):
        procs = sum(c for c, _ in workers)
        print(f"{row['setup']:<31}{procs:>6}{row['jobs_per_s']:>8.1f}"
              f"{row['jobs_per_s'] / anchor:>8.2f}{row['wall_s']:>8.2f}{row['submit_s']:>10.2f}"
              f"{row['cpu_ms_per_job']:>11.1f}{row['completed']:>7}")
        print(f"{'':<31}runs: {[round(r['jobs_per_s'], 1) for r in row['runs']]}")
    split, together = rows[-1]["jobs_per_s"], rows[-2]["jobs_per_s"]
    print(f"split by queue / one worker -c 3: {split / together:.2f}")


def print_batches(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(f"\nOne batch (chord), one worker -c 2; seconds from submit_batch; "
          f"medians of {args.repeat} run(s)")
    print(f"{'batch':>7}{'submit s':>10}{'last job s':>12}{'summary s':>11}{'callback ms':>13}"
          f"{'jobs/s':>8}{'cpu ms/job':>11}{'done':>7}")
    for row in rows:
        print(f"{row['jobs']:>7}{row['submit_s']:>10.2f}{row['last_job_s']:>12.2f}"
              f"{row['total_s']:>11.2f}{row['callback_ms']:>13.1f}{row['jobs_per_s']:>8.1f}"
              f"{row['cpu_ms_per_job']:>11.1f}{row['completed']:>7}")
        print(f"{'':>7}callback ms runs: {[round(r['callback_ms'], 1) for r in row['runs']]}")


if __name__ == "__main__":
    main()
