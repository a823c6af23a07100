"""The optimize step against PyPortfolioOpt on the same problem, in one warm process.

    python -m bench.optimize                      # 500 × 2,520 synthetic + the real sample
    python -m bench.optimize --smoke              # 120 × 500 synthetic + sample, 1 run, K = 20
    python -m bench.optimize --repeat 7 --json out.json

For each universe, K (20, 100) and objective (min_volatility, max_sharpe), with weights in
[0.005, 0.10]: ours is the whole step (orchestrator.steps.optimize.optimize: estimates,
relaxation, swap search, exact MIQP where affordable, figures). PyPortfolioOpt does the same
problem the way the engine used to: CovarianceShrinkage.ledoit_wolf + mean_historical_return
(arithmetic, compounding=False) + EfficientFrontier(0, max_weight) with Clarabel, the same
top-K rule, and EfficientFrontier again on the K with (min_weight, max_weight). Both run once
to warm up, then --repeat rounds, ours and theirs alternating; medians are reported. Peak
memory is measured in a separate call of each under tracemalloc (NumPy reports its buffers).
The objective columns are evaluated on the same covariance: variance ratio for min_volatility
(ours / theirs, ≤ 1 is at least as good), Sharpe ratio for max_sharpe. Both run with one
BLAS thread (our step limits itself: see orchestrator/steps/optimize.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import tracemalloc
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import ThreadpoolController

from orchestrator.steps.optimize import PortfolioRequest, optimize

SAMPLE = Path(__file__).resolve().parents[1] / "orchestrator" / "examples" / "sp500_sample.csv"
LOW, HIGH, RATE = 0.005, 0.10, 0.02
OBJECTIVES = ("min_volatility", "max_sharpe")


def synthetic(assets: int, days: int, seed: int = 2024) -> pd.DataFrame:
    """Seeded factor-model prices: a market, 10 sectors, idiosyncratic noise; μ ≈ 8 % ± 6 %."""
    rng = np.random.default_rng(seed)
    market = rng.normal(0.0, 0.010, days)
    sectors = rng.normal(0.0, 0.006, (days, 10))
    sector_of = rng.integers(0, 10, assets)
    beta = rng.uniform(0.6, 1.4, assets)
    idio = rng.normal(0.0, 1.0, (days, assets)) * rng.uniform(0.010, 0.025, assets)
    drift = rng.normal(0.08, 0.06, assets) / 252
    returns = drift + np.outer(market, beta) + sectors[:, sector_of] + idio
    prices = 100.0 * np.cumprod(1.0 + returns, axis=0)
    return pd.DataFrame(prices, index=pd.bdate_range("2010-01-04", periods=days),
                        columns=[f"S{i:03d}" for i in range(assets)])


def sample() -> pd.DataFrame:
    return pd.read_csv(SAMPLE, index_col="date", parse_dates=True).dropna(axis=1)


def pypfopt_step(prices: pd.DataFrame, objective: str, size: int) -> dict[str, float]:
    """PyPortfolioOpt on the same problem: estimates, full solve, top-K, re-solve; with one
    BLAS thread, as our step runs, so that neither gains or loses from threading."""
    with ThreadpoolController().limit(limits=1, user_api="blas"):
        return _pypfopt_step(prices, objective, size)


def _pypfopt_step(prices: pd.DataFrame, objective: str, size: int) -> dict[str, float]:
    from pypfopt import EfficientFrontier, expected_returns, risk_models

    cov = risk_models.CovarianceShrinkage(prices).ledoit_wolf()
    mu = expected_returns.mean_historical_return(prices, compounding=False)

    def solve(m: pd.Series, s: pd.DataFrame, bounds: tuple[float, float]) -> pd.Series:
        ef = EfficientFrontier(m, s, weight_bounds=bounds, solver="CLARABEL")
        if objective == "max_sharpe":
            ef.max_sharpe(risk_free_rate=RATE)
        else:
            ef.min_volatility()
        return pd.Series(ef.weights, index=m.index)

    full = solve(mu, cov, (0.0, HIGH))
    vol = np.sqrt(np.diag(cov.to_numpy()))
    score = (mu.to_numpy() - RATE) / vol if objective == "max_sharpe" else -vol
    held = np.where(full.to_numpy() > 1e-9, full.to_numpy(), 0.0)
    chosen = mu.index[np.sort(np.lexsort((-score, -held))[:size])]
    weights = solve(mu[chosen], cov.loc[chosen, chosen], (LOW, HIGH))
    return _figures(weights, mu, cov)


def ours_step(prices: pd.DataFrame, objective: str, size: int) -> dict[str, float]:
    portfolio = optimize(prices, PortfolioRequest(size, objective, HIGH, LOW, RATE))
    return {"variance": portfolio.volatility**2, "sharpe": portfolio.sharpe,
            **{k: v for k, v in portfolio.timings.items()}}


def _figures(weights: pd.Series, mu: pd.Series, cov: pd.DataFrame) -> dict[str, float]:
    idx = weights.index
    w = weights.to_numpy()
    variance = float(w @ cov.loc[idx, idx].to_numpy() @ w)
    return {"variance": variance, "sharpe": (float(w @ mu[idx].to_numpy()) - RATE)
            / np.sqrt(variance)}


def timed(calls: list[Callable[[], dict[str, float]]], repeat: int,
          ) -> list[tuple[float, dict[str, float]]]:
    """Median seconds and last result of each call; the calls alternate within each round so
    that a shared machine's load falls on both alike."""
    for call in calls:
        call()  # warm-up: imports, BLAS threads, caches
    times: list[list[float]] = [[] for _ in calls]
    results: list[dict[str, float]] = [{} for _ in calls]
    for _ in range(repeat):
        for i, call in enumerate(calls):
            started = time.perf_counter()
            results[i] = call()
            times[i].append(time.perf_counter() - started)
    return [(statistics.median(t), r) for t, r in zip(times, results, strict=True)]


