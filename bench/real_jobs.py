"""Real-size price files through the real pipeline, against the plain script a user would write.

    python -m bench.real_jobs                 # 12 files of 500 × 1,585, 3 runs; scaling table
    python -m bench.real_jobs --smoke         # CI: 2 small files, 1 run, 50-ticker scaling row
    python -m bench.real_jobs --files 12 --repeat 3 --scaling 500x756,5000x756 --json out.json

Files: geometric random walks seeded from the bundled sample's statistics (per-ticker drift,
beta to the sample's equal-weight market, residual volatility, starting price; the market's
daily returns resampled from the sample's), with short gaps (filled), a few tickers too sparse
to keep (> 10 % missing) and one late listing. They are cached under tmp/real_jobs/
(gitignored): the first run writes them, later runs reuse them.

Throughput, in one run, on the same 2 cores, with the same 2 processes each:

- pipeline: a real ``celery worker -c 2`` (``cli.processes.worker_command``) on the embedded
  default (files + SQLite) and on Redis + a throwaway PostgreSQL database; the files are
  submitted at once (K = 20, min_volatility, weights in [0.01, 0.10]) and the run ends when
  every job is final. CPU: the worker's process tree (user + system); peak RSS: the largest
  VmHWM of its processes. Per step: ``validate_seconds``/``optimize_seconds`` and the
  optimizer's stages from each job's report.json; "rest" is the job's wall time (store)
  minus those (archive, queue waits, hand-offs).
- plain script (``plain_job``): pandas ``read_csv``, drop tickers with > 10 % missing, fill
  forward (and drop the leading rows a late listing leaves empty), PyPortfolioOpt's
  Ledoit–Wolf, ``EfficientFrontier.min_volatility`` over the universe with weights in
  [0, 0.10], keep the 20 largest, re-solve them in [0.01, 0.10], write weights.csv and a
  small report.json; in a ``multiprocessing`` pool of 2. CPU and peak RSS: its children's.

Scaling (``--scaling``): one file per size, the three steps' functions
(``orchestrator.steps.run``) run one after another in a fresh child process; per step its
wall time and peak RSS (VmHWM, reset before each step through /proc/self/clear_refs).

Medians of ``--repeat`` runs; the setups take turns within each run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from orchestrator.steps.registry import PIPELINE

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "tmp" / "real_jobs"
SAMPLE = ROOT / "orchestrator" / "examples" / "sp500_sample.csv"
PARAMS = {"portfolio_size": 20, "objective": "min_volatility", "min_weight": 0.01,
          "max_weight": 0.10}
SETUPS = ("embedded", "redis+postgresql")
SCALING = tuple(f"{n}x{d}" for d in (756, 2520) for n in (50, 500, 2000, 5000, 10000))
STEPS = PIPELINE.names


# --------------------------------------------------------------------------- the files


def sample_statistics() -> dict[str, np.ndarray]:
    """What the generated files borrow from the bundled sample (complete tickers only)."""
    prices = pd.read_csv(SAMPLE, index_col="date").dropna(axis=1)
    logs = np.diff(np.log(prices.to_numpy()), axis=0)
    market = logs.mean(axis=1)
    centred = market - market.mean()
    beta = (centred @ (logs - logs.mean(axis=0))) / (centred @ centred)
    residual = logs - np.outer(market, beta)
    return {"market": market - market.mean(), "beta": beta, "drift": logs.mean(axis=0),
            "residual": residual.std(axis=0), "start": prices.to_numpy()[0]}


def generate(tickers: int, days: int, seed: int) -> Path:
    """The cached file for (tickers, days, seed), written on first use."""
    path = CACHE / f"prices-{tickers}x{days}-s{seed}.csv"
    if path.exists():
        return path
    stats = sample_statistics()
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, stats["beta"].size, tickers)  # each ticker is like one of the sample's
    market = rng.choice(stats["market"], days - 1)
    noise = rng.standard_normal((days - 1, tickers)) * stats["residual"][pick]
    logs = stats["drift"][pick] + np.outer(market, stats["beta"][pick] * rng.uniform(0.8, 1.2,
                                                                                   tickers))
    values = stats["start"][pick] * np.exp(np.vstack([np.zeros(tickers),
                                                      np.cumsum(logs + noise, axis=0)]))
    _punch_gaps(values, rng)
    dates = pd.bdate_range("2019-01-02", periods=days)
    frame = pd.DataFrame(values, index=dates.strftime("%Y-%m-%d"),
                         columns=[f"T{i:05d}" for i in range(tickers)])
    frame.index.name = "date"
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".part")
    frame.to_csv(partial, float_format="%.4f")
    partial.replace(path)
    return path


def _punch_gaps(values: np.ndarray, rng: np.random.Generator) -> None:
    """Short gaps (0.2 % of cells, 1–3 days), 2 % of tickers too sparse, one late listing."""
    days, tickers = values.shape
    for _ in range(int(0.002 * values.size / 2)):
        row, col = rng.integers(1, days - 3), rng.integers(0, tickers)
        values[row: row + rng.integers(1, 4), col] = np.nan
    for col in rng.choice(tickers, max(1, tickers // 50), replace=False):
        values[rng.random(days) < 0.15, col] = np.nan
    values[: int(0.08 * days), tickers - 1] = np.nan  # listed after 8 % of the history


# --------------------------------------------------------------------------- plain script


def plain_job(path: Path, out: Path) -> float:
    """The job as a user would script it with pandas and PyPortfolioOpt; its wall seconds."""
    from pypfopt import EfficientFrontier, expected_returns, risk_models

    started = time.perf_counter()
    prices = pd.read_csv(path, index_col="date", parse_dates=True)
    prices = prices.loc[:, prices.isna().mean() <= 0.10].ffill().dropna()
    cov = risk_models.CovarianceShrinkage(prices).ledoit_wolf()
    mu = expected_returns.mean_historical_return(prices, compounding=False)
    universe = EfficientFrontier(mu, cov, weight_bounds=(0, PARAMS["max_weight"]))
    universe.min_volatility()
    top = pd.Series(universe.clean_weights()).nlargest(PARAMS["portfolio_size"]).index
    chosen = EfficientFrontier(mu[top], cov.loc[top, top],
                               weight_bounds=(PARAMS["min_weight"], PARAMS["max_weight"]))
    chosen.min_volatility()
    weights = pd.Series(chosen.clean_weights()).sort_values(ascending=False)
    ret, vol, sharpe = chosen.portfolio_performance()
    out.mkdir(parents=True, exist_ok=True)
    weights.rename("weight").to_csv(out / "weights.csv", index_label="ticker")
    (out / "report.json").write_text(json.dumps({
        "input": path.name, "tickers": int(prices.shape[1]), "rows": int(prices.shape[0]),
        "expected_return": ret, "volatility": vol, "sharpe": sharpe}, indent=2))
    return time.perf_counter() - started


def _plain_one(task: tuple[str, str]) -> float:
    return plain_job(Path(task[0]), Path(task[1]))


def run_plain(files: list[Path], processes: int) -> dict[str, Any]:
    """In a child: the plain script over the files in a pool of ``processes``."""
    out = Path(tempfile.mkdtemp(prefix="bench-plain-"))
    try:
        started = time.perf_counter()
        with multiprocessing.get_context("fork").Pool(processes) as pool:
            seconds = pool.map(_plain_one, [(str(f), str(out / f"job{i}"))
                                            for i, f in enumerate(files)], chunksize=1)
        wall = time.perf_counter() - started
    finally:
        shutil.rmtree(out, ignore_errors=True)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"wall_s": wall, "completed": len(seconds), "job_s": statistics.median(seconds),
            "cpu_s_per_job": (usage.ru_utime + usage.ru_stime) / len(files),
            "peak_rss_mb": usage.ru_maxrss / 1024}


# --------------------------------------------------------------------------- the pipeline


def run_pipeline(files: list[Path], processes: int) -> dict[str, Any]:
    """In a child with its own PIPELINE_* environment: a real worker, every file submitted."""
    import psutil

    from cli.processes import stop, worker_command
    from orchestrator.jobs.canvas import Orchestrator
    from orchestrator.store import jobs as store
    from orchestrator.store.db import migrate
    from orchestrator.store.states import FINAL, JobState

    migrate()
    orch = Orchestrator()
    var = orch.settings.var_dir
    var.mkdir(parents=True, exist_ok=True)
    log = var / "worker.log"
    with open(log, "wb") as output:
        worker = subprocess.Popen(worker_command(processes, name="realjobs", loglevel="WARNING"),
                                  stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_ready(worker, log)
        tree = psutil.Process(worker.pid)
        cpu_before = _tree_cpu(tree)
        staged = _stage(files, var / "staged")
        started = time.perf_counter()
        ids = [orch.submit(path, dict(PARAMS)) for path in staged]
        while not all(store.get_job(j).state in FINAL for j in ids):
            time.sleep(0.05)
        wall = time.perf_counter() - started
        cpu = _tree_cpu(tree) - cpu_before
        peak = max(_peak_rss_mb(p) for p in [tree, *tree.children(recursive=True)])
    finally:
        stop([worker])
    jobs = [store.get_job(j) for j in ids]
    done = [j for j in jobs if j.state is JobState.COMPLETED]
    reports = [json.loads((orch.share.completed / j.id / "report.json").read_text())
               for j in done]
    return {"wall_s": wall, "completed": len(done), "cpu_s_per_job": cpu / len(files),
            "peak_rss_mb": peak, **_step_medians(done, reports)}


def _stage(files: list[Path], folder: Path) -> list[Path]:
    """Copies to submit (a submit claims, i.e. moves, its input); names kept distinct."""
    folder.mkdir(parents=True, exist_ok=True)
    staged = []
    for i, path in enumerate(files):
        copy = folder / f"{i:03d}-{path.name}"
        shutil.copyfile(path, copy)
        staged.append(copy)
    return staged


def _step_medians(jobs: list[Any], reports: list[dict[str, Any]]) -> dict[str, float]:
    if not reports:
        return {}
    timings = [r["timings"] for r in reports]
    out = {f"{step}_s": statistics.median(t.get(f"{step}_seconds", 0.0) for t in timings)
           for step in ("validate", "optimize")}
    walls = [(j.finished_at - j.created_at).total_seconds() for j in jobs]
    out["job_s"] = statistics.median(walls)
    out["rest_s"] = statistics.median(
        w - t.get("validate_seconds", 0.0) - t.get("optimize_seconds", 0.0)
        for w, t in zip(walls, timings, strict=True))
    stages = [t.get("optimize_stages", {}) for t in timings]
    for key in ("estimates_seconds", "relaxation_seconds", "search_seconds", "exact_seconds"):
        values = [s[key] for s in stages if key in s]
        if values:
            out[f"stage_{key.removesuffix('_seconds')}_s"] = statistics.median(values)
    return out


def _tree_cpu(process: Any) -> float:
    total = 0.0
    for proc in [process, *process.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except Exception:  # a pool process that just exited
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


def _peak_rss_mb(process: Any) -> float:
    try:
        for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _wait_ready(worker: subprocess.Popen[bytes], log: Path, timeout: float = 90) -> None:
    """Until the worker answers a ping-free check: its log says ready (WARNING hides it), so
    wait for the pool's children to exist instead."""
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise SystemExit(f"worker exited:\n{log.read_text(errors='replace')[-3000:]}")
        if len(psutil.Process(worker.pid).children(recursive=True)) >= 2:
            time.sleep(1.0)  # the consumer starts right after the pool
            return
        time.sleep(0.1)
    raise SystemExit(f"worker not ready:\n{log.read_text(errors='replace')[-3000:]}")


