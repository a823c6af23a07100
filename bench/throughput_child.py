"""One setup of ``bench.throughput``, run in a child process with its own environment."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cli.processes import stop

TICK = os.sysconf("SC_CLK_TCK")


def main() -> None:
    setup, jobs, light = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    runner = RawCelery() if setup.startswith("raw") else Pipeline()
    try:
        out = runner.throughput(jobs)
        out.update(runner.latency(light))
    finally:  # a worker left behind would eat the next setup's messages
        stop([p for p in STARTED if p.poll() is None], timeout=60)
    print(json.dumps(out))


#: Every worker this process started (start_worker), stopped when it ends, even on a crash.
STARTED: list[subprocess.Popen[bytes]] = []


# -- process measurements ------------------------------------------------------------------

def processes() -> Iterator[tuple[int, str, list[str]]]:
    """(pid, command name, the fields after it) of every process in /proc/<pid>/stat."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            head, tail = (entry / "stat").read_text().rsplit(")", 1)
        except OSError:  # it ended meanwhile
            continue
        yield int(entry.name), head.split("(", 1)[1], tail.split()


def cpu(fields: list[str], children: bool = False) -> float:
    """CPU seconds (user + system) from stat fields, with the reaped children's if asked."""
    return sum(int(f) for f in fields[11:15 if children else 13]) / TICK


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process, its reaped children and its live children."""
    return sum(cpu(fields, children=True) if number == pid else cpu(fields)
               for number, _, fields in processes() if pid in (number, int(fields[1])))


def own_cpu(pid: int) -> float:
    """CPU seconds of the process itself (not its children)."""
    return next(cpu(fields) for number, _, fields in processes() if number == pid)


def servers_cpu() -> float:
    """CPU seconds of this machine's PostgreSQL and Redis server processes: on one machine
    they share the cores with the workers, so their work per job counts too. With the
    children's: the postmaster reaps each backend whose client went away (a pool process
    replaced after max tasks per child), and only then is its CPU counted anywhere."""
    return sum(cpu(fields, children=True) for _, name, fields in processes()
               if name in ("postgres", "redis-server"))


def redis_calls() -> int:
    import redis

    stats = redis.Redis.from_url(os.environ.get("PIPELINE_TEST_REDIS_URL",
                                                "redis://127.0.0.1:6379/11")).info("commandstats")
    return sum(v["calls"] for v in stats.values())


def start_worker(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    handle = open(log, "wb")  # noqa: SIM115
    proc = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT,
                            start_new_session=True)
    STARTED.append(proc)
    deadline = time.monotonic() + 90
    while "ready." not in log.read_text(errors="replace"):
        if time.monotonic() > deadline or proc.poll() is not None:
            stop([proc], timeout=60)  # never leave a stray worker eating another run's messages
            raise SystemExit(f"worker not ready:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)
    return proc


def percentiles(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {"p50_ms": statistics.median(ordered) * 1000,
            "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000}


def wait_for(result: Any, timeout: float) -> None:
    """``result.get``, robust to a missed notification: Celery's Redis result backend waits on
    pub/sub, and here one of 2,000 ``get`` calls once never returned although its result was
    stored. After 5 s without news the state is read directly (a plain GET)."""
    from celery.exceptions import TimeoutError as NoResultYet

    deadline = time.monotonic() + timeout
    while True:
        try:
            result.get(timeout=5)
            return
        except NoResultYet:
            if result.state == "SUCCESS":
                return
            if time.monotonic() > deadline:
                raise


class Runner:
    redis = True

    def throughput(self, jobs: int) -> dict[str, Any]:
        worker = self.start()
        self.warm_up()
        self.reset_counts()
        before = self.cpu_now(worker.pid), self.calls()
        started = time.perf_counter()
        done = self.run_many(jobs)
        wall = time.perf_counter() - started
        after = self.cpu_now(worker.pid), self.calls()
        stop([worker], timeout=60)
        cpu = {key: (after[0][key] - before[0][key]) * 1000 / jobs for key in after[0]}
        out = {"jobs_per_s": done / wall, "completed": done,
               "cpu_ms_per_job": cpu["worker"],
               "cpu_ms_per_job_by_process": {
                   "worker main": cpu["main"], "worker pool": cpu["worker"] - cpu["main"],
                   "submitter": cpu["submitter"], "servers": cpu["servers"]},
               "redis_calls_per_job": (after[1] - before[1]) / jobs if self.redis else None}
        out.update(self.sql_per_job(jobs))
        return out

    @staticmethod
    def cpu_now(worker: int) -> dict[str, float]:
        return {"worker": tree_cpu(worker), "main": own_cpu(worker),
                "submitter": time.process_time(), "servers": servers_cpu()}

    def calls(self) -> int:
        return redis_calls() if self.redis else 0

    def reset_counts(self) -> None:
        """Statements counted so far (schema, warm-up) are not the run's."""

    def sql_per_job(self, jobs: int) -> dict[str, Any]:
        return {"sql_statements_per_job": None, "sql_commits_per_job": None}


