"""Embedded broker and result backend setups compared, with real ``celery worker`` processes.

    python -m bench.transports [--chains 300] [--chord 20] [--repeat 3] [--smoke]
                               [--json out.json] [--configs A,D,G] [--keep-logs]

Each configuration gets fresh folders under /tmp and its own worker
(``celery -A bench.trivial_app worker -P prefork -c 2 --without-gossip --without-mingle
--without-heartbeat``), configured through ``BENCH_*`` environment variables. Measured:

* throughput: N three-step no-op chains published as fast as possible, from the first publish
  until every chain's last result is ready (only the last step stores a result); chains/s,
  median over ``--repeat`` runs;
* chord latency: a chord of 20 no-op tasks with a no-op callback, from ``apply_async`` until
  the callback's result is ready; median over ``--repeat`` runs;
* reliability: chains not finished within the timeout or failed ("lost"), and Tracebacks /
  JSONDecodeErrors in the worker's log.

See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from celery import chain, chord
from celery.states import READY_STATES, SUCCESS

from bench import trivial_app

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = "redis://127.0.0.1:6379/10"
READY_TIMEOUT = 60.0
STOP_GRACE = 10.0
CHORD_TIMEOUT = 30.0
POLL = 0.01  # how often the benchmark looks for results


@dataclass(frozen=True)
class Config:
    key: str
    name: str
    broker: str  # {dir} is the configuration's temp folder
    backend: str
    polling: float | None
    in_smoke: bool = True
    budget: float = 60.0  # seconds of throughput runs after which no further repeat starts
    run_cap: float = 60.0  # seconds a throughput run may take before its chains count as lost


CONFIGS = (
    Config("A", "stock filesystem:// + file://", "filesystem://", "file://{dir}/results",
           1.0, in_smoke=False, budget=40.0, run_cap=90.0),
    Config("B", "stock filesystem:// + file://", "filesystem://", "file://{dir}/results", 0.05),
    Config("C", "sqla+sqlite + db+sqlite", "sqla+sqlite:///{dir}/broker.db",
           "db+sqlite:///{dir}/results.db", 0.05, in_smoke=False, budget=30.0, run_cap=45.0),
    Config("D", "ours: atomicfs:// + atomicfile://", "atomicfs://", "atomicfile://{dir}/results",
           0.05),
    Config("E", "ours: atomicfs:// + atomicfile://", "atomicfs://", "atomicfile://{dir}/results",
           0.02),
    Config("F", "ours: atomicfs:// + atomicfile://", "atomicfs://", "atomicfile://{dir}/results",
           0.01),
    Config("G", "reference: Redis + Redis", REDIS_URL, REDIS_URL, None),
)


@dataclass
class Outcome:
    key: str
    name: str
    polling: float | None
    skipped: str = ""
    chains_per_s: list[float] = field(default_factory=list)
    chord_s: list[float] = field(default_factory=list)
    lost: int = 0
    capped_runs: int = 0
    chord_timeouts: int = 0
    read_errors: int = 0
    tracebacks: int = 0
    json_errors: int = 0
    wall_s: float = 0.0


# --- worker process -------------------------------------------------------------------------


class Worker:
    """A ``celery worker`` subprocess logging to ``log``; ``start`` waits for "ready."."""

    def __init__(self, env: dict[str, str], log: Path, name: str) -> None:
        self.env, self.log, self.name = env, log, name
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cmd = [sys.executable, "-m", "celery", "-A", "bench.trivial_app", "worker",
               "-P", "prefork", "-c", "2", "--without-gossip", "--without-mingle",
               "--without-heartbeat", "--loglevel", "INFO", "-n", f"{self.name}@%h"]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **self.env},
                                         stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + READY_TIMEOUT
        while "ready." not in self.text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not become ready; see {self.log}:\n"
                                   + self.text()[-2000:])
            time.sleep(0.05)

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        """SIGTERM (warm shutdown); SIGKILL to the worker's process group after 10 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def errors(self) -> tuple[int, int]:
        text = self.text()
        return text.count("Traceback"), len(re.findall(r"JSONDecodeError", text))


# --- measurements ---------------------------------------------------------------------------


@dataclass
class Waited:
    done: int = 0
    failed: int = 0
    read_errors: int = 0
    finished_at: float = 0.0