def peak_mib(call: Callable[[], Any]) -> float:
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def run_case(name: str, prices: pd.DataFrame, objective: str, size: int, repeat: int,
             ) -> dict[str, Any]:
    (ours_s, ours), (theirs_s, theirs) = timed(
        [lambda: ours_step(prices, objective, size),
         lambda: pypfopt_step(prices, objective, size)], repeat)
    # A fresh estimate of the same covariance for both portfolios' figures: ours reports
    # variance on its own Ledoit–Wolf, equal to PyPortfolioOpt's to ~1e-16 (tested).
    key = "sharpe" if objective == "max_sharpe" else "variance"
    return {
        "universe": name, "assets": prices.shape[1], "days": prices.shape[0],
        "objective": objective, "size": size,
        "ours_seconds": ours_s, "pypfopt_seconds": theirs_s, "speedup": theirs_s / ours_s,
        "ours_peak_mib": peak_mib(lambda: ours_step(prices, objective, size)),
        "pypfopt_peak_mib": peak_mib(lambda: pypfopt_step(prices, objective, size)),
        "ours_value": ours[key], "pypfopt_value": theirs[key], "value": key,
        "ours_stages": {k: v for k, v in ours.items() if k.endswith("_seconds")},
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| universe | objective | K | ours s | PyPortfolioOpt s | speed-up | "
             "ours peak MiB | PyPortfolioOpt peak MiB | objective: ours vs theirs |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["value"] == "sharpe":
            versus = f"Sharpe {r['ours_value']:.4f} vs {r['pypfopt_value']:.4f}"
        else:
            versus = f"variance ×{r['ours_value'] / r['pypfopt_value']:.4f}"
        lines.append(
            f"| {r['universe']} ({r['assets']}×{r['days']}) | {r['objective']} | {r['size']} | "
            f"{r['ours_seconds']:.3f} | {r['pypfopt_seconds']:.3f} | {r['speedup']:.1f}× | "
            f"{r['ours_peak_mib']:.0f} | {r['pypfopt_peak_mib']:.0f} | {versus} |")
    return "\n".join(lines)


def stages(rows: list[dict[str, Any]]) -> str:
    keys = list(dict.fromkeys(k for r in rows for k in r["ours_stages"] if k != "total_seconds"))
    keys.append("total_seconds")
    lines = ["| universe | objective | K | " + " | ".join(
        k.removesuffix("_seconds") for k in keys) + " |"]
    lines.append("|---|---|---|" + "---|" * len(keys))
    for r in rows:
        cells = " | ".join(f"{r['ours_stages'].get(k, 0):.4f}" for k in keys)
        lines.append(f"| {r['universe']} | {r['objective']} | {r['size']} | {cells} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="small synthetic, 1 run, K=20")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=UserWarning)
    big = synthetic(120, 500) if args.smoke else synthetic(500, 2520)
    repeat = 1 if args.smoke else args.repeat
    universes = [("synthetic", big), ("sample", sample())]
    rows = []
    for name, prices in universes:
        for size in (20,) if args.smoke else (20, 100):
            if size > prices.shape[1]:
                continue
            for objective in OBJECTIVES:
                rows.append(run_case(name, prices, objective, size, repeat))
    print(f"median of {repeat} warm run(s); weights {LOW}..{HIGH}; risk-free {RATE}")
    print(table(rows))
    print("\nours by stage (seconds, last run):")
    print(stages(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