class RawCelery(Runner):
    def __init__(self) -> None:
        from bench import trivial_app

        url = os.environ.get("PIPELINE_TEST_REDIS_URL", "redis://127.0.0.1:6379/11")
        os.environ.update(BENCH_BROKER_URL=url, BENCH_RESULT_BACKEND=url)
        self.app = trivial_app.create_app()
        self.noop = self.app.signature(trivial_app.NOOP)
        self.queue = trivial_app.QUEUE

    def start(self) -> subprocess.Popen[bytes]:
        return start_worker([sys.executable, "-m", "celery", "-A", "bench.trivial_app", "worker",
                             "-Q", self.queue, "-c", "2", "--without-gossip",
                             "--without-mingle", "-l", "INFO"], Path("raw-worker.log"))

    def chain(self, i: int) -> Any:
        from celery import chain

        return chain(self.noop.clone(args=({"i": i},)), self.noop.clone(),
                     self.noop.clone()).apply_async()

    def warm_up(self) -> None:
        wait_for(self.chain(-1), 60)

    def run_many(self, jobs: int) -> int:
        results = [self.chain(i) for i in range(jobs)]
        for result in results:
            wait_for(result, 600)
        return len(results)

    def latency(self, count: int) -> dict[str, Any]:
        worker = self.start()
        self.warm_up()
        sent = []
        for i in range(count):
            sent.append((datetime.now(UTC), self.chain(i)))
            time.sleep(0.02)
        latencies = []
        for at, result in sent:
            wait_for(result, 120)
            latencies.append((result.date_done.replace(tzinfo=UTC) - at).total_seconds())
        stop([worker], timeout=60)
        return percentiles(latencies)


class Pipeline(Runner):
    def __init__(self) -> None:
        from orchestrator.jobs.canvas import Orchestrator
        from orchestrator.settings import get_settings
        from orchestrator.store.db import migrate

        migrate()
        self.settings = get_settings()
        self.redis = not self.settings.embedded_broker
        self.orch = Orchestrator(self.settings)
        self.counter = 0
        self.submitted_at = 0.0

    def start(self, concurrency: int = 2, queues: str | None = None,
              name: str = "bench") -> subprocess.Popen[bytes]:
        """One worker; bench.scaling runs several at once, hence a name (node and log) each."""
        from cli.processes import worker_command

        command = worker_command(concurrency, name=name, queues=queues or None, loglevel="INFO")
        return start_worker(command, self.settings.var_dir / f"worker-{name}-{self.counter}.log")

    def drop(self, count: int) -> list[Path]:
        paths = []
        for _ in range(count):
            self.counter += 1
            path = self.orch.share.input / f"job{self.counter:06d}.csv"
            path.write_text(f"date,A\n2020-01-0{self.counter % 9 + 1},{self.counter}\n")
            paths.append(path)
        return paths

    def completed(self) -> int:
        return sum(1 for p in self.orch.share.completed.iterdir() if p.name != "batches")

    def warm_up(self) -> None:
        before = self.completed()
        self.orch.submit(self.drop(1)[0])
        while self.completed() <= before:
            time.sleep(0.01)

    def run_many(self, jobs: int) -> int:
        before = self.completed()
        # All at once, as `pipeline submit *.csv` does: one group (claims, one transaction,
        # then a chain per job), where raw Celery applies a chain per job.
        self.orch.submit_many(self.drop(jobs))
        self.submitted_at = time.perf_counter()  # bench.scaling: is the submitter the limit?
        deadline = time.monotonic() + 600
        while self.completed() < before + jobs and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.completed() - before

    def reset_counts(self) -> None:
        from orchestrator.store import db

        db._stats.update(statements=0, commits=0)

    def sql_per_job(self, jobs: int) -> dict[str, Any]:
        folder = Path(os.environ["PIPELINE_SQL_STATS_DIR"])
        counts = [json.loads(p.read_text()) for p in folder.glob("*.json")]
        from orchestrator.store import db

        statements = sum(c["statements"] for c in counts) + db._stats["statements"]
        commits = sum(c["commits"] for c in counts) + db._stats["commits"]
        return {"sql_statements_per_job": statements / jobs, "sql_commits_per_job": commits / jobs}

    def latency(self, count: int) -> dict[str, Any]:
        from orchestrator.store import jobs as store

        worker = self.start()
        self.warm_up()
        sent = []
        for path in self.drop(count):
            at = datetime.now(UTC)
            sent.append((at, self.orch.submit(path)))
            time.sleep(0.02)
        deadline = time.monotonic() + 120
        while self.completed() < self.counter and time.monotonic() < deadline:
            time.sleep(0.05)
        latencies = [(store.get_job(j).finished_at - at).total_seconds() for at, j in sent]
        stop([worker], timeout=60)
        return percentiles(latencies)


if __name__ == "__main__":
    main()