def _state(backend: Any, task_id: str, waited: Waited) -> str:
    try:
        return backend.get_task_meta(task_id)["status"]
    except Exception:  # a half-written result file, a locked database: not ready yet
        waited.read_errors += 1
        return "PENDING"


def wait_results(backend: Any, ids: list[str], deadline: float) -> Waited:
    """Wait until every id's result is ready, or ``deadline`` (``time.monotonic``).

    Walks the ids in publish order and waits at the first one not ready, so a pass costs one
    read while the workers catch up and the end is seen within ``POLL`` of the last result.
    """
    waited = Waited()
    while waited.done < len(ids):
        state = _state(backend, ids[waited.done], waited)
        if state in READY_STATES:
            waited.failed += state != SUCCESS
            waited.done += 1
        elif time.monotonic() < deadline:
            time.sleep(POLL)
        else:
            break
    waited.finished_at = time.perf_counter()
    # At the deadline: count the ones after the first unfinished chain that did finish.
    rest = [_state(backend, i, waited) for i in ids[waited.done + 1:]]
    waited.done += sum(s in READY_STATES for s in rest)
    waited.failed += sum(s in READY_STATES and s != SUCCESS for s in rest)
    return waited


def run_chains(app: Any, n: int, cap: float) -> tuple[float, int, int, bool]:
    """Publish ``n`` chains; return (chains/s, lost, read errors, capped)."""
    noop = app.tasks[trivial_app.NOOP]
    start = time.perf_counter()
    deadline = time.monotonic() + cap
    ids = [chain(noop.s({"i": i}).set(ignore_result=True), noop.s().set(ignore_result=True),
                 noop.s()).apply_async().id for i in range(n)]
    waited = wait_results(app.backend, ids, deadline)
    lost = n - waited.done + waited.failed
    elapsed = waited.finished_at - start
    return (waited.done - waited.failed) / elapsed, lost, waited.read_errors, waited.done < n


def run_chord(app: Any, size: int) -> float | None:
    """Seconds from ``apply_async`` to the callback's result, or None past CHORD_TIMEOUT."""
    noop = app.tasks[trivial_app.NOOP]
    start = time.perf_counter()
    result = chord([noop.s(i) for i in range(size)], noop.s()).apply_async()
    waited = wait_results(app.backend, [result.id], time.monotonic() + CHORD_TIMEOUT)
    return waited.finished_at - start if waited.done and not waited.failed else None


def purge(app: Any) -> None:
    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge(trivial_app.QUEUE)


# --- one configuration ----------------------------------------------------------------------


def environment(cfg: Config, folder: str) -> dict[str, str]:
    (Path(folder) / "results").mkdir()
    return {
        "BENCH_BROKER_URL": cfg.broker.format(dir=folder),
        "BENCH_RESULT_BACKEND": cfg.backend.format(dir=folder),
        "BENCH_POLLING": str(cfg.polling or 0.05),
        "BENCH_BROKER_FOLDER": os.path.join(folder, "broker"),
    }


def measure_throughput(app: Any, opts: argparse.Namespace, cfg: Config, out: Outcome) -> None:
    began = time.monotonic()
    for _ in range(opts.repeat):
        rate, lost, read_errors, capped = run_chains(app, opts.chains, cfg.run_cap)
        out.chains_per_s.append(rate)
        out.lost += lost
        out.read_errors += read_errors
        if capped:  # leftovers would skew the next run
            out.capped_runs += 1
            purge(app)
            break
        if time.monotonic() - began > cfg.budget:
            break


def measure_chords(app: Any, opts: argparse.Namespace, out: Outcome) -> None:
    for _ in range(opts.repeat):
        seconds = run_chord(app, opts.chord)
        if seconds is None:
            out.chord_timeouts += 1
            purge(app)
            break
        out.chord_s.append(seconds)


def run_config(cfg: Config, opts: argparse.Namespace, logs: Path) -> Outcome:
    out = Outcome(cfg.key, cfg.name, cfg.polling)
    folder = tempfile.mkdtemp(prefix=f"bench-transports-{cfg.key}-", dir="/tmp")
    began = time.monotonic()
    env = environment(cfg, folder)
    app = trivial_app.create_app(env)
    worker = Worker(env, logs / f"worker-{cfg.key}.log", f"bench-{cfg.key}")
    try:
        purge(app)  # Redis: nothing left from an earlier, interrupted run
        worker.start()
        # Warm-up (not measured): the pool's first connections and table creation.
        run_chains(app, 1, READY_TIMEOUT)
        measure_chords(app, opts, out)
        measure_throughput(app, opts, cfg, out)
    finally:
        worker.stop()
        app.close()
        out.tracebacks, out.json_errors = worker.errors()
        shutil.rmtree(folder, ignore_errors=True)
    out.wall_s = time.monotonic() - began
    return out