# --------------------------------------------------------------------------- scaling


def run_steps(path: Path) -> dict[str, Any]:
    """In a child: validate, optimize, archive on one file, each step's seconds and peak RSS."""
    from orchestrator.jobs.jobspec import JobParams
    from orchestrator.settings import Settings
    from orchestrator.steps import run

    root = Path(tempfile.mkdtemp(prefix="bench-steps-"))
    folder = root / "share" / "processing" / "bench"  # steps read only inside the share
    try:
        (folder / "input").mkdir(parents=True)
        shutil.copyfile(path, folder / "input" / path.name)
        settings = Settings(share_dir=root / "share", var_dir=root / "var")
        ctx = run.StepContext("bench", folder, JobParams(**PARAMS), settings,
                              lambda _fraction: None, path.name)
        out: dict[str, Any] = {}
        for step in STEPS:
            _reset_peak()
            started = time.perf_counter()
            getattr(run, f"run_{step}")(ctx)
            out[f"{step}_s"] = time.perf_counter() - started
            out[f"{step}_rss_mb"] = _own_peak_mb()
            ctx.timings[f"{step}_seconds"] = out[f"{step}_s"]
            if step == "optimize":
                stages = json.loads((folder / run.PORTFOLIO).read_text())["timings"]
                out.update({f"stage_{k.removesuffix('_seconds')}_s": v
                            for k, v in stages.items() if k != "total_seconds"})
        out["sizes_kb"] = {name: (folder / name).stat().st_size // 1024
                           for name in ("portfolio.json", "report.json", "report.html")
                           if (folder / name).exists()}
        return out
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _reset_peak() -> None:
    with contextlib.suppress(OSError):  # resets VmHWM to the current RSS (Linux ≥ 4.0)
        Path("/proc/self/clear_refs").write_text("5")


