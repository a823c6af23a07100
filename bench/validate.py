"""The validate step and its hand-off to optimize, on real-size price files, in one process.

    python -m bench.validate                 # 500 × 1,585 and 5,000 × 756, 7 runs each
    python -m bench.validate --smoke         # 60 × 300, 1 run (CI: the code paths still work)
    python -m bench.validate --sizes 500x1585,2000x756 --repeat 5 --json out.json
    python -m bench.validate --skip job,"clean csv"

Files are generated, not downloaded: geometric random walks whose daily log-return mean and
volatility, and whose starting prices, are drawn from the bundled S&P 500 sample's own
(orchestrator/examples/sp500_sample.csv), with a few short gaps, one sparse ticker and one
late listing (its first 136 dates empty, 8.6 % of 1,585), written with 10 significant digits
as the sample is. Each size is measured in this one process: a warm-up, then ``--repeat``
runs of each stage; the table shows medians of wall and CPU seconds (process CPU, so threads
count) and the peak RSS of the process after the size's runs.

Stages: ``validate`` (validate_prices: read, check, clean), ``write hand-off`` (what validate
leaves for optimize), ``read hand-off`` (what optimize loads), ``clean csv`` (the human-facing
prices.clean.csv) and ``job`` (the three steps as a worker runs them: run_validate,
run_optimize and run_archive on a job folder, optimizer included). The job runs only on files
of at most ``--job-tickers`` (1,000) tickers: on larger universes the optimizer's own work
dominates, and bench/real_jobs.py measures whole jobs there.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from orchestrator.steps import run, validate

SAMPLE = Path(__file__).resolve().parents[1] / "orchestrator" / "examples" / "sp500_sample.csv"
LATE_ROWS = 136


def generate(path: Path, tickers: int, days: int, seed: int = 7) -> Path:
    """A realistic wide price file: random walks with the sample's statistics, gaps, a late
    listing (first LATE_ROWS dates empty) and one ticker too sparse to keep."""
    rng = np.random.default_rng(seed)
    sample = pd.read_csv(SAMPLE, index_col="date").dropna(axis=1)
    logs = np.log(sample.to_numpy()[1:] / sample.to_numpy()[:-1])
    pick = rng.integers(0, logs.shape[1], tickers)
    mu, sigma = logs.mean(axis=0)[pick], logs.std(axis=0)[pick] * rng.uniform(0.8, 1.2, tickers)
    start = sample.to_numpy()[0, pick] * rng.uniform(0.5, 2.0, tickers)
    steps = rng.standard_normal((days, tickers)) * sigma + mu
    steps[0] = 0.0
    prices = start * np.exp(np.cumsum(steps, axis=0))
    prices[rng.random(prices.shape) < 0.002] = np.nan  # short gaps, filled forward
    prices[:LATE_ROWS, tickers // 2] = np.nan  # a late listing, kept (under 10 % missing)
    prices[: days // 2, tickers // 3] = np.nan  # too sparse: dropped
    dates = pd.bdate_range("2015-01-02", periods=days, name="date")
    names = [f"T{i:04d}" for i in range(tickers)]
    pd.DataFrame(prices, index=dates, columns=names).to_csv(
        path, float_format="%.10g", date_format="%Y-%m-%d")
    return path


def timed(call: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Median wall and CPU seconds of ``repeat`` calls after one warm-up."""
    call()
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        call()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def job_context(root: Path, source: Path) -> run.StepContext:
    """A job folder holding ``source`` as its input, and the context the steps run in."""
    from orchestrator.jobs.jobspec import JobParams
    from orchestrator.settings import Settings

    folder = root / "share" / "processing" / "job"  # steps read only inside the share
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "input").mkdir(parents=True)
    shutil.copyfile(source, folder / "input" / source.name)
    return run.StepContext(job_id="bench", folder=folder, params=JobParams(),
                           settings=Settings(share_dir=root / "share", var_dir=root / "var"),
                           progress=lambda _fraction: None)


def whole_job(ctx: run.StepContext) -> None:
    """run_validate, run_optimize, run_archive, as a worker runs them (a step run again on
    the same folder rewrites the same files, as a redelivered one does)."""
    run.run_validate(ctx)
    run.run_optimize(ctx)
    run.run_archive(ctx)


def measure(tickers: int, days: int, repeat: int, root: Path, skip: set[str],
            job_tickers: int) -> dict[str, Any]:
    source = generate(root / f"prices_{tickers}x{days}.csv", tickers, days)
    rules = validate.ValidationRules(min_tickers=20)
    prices, report = validate.validate_prices(source, rules)
    handoff = root / "handoff"
    ctx = job_context(root, source)
    row: dict[str, Any] = {"size": f"{tickers}×{days}", "mb": source.stat().st_size / 1e6,
                           "kept": f"{prices.shape[1]}×{prices.shape[0]}",
                           "edge_rows_dropped": report.edge_rows_dropped}
    stages: dict[str, Callable[[], object]] = {
        "validate": lambda: validate.validate_prices(source, rules),
        "write hand-off": lambda: validate.write_handoff(prices, handoff),
        "read hand-off": lambda: validate.read_handoff(handoff),
        "clean csv": lambda: validate.write_clean(prices, root / "clean.csv"),
        "job": lambda: whole_job(ctx),
    }
    validate.write_handoff(prices, handoff)
    if tickers > job_tickers:
        skip = skip | {"job"}
    for name, call in stages.items():
        row[name] = (math.nan, math.nan) if name in skip else timed(call, repeat)
    row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return row


def table(rows: list[dict[str, Any]]) -> str:
    stages = ["validate", "write hand-off", "read hand-off", "clean csv", "job"]
    head = ["size", "MB", "kept", *[f"{s} wall/cpu s" for s in stages], "peak RSS MB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["size"], f"{row['mb']:.1f}", row["kept"],
                 *["–" if math.isnan(row[s][0]) else f"{row[s][0]:.3f} / {row[s][1]:.3f}"
                   for s in stages],
                 f"{row['peak_rss_mb']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="500x1585,5000x756", help="TICKERSxDAYS,…")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--smoke", action="store_true", help="60 × 300, one run")
    parser.add_argument("--skip", default="", help="stages not to run, e.g. job")
    parser.add_argument("--job-tickers", type=int, default=1000,
                        help="run the whole-job stage only on files this wide or narrower")
    parser.add_argument("--json", type=Path, help="write the rows here too")
    args = parser.parse_args(argv)
    sizes = "60x300" if args.smoke else args.sizes
    repeat = 1 if args.smoke else args.repeat
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-validate-") as folder:
        for size in sizes.split(","):
            tickers, days = (int(part) for part in size.split("x"))
            rows.append(measure(tickers, days, repeat, Path(folder),
                                set(filter(None, args.skip.split(","))), args.job_tickers))
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
