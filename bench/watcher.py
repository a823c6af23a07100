"""The share watcher: drop-to-queued latency, and a burst of small files, with a real watcher.

    python -m bench.watcher [--drops 200] [--burst 10000] [--smoke] [--json out.json]

Each measure starts its own ``pipeline watch`` process on a fresh share and SQLite store under
/tmp (the embedded default; no worker runs, so a job stays ``queued`` and its first step waits
as a message file in the embedded broker's folder).

- Latency: ``--drops`` small CSVs (each with different content), one every 50 ms. A drop is
  timed from just before it appears in input/ to the time of the job's ``queued`` event in
  the status history (same clock). Three ways: renamed into input/ with events (instant
  pickup), written in place with events (waits ``PIPELINE_SETTLE_SECONDS``, default 1 s), and
  renamed into input/ in polling mode at the default ``PIPELINE_SCAN_INTERVAL`` (1 s).
- Burst: ``--burst`` small CSVs written beside the share, then renamed into input/ in one
  loop. Time from the first rename until every job is queued; the watcher's peak RSS (VmHWM);
  and the checks: exactly that many jobs, each input name once, none left in input/.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPACING = 0.05


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--drops", type=int, default=200)
    parser.add_argument("--burst", type=int, default=10_000)
    parser.add_argument("--smoke", action="store_true", help="20 drops, 300 files: CI's check")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.smoke:
        args.drops, args.burst = 20, 300
    rows = [latency("events", "rename", args.drops), latency("events", "in place", args.drops),
            latency("polling", "rename", args.drops)]
    burst_row = burst(args.burst)
    print_table(rows, burst_row)
    if args.json:
        args.json.write_text(json.dumps({"latency": rows, "burst": burst_row}, indent=2))
    if not burst_row["ok"] or any(r["queued"] < r["drops"] for r in rows):
        raise SystemExit(1)


# -- one watcher on a fresh share ---------------------------------------------------------------

class Setup:
    def __init__(self, mode: str, **extra: str) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=f"bench-watch-{mode}-"))
        self.input = self.root / "share" / "input"
        self.staging = self.root / "staging"
        self.staging.mkdir()
        self.env = {**os.environ, "PIPELINE_SHARE_DIR": str(self.root / "share"),
                    "PIPELINE_VAR_DIR": str(self.root / "var"), "PIPELINE_WATCH_MODE": mode,
                    "PYTHONPATH": str(ROOT), **extra}
        for key in ("PIPELINE_SCAN_INTERVAL", "PIPELINE_SETTLE_SECONDS", "PIPELINE_BROKER_URL",
                    "PIPELINE_RESULT_BACKEND", "PIPELINE_DATABASE_URL"):
            if key not in extra:
                self.env.pop(key, None)  # the defaults are what is measured
        self.log = self.root / "watch.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        handle = open(self.log, "wb")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen([sys.executable, "-m", "cli.main", "watch"], env=self.env,
                                     cwd=self.root, stdout=handle, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while "watching" not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"watcher did not start:\n{self.log.read_text()}")
            time.sleep(0.05)

    def peak_rss_mib(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def query(self, sql: str) -> list[tuple]:
        with sqlite3.connect(self.root / "var" / "pipeline.db", timeout=30) as conn:
            return conn.execute(sql).fetchall()

    def queued(self) -> int:
        return self.query("SELECT count(*) FROM jobs WHERE state = 'queued'")[0][0]

    def wait_queued(self, count: int, timeout: float) -> float:
        """Monotonic time when ``count`` jobs were seen queued (checked every 50 ms)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.queued() >= count:
                return time.monotonic()
            time.sleep(0.05)
        return float("nan")


def small_csv(index: int) -> bytes:
    """A valid wide price file of 12 tickers and 40 dates, different for every index."""
    tickers = [f"T{t:02d}" for t in range(12)]
    lines = ["date," + ",".join(tickers)]
    for day in range(40):
        prices = [100 + t + day * 0.1 + index * 1e-4 for t in range(12)]
        lines.append(f"2024-{1 + day // 28:02d}-{1 + day % 28:02d}," +
                     ",".join(f"{p:.4f}" for p in prices))
    return ("\n".join(lines) + "\n").encode()