def redis_reachable() -> str:
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except Exception as exc:
        return f"Redis not reachable at {REDIS_URL}: {exc.__class__.__name__}"
    return ""


# --- report ---------------------------------------------------------------------------------


def _median(values: list[float], fmt: str) -> str:
    return format(statistics.median(values), fmt) if values else "—"


def _lost(out: Outcome) -> str:
    text = str(out.lost)
    return text + f" ({out.capped_runs} run hit cap)" if out.capped_runs else text


def _errors(out: Outcome) -> str:
    parts = [f"{out.tracebacks} Traceback", f"{out.json_errors} JSONDecodeError"]
    if out.read_errors:
        parts.append(f"{out.read_errors} client read errors")
    if out.chord_timeouts:
        parts.append("chord timed out")
    return ", ".join(parts)


def row(out: Outcome) -> list[str]:
    polling = "—" if out.polling is None else f"{out.polling:g} s"
    if out.skipped:
        return [f"{out.key}. {out.name}", polling, "skipped", "", "", "", out.skipped]
    return [f"{out.key}. {out.name}", polling, _median(out.chains_per_s, ".1f"),
            str(len(out.chains_per_s)), _median(out.chord_s, ".3f"), _lost(out), _errors(out)]


HEADERS = ["config", "polling", "chains/s (median)", "runs", "chord of {n} (median s)", "lost",
           "worker errors"]


def print_table(outcomes: list[Outcome], opts: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{opts.chains} chains x 3 no-op steps, worker -P prefork -c 2, "
                  f"prefetch multiplier {trivial_app.PREFETCH_MULTIPLIER}, acks_late, json")
    for header in HEADERS:
        table.add_column(header.format(n=opts.chord), overflow="fold")
    for out in outcomes:
        table.add_row(*row(out))
    Console(width=160).print(table)


# --- main -----------------------------------------------------------------------------------


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.transports", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chains", type=int, default=None, help="chains per run (300; smoke 20)")
    parser.add_argument("--chord", type=int, default=20, help="chord header size (20)")
    parser.add_argument("--repeat", type=int, default=None, help="runs per measure (3; smoke 1)")
    parser.add_argument("--smoke", action="store_true", help="quick check; skips A and C")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--configs", default="", help="only these, e.g. D,G")
    parser.add_argument("--keep-logs", action="store_true",
                        help="keep the worker logs (kept anyway when a worker logged errors)")
    opts = parser.parse_args(argv)
    opts.chains = opts.chains or (20 if opts.smoke else 300)
    opts.repeat = opts.repeat or (1 if opts.smoke else 3)
    return opts


def selected(opts: argparse.Namespace) -> list[Config]:
    wanted = {k.strip().upper() for k in opts.configs.split(",") if k.strip()}
    if wanted:
        return [c for c in CONFIGS if c.key in wanted]
    return [c for c in CONFIGS if c.in_smoke or not opts.smoke]


def main(argv: list[str] | None = None) -> None:
    opts = parse(argv)
    logs = Path(tempfile.mkdtemp(prefix="bench-transports-logs-", dir="/tmp"))
    began = time.monotonic()
    outcomes = []
    for cfg in selected(opts):
        print(f"[{time.monotonic() - began:5.0f} s] {cfg.key}. {cfg.name}, polling "
              f"{cfg.polling or '—'} ...", flush=True)
        skip = redis_reachable() if cfg.broker.startswith("redis") else ""
        outcomes.append(Outcome(cfg.key, cfg.name, cfg.polling, skipped=skip) if skip
                        else run_config(cfg, opts, logs))
    print_table(outcomes, opts)
    if opts.keep_logs or any(o.tracebacks or o.json_errors for o in outcomes):
        print(f"worker logs in {logs}")
    else:
        shutil.rmtree(logs, ignore_errors=True)
    print(f"total {time.monotonic() - began:.0f} s")
    if opts.json:
        opts.json.write_text(json.dumps({"options": {k: str(v) for k, v in vars(opts).items()},
                                         "results": [asdict(o) for o in outcomes]}, indent=2))


if __name__ == "__main__":
    main()