def _own_peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


# --------------------------------------------------------------------------- parent


def child(args: list[str], env: dict[str, str], timeout: float) -> dict[str, Any]:
    from bench.servers import run_measured

    return run_measured("bench.real_jobs", args, env, ROOT, timeout)


def setup_environment(setup: str, root: Path) -> tuple[dict[str, str] | None, str | None]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PIPELINE_SHARE_DIR": str(root / "share"),
           "PIPELINE_VAR_DIR": str(root / "var"), "PIPELINE_LOG_LEVEL": "WARNING",
           "PIPELINE_MAX_INPUT_BYTES": str(2_000_000_000)}
    if setup == "embedded":
        return env, None
    from bench.sample_jobs import server_environment

    extra, database = server_environment()
    if extra is None:
        return None, None
    return {**env, **extra}, database


def measure_setup(setup: str, files: list[Path], processes: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="bench-realjobs-"))
    database = None
    try:
        if setup == "plain":
            env: dict[str, str] | None = {**os.environ, "PYTHONPATH": str(ROOT)}
        else:
            env, database = setup_environment(setup, root)
            if env is None:
                return {"skipped": "Redis or PostgreSQL unreachable"}
        return child(["--child", setup, "--processes", str(processes), *map(str, files)],
                     env, timeout=3600)
    finally:
        if database:
            import redis

            from bench.sample_jobs import REDIS
            from bench.servers import drop_database

            drop_database(database)
            redis.Redis.from_url(REDIS).flushdb()  # the bench's own database: leave it empty
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    args = parse_args()
    if args.child:
        files = [Path(f) for f in args.paths]
        if args.child == "plain":
            print(json.dumps(run_plain(files, args.processes)))
        elif args.child == "steps":
            print(json.dumps(run_steps(files[0])))
        else:
            print(json.dumps(run_pipeline(files, args.processes)))
        return
    files = [generate(args.tickers, args.days, seed) for seed in range(args.files)]
    runs: dict[str, list[dict[str, Any]]] = {}
    for turn in range(args.repeat if args.files else 0):  # --files 0: the scaling table only
        for setup in ("plain", *SETUPS):
            print(f"[{turn + 1}/{args.repeat}] {setup}", file=sys.stderr, flush=True)
            runs.setdefault(setup, []).append(measure_setup(setup, files, args.processes))
    rows = {setup: summarize(r) for setup, r in runs.items()}
    scaling = {size: scale(size, args.scaling_repeat) for size in args.scaling}
    print_tables(rows, scaling, args)
    if args.json:
        args.json.write_text(json.dumps({"throughput": rows, "scaling": scaling}, indent=2))
    if any(r.get("completed", 0) < args.files for r in rows.values() if "skipped" not in r):
        raise SystemExit(1)