# -- latency ------------------------------------------------------------------------------------

def latency(mode: str, how: str, drops: int) -> dict:
    setup = Setup(mode)
    setup.start()
    dropped: dict[str, float] = {}
    try:
        for i in range(drops):
            name = f"p{i:05d}.csv"
            data = small_csv(i)
            if how == "rename":
                (setup.staging / name).write_bytes(data)
                dropped[name] = time.time()
                os.rename(setup.staging / name, setup.input / name)
            else:
                dropped[name] = time.time()
                (setup.input / name).write_bytes(data)
            time.sleep(SPACING)
        setup.wait_queued(drops, timeout=60)
    finally:
        setup.stop()
    rows = setup.query("SELECT j.input_name, e.at FROM jobs j JOIN job_events e "
                       "ON e.job_id = j.id WHERE e.to_state = 'queued'")
    waits = sorted((_epoch(at) - dropped[name]) * 1000 for name, at in rows)
    if len(waits) == drops:
        shutil.rmtree(setup.root, ignore_errors=True)  # kept, for a look, when short
    return {"mode": mode, "how": how, "drops": drops, "queued": len(waits),
            "p50_ms": _pct(waits, 50), "p99_ms": _pct(waits, 99),
            "max_ms": waits[-1] if waits else float("nan"), "root": str(setup.root)}


def _epoch(at: str) -> float:
    return datetime.fromisoformat(at).replace(tzinfo=UTC).timestamp()


def _pct(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(pct) - 1]


# -- burst --------------------------------------------------------------------------------------

def burst(count: int) -> dict:
    setup = Setup("events", PIPELINE_MAX_QUEUED=str(count * 2))
    names = [f"b{i:05d}.csv" for i in range(count)]
    for i, name in enumerate(names):
        (setup.staging / name).write_bytes(small_csv(i))
    setup.start()
    try:
        started = time.monotonic()
        for name in names:
            os.rename(setup.staging / name, setup.input / name)
        renamed = time.monotonic() - started
        done = setup.wait_queued(count, timeout=max(120.0, count / 20))
        rss = setup.peak_rss_mib()
    finally:
        code = setup.stop()
    jobs, distinct = setup.query("SELECT count(*), count(DISTINCT input_name) FROM jobs")[0]
    left = sorted(os.listdir(setup.input))
    claimed = sum(1 for p in (setup.root / "share" / "processing").iterdir() if p.is_dir())
    seconds = done - started
    ok = jobs == distinct == count and not left and claimed == count and code == 0
    if ok:
        shutil.rmtree(setup.root, ignore_errors=True)  # kept, for a look, when a check fails
    return {"files": count, "renamed_s": renamed, "all_queued_s": seconds,
            "jobs_per_s": count / seconds if seconds == seconds else float("nan"),
            "peak_rss_mib": rss, "jobs": jobs, "distinct_inputs": distinct,
            "left_in_input": len(left), "claimed_folders": claimed, "exit_code": code,
            "ok": ok, "root": str(setup.root)}


def print_table(rows: list[dict], b: dict) -> None:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"\nShare watcher, {when}, {os.cpu_count()} CPUs, embedded default (SQLite, files)")
    print("\n| drop-to-queued | mode | drops | queued | p50 ms | p99 ms | max ms |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        mode = r["mode"] + (" (scan 1 s)" if r["mode"] == "polling" else "")
        print(f"| {r['how']} | {mode} | {r['drops']} | {r['queued']} | {r['p50_ms']:.1f} | "
              f"{r['p99_ms']:.1f} | {r['max_ms']:.1f} |")
    print("\n| burst | files | renames took s | all queued after s | jobs/s | peak RSS MiB "
          "| jobs | distinct inputs | left in input/ | claimed folders | ok |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    print(f"| events | {b['files']} | {b['renamed_s']:.2f} | {b['all_queued_s']:.1f} | "
          f"{b['jobs_per_s']:.0f} | {b['peak_rss_mib']:.0f} | {b['jobs']} | "
          f"{b['distinct_inputs']} | {b['left_in_input']} | {b['claimed_folders']} | "
          f"{'yes' if b['ok'] else 'NO'} |")


if __name__ == "__main__":
    main()
