"""One worker configuration of ``bench.scaling``, run in a child process with its own
environment, and the measures taken on it in turn.

    python -m bench.scaling_child '{"workers": [[2, null]],
                                    "measures": [["throughput", 100], ["batch", 20]]}'

``workers``: one ``[concurrency, queues]`` per worker process (queues null: all of them);
``measures``: ``["throughput", jobs]`` or ``["batch", jobs]``. Prints one JSON line: the
figures of each measure, in order.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from bench.throughput_child import Pipeline, tree_cpu

BATCH_TIMEOUT = 600  # seconds until a batch's summary must be written
Workers = list[subprocess.Popen[bytes]]


def main() -> None:
    from cli.processes import stop

    spec = json.loads(sys.argv[1])
    runner = Pipeline()
    workers = start_all(runner, spec["workers"])
    try:
        runner.warm_up()  # every worker has imported its tasks and connected before the clock
        out = [MEASURES[kind](runner, workers, jobs) for kind, jobs in spec["measures"]]
    finally:
        stop(workers, timeout=60)  # all at once: each takes about 2 s to shut down, idle
    print(json.dumps(out))


def start_all(runner: Pipeline, specs: list[list[Any]]) -> Workers:
    """The workers started side by side (each spends seconds importing), all ready."""
    from cli.processes import stop

    with ThreadPoolExecutor(len(specs)) as pool:
        futures = [pool.submit(runner.start, concurrency, queues, f"w{i}")
                   for i, (concurrency, queues) in enumerate(specs)]
    failed = [f.exception() for f in futures if f.exception() is not None]
    workers = [f.result() for f in futures if f.exception() is None]
    if failed:
        stop(workers)  # a stray worker would eat the next setup's messages
        raise failed[0]
    return workers


def cpu(workers: Workers) -> float:
    return sum(tree_cpu(w.pid) for w in workers)


def throughput(runner: Pipeline, workers: Workers, jobs: int) -> dict[str, Any]:
    """All jobs submitted at once, timed until the last one is in completed/."""
    cpu0, started = cpu(workers), time.perf_counter()
    done = runner.run_many(jobs)
    wall = time.perf_counter() - started
    return {"jobs_per_s": done / wall, "wall_s": wall, "completed": done,
            "submit_s": runner.submitted_at - started,
            "cpu_ms_per_job": (cpu(workers) - cpu0) * 1000 / jobs}


def batch(runner: Pipeline, workers: Workers, jobs: int) -> dict[str, Any]:
    """One batch of ``jobs`` files; the times from the status store, which the workers write
    with this machine's clock: last job finished, then the chord's callback wrote the summary."""
    paths = runner.drop(jobs)
    cpu0, at = cpu(workers), datetime.now(UTC)
    started = time.perf_counter()
    batch_id = runner.orch.submit_batch(paths)
    submit_s = time.perf_counter() - started
    summary_at = wait_for_summary(batch_id)
    cpu_ms = (cpu(workers) - cpu0) * 1000 / jobs
    last_job_at, completed = batch_jobs(batch_id)
    return {"submit_s": submit_s, "last_job_s": (last_job_at - at).total_seconds(),
            "total_s": (summary_at - at).total_seconds(),
            "callback_ms": (summary_at - last_job_at).total_seconds() * 1000,
            "jobs_per_s": jobs / (last_job_at - at).total_seconds(),
            "completed": completed, "cpu_ms_per_job": cpu_ms}


MEASURES = {"throughput": throughput, "batch": batch}


def wait_for_summary(batch_id: str) -> datetime:
    """batches.finished_at, once the summary has been recorded (polled every 10 ms)."""
    from sqlalchemy import select

    from orchestrator.store.db import transaction
    from orchestrator.store.tables import batches

    query = select(batches.c.finished_at).where(batches.c.id == batch_id)
    deadline = time.monotonic() + BATCH_TIMEOUT
    while time.monotonic() < deadline:
        with transaction() as conn:
            finished = conn.execute(query).scalar()
        if finished is not None:
            return finished
        time.sleep(0.01)
    raise SystemExit(f"batch {batch_id}: no summary after {BATCH_TIMEOUT} s")


def batch_jobs(batch_id: str) -> tuple[datetime, int]:
    """When the batch's last job finished, and how many of its jobs completed."""
    from sqlalchemy import func, select

    from orchestrator.store.db import transaction
    from orchestrator.store.tables import jobs

    query = (select(func.max(jobs.c.finished_at),
                    func.count().filter(jobs.c.state == "completed"))
             .where(jobs.c.batch_id == batch_id))
    with transaction() as conn:
        last, completed = conn.execute(query).one()
    return last, completed


if __name__ == "__main__":
    main()