def scale(size: str, repeat: int) -> dict[str, Any]:
    tickers, days = (int(x) for x in size.split("x"))
    path = generate(tickers, days, seed=1000)
    root = Path(tempfile.mkdtemp(prefix="bench-scaling-"))
    env, _ = setup_environment("embedded", root)
    print(f"scaling {size}", file=sys.stderr, flush=True)
    try:
        runs = [child(["--child", "steps", str(path)], env or {}, timeout=3600)
                for _ in range(repeat)]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    row = {k: statistics.median(r[k] for r in runs) for k in runs[0] if k != "sizes_kb"}
    row["sizes_kb"] = runs[0]["sizes_kb"]
    row["file_mb"] = path.stat().st_size / 1e6
    return row


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    if any("skipped" in r for r in runs):
        return {"skipped": runs[0].get("skipped", "")}
    keys = [k for k in runs[0] if all(k in r for r in runs)]
    out = {k: statistics.median(r[k] for r in runs) for k in keys}
    out["completed"] = min(r["completed"] for r in runs)
    out["files_per_s"] = statistics.median(r["completed"] / r["wall_s"] for r in runs)
    out["runs"] = len(runs)
    return out


def print_tables(rows: dict[str, dict[str, Any]], scaling: dict[str, dict[str, Any]],
                 args: argparse.Namespace) -> None:
    plain = rows.get("plain", {}).get("files_per_s")
    if rows:
        _print_throughput(rows, plain, args)
    if scaling:
        _print_scaling(scaling, args)


def _print_throughput(rows: dict[str, dict[str, Any]], plain: float | None,
                      args: argparse.Namespace) -> None:
    print(f"\n{args.files} files of {args.tickers} tickers × {args.days} days, "
          f"{args.processes} processes each, medians of {args.repeat} run(s)")
    print("| setup | files/s | × plain | wall s | job s | validate s | optimize s | rest s "
          "| estimates / relaxation / search / exact ms | CPU s/job | peak RSS MB | done |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for setup, r in rows.items():
        if "skipped" in r:
            print(f"| {setup} | skipped: {r['skipped']} |")
            continue
        ratio = f"{r['files_per_s'] / plain:.2f}×" if plain else "–"
        stages = " / ".join(f"{r[f'stage_{s}_s'] * 1000:.0f}" if f"stage_{s}_s" in r else "–"
                            for s in ("estimates", "relaxation", "search", "exact"))
        print(f"| {setup} | {r['files_per_s']:.2f} | {ratio} | {r['wall_s']:.2f} | "
              f"{r.get('job_s', 0):.2f} | {_cell(r, 'validate_s')} | {_cell(r, 'optimize_s')} | "
              f"{_cell(r, 'rest_s')} | {stages} | {r['cpu_s_per_job']:.2f} | "
              f"{r['peak_rss_mb']:.0f} | {r['completed']}/{args.files} |")


def _print_scaling(scaling: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    print(f"\nScaling: one file per size, the steps in a fresh process, medians of "
          f"{args.scaling_repeat} run(s); seconds and peak RSS (MB) per step")
    print("| tickers × days | file MB | validate s | optimize s (estimates / relaxation / "
          "search ms) | archive s | validate MB | optimize MB | archive MB | "
          "portfolio.json / report.html kB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for size, r in scaling.items():
        stages = " / ".join(f"{r.get(f'stage_{s}_s', 0) * 1000:.0f}"
                            for s in ("estimates", "relaxation", "search"))
        sizes = r["sizes_kb"]
        print(f"| {size.replace('x', ' × ')} | {r['file_mb']:.0f} | {r['validate_s']:.2f} | "
              f"{r['optimize_s']:.2f} ({stages}) | {r['archive_s']:.2f} | "
              f"{r['validate_rss_mb']:.0f} | {r['optimize_rss_mb']:.0f} | "
              f"{r['archive_rss_mb']:.0f} | {sizes.get('portfolio.json', 0)} / "
              f"{sizes.get('report.html', 0)} |")


def _cell(row: dict[str, Any], key: str) -> str:
    return f"{row[key]:.2f}" if key in row else "–"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=12)
    parser.add_argument("--tickers", type=int, default=500)
    parser.add_argument("--days", type=int, default=1585)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--scaling", default=",".join(SCALING),
                        help="tickers×days sizes, e.g. 500x756,5000x756 ('' for none)")
    parser.add_argument("--scaling-repeat", type=int, default=3)
    parser.add_argument("--smoke", action="store_true",
                        help="2 files of 100 × 300, 1 run, scaling 50 × 756 once: CI's check")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", choices=("plain", "steps", *SETUPS), help=argparse.SUPPRESS)
    parser.add_argument("paths", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.smoke:
        args.files, args.tickers, args.days, args.repeat = 2, 100, 300, 1
        args.scaling, args.scaling_repeat = "50x756", 1
    args.scaling = [s for s in str(args.scaling).split(",") if s] \
        if isinstance(args.scaling, str) else args.scaling
    return args


if __name__ == "__main__":
    main()
