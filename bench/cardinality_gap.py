"""Optimality gap of the exact-K selection against an independent exact MIQP (SCIP).

    python -m bench.cardinality_gap            # 20 universes of 25 assets, K = 10
    python -m bench.cardinality_gap --smoke    # 3 universes
    python -m bench.cardinality_gap --assets 25 --size 10 --instances 40 --json gap.json

Each universe is 25 tickers drawn at random (seeded) from the real sample, or a seeded
synthetic one. For each objective it solves the cardinality-constrained problem exactly with
SCIP through cvxpy (binary z_i, Σz = K, min_weight·z_i ≤ w_i ≤ max_weight·z_i; max_sharpe
in its homogenized form with a big-M bound on Σy), values SCIP's subset by an exact convex
solve on it, and compares the objective value of:
relaxation top-K alone (the previous engine), top-K + swap search, and the engine as it
runs (which adds DAQP's branch and bound on universes of at most 60 tickers).
Gap = (engine − exact) / |exact| on the minimized value (variance, −Sharpe, −return).
Needs pyscipopt (in the [dev] extra).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cvxpy as cp
import numpy as np
import pandas as pd

from orchestrator.optimizer import cardinality, qp
from orchestrator.optimizer.estimates import estimate
from orchestrator.optimizer.request import PortfolioRequest

SAMPLE = Path(__file__).resolve().parents[1] / "orchestrator" / "examples" / "sp500_sample.csv"
LOW, HIGH, RATE = 0.01, 0.25, 0.02
OBJECTIVES = ("min_volatility", "max_sharpe", "efficient_return", "efficient_risk")


def universes(count: int, assets: int, seed: int = 11) -> list[tuple[str, pd.DataFrame]]:
    prices = pd.read_csv(SAMPLE, index_col="date", parse_dates=True).dropna(axis=1)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        if i % 2 == 0:
            cols = sorted(rng.choice(prices.columns, assets, replace=False))
            out.append((f"sample#{i}", prices[cols]))
        else:
            out.append((f"synthetic#{i}", synthetic(assets, 756, seed + i)))
    return out


def synthetic(assets: int, days: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    market = rng.normal(0.0003, 0.01, days)
    beta = rng.uniform(0.5, 1.5, assets)
    idio = rng.normal(0, 1, (days, assets)) * rng.uniform(0.008, 0.02, assets)
    drift = rng.normal(0.0002, 0.0002, assets)
    r = drift + np.outer(market, beta) + idio
    return pd.DataFrame(100 * np.cumprod(1 + r, axis=0),
                        index=pd.bdate_range("2015-01-01", periods=days),
                        columns=[f"S{i:02d}" for i in range(assets)])


def targets(problem: qp.Problem, size: int) -> qp.Problem:
    """Targets in the middle of what K holdings can reach, so the constraint binds."""
    floor = cardinality.select(qp.Problem("min_volatility", problem.mu, problem.cov), size,
                               LOW, HIGH, lambda: np.arange(size))
    w, idx = floor.solution.weights, floor.solution.index
    low_ret = float(w @ problem.mu[idx])
    top = cardinality.best_return(problem.mu[cardinality.best_return_subset(problem.mu, size)],
                                  LOW, HIGH)
    return qp.Problem(problem.objective, problem.mu, problem.cov, RATE,
                      1.25 * np.sqrt(floor.value), low_ret + 0.5 * (top - low_ret))


def scip_exact(problem: qp.Problem, size: int) -> float:
    """The best subset by SCIP, valued by solving the convex problem on it exactly (so that
    SCIP's feasibility tolerance, ~1e-6 on the quadratic constraint, does not count)."""
    n = problem.mu.size
    cov, mu = cp.psd_wrap(problem.cov), problem.mu
    z = cp.Variable(n, boolean=True)
    w = cp.Variable(n)
    common = [cp.sum(z) == size, w >= LOW * z, w <= HIGH * z, cp.sum(w) == 1]
    if problem.objective == "max_sharpe":
        chosen = _scip_sharpe(problem, size)
    else:
        if problem.objective == "efficient_risk":
            prob = cp.Problem(cp.Maximize(mu @ w),
                              [*common, cp.quad_form(w, cov) <= problem.target_volatility**2])
        else:
            extra = ([mu @ w >= problem.target_return]
                     if problem.objective == "efficient_return" else [])
            prob = cp.Problem(cp.Minimize(cp.quad_form(w, cov)), common + extra)
        prob.solve(solver="SCIP")
        chosen = np.flatnonzero(z.value > 0.5)
    sol = qp.solve(problem, chosen, LOW, HIGH)
    return qp.value(problem, sol.index, sol.weights)


def _scip_sharpe(problem: qp.Problem, size: int) -> np.ndarray:
    """min yᵀΣy, (μ−r)ᵀy = 1, low·κ ≤ y_i ≤ high·κ when held, y_i = 0 otherwise; κ ≤ κ_max
    from Sharpe ≥ the engine's and volatility ≥ the box minimum (valid, not cutting)."""
    n = problem.mu.size
    engine = cardinality.select(problem, size, LOW, HIGH, lambda: np.arange(size))
    floor = qp.solve(qp.Problem("min_volatility", problem.mu, problem.cov), np.arange(n), 0, HIGH)
    sigma_min = np.sqrt(floor.weights @ problem.cov @ floor.weights)
    kappa_max = 1.0 / (-engine.value * sigma_min) * 1.001
    big = HIGH * kappa_max
    y, z, kappa = cp.Variable(n), cp.Variable(n, boolean=True), cp.Variable()
    cons = [(problem.mu - RATE) @ y == 1, cp.sum(y) == kappa, kappa <= kappa_max,
            y >= 0, y <= HIGH * kappa, y <= big * z, y >= LOW * kappa - big * (1 - z),
            cp.sum(z) == size]
    prob = cp.Problem(cp.Minimize(cp.quad_form(y, cp.psd_wrap(problem.cov))), cons)
    prob.solve(solver="SCIP")
    return np.flatnonzero(z.value > 0.5)


@contextmanager
def engine(swaps: bool, exact: bool) -> Iterator[None]:
    """The engine with its swap search and/or exact MIQP switched off."""
    saved = (cardinality.DEFAULT_SWAP_EVALUATIONS, dict(cardinality.SWAP_EVALUATIONS),
             cardinality.EXACT_MAX_ASSETS)
    if not swaps:
        cardinality.DEFAULT_SWAP_EVALUATIONS = 0
        cardinality.SWAP_EVALUATIONS.update(efficient_risk=0)
    if not exact:
        cardinality.EXACT_MAX_ASSETS = 0
    try:
        yield
    finally:
        cardinality.DEFAULT_SWAP_EVALUATIONS = saved[0]
        cardinality.SWAP_EVALUATIONS.clear()
        cardinality.SWAP_EVALUATIONS.update(saved[1])
        cardinality.EXACT_MAX_ASSETS = saved[2]


def engine_values(problem: qp.Problem, size: int) -> dict[str, float]:
    def fallback() -> np.ndarray:
        return cardinality.best_return_subset(problem.mu, size)

    out = {}
    for name, swaps, exact in (("top-K", False, False), ("top-K + swaps", True, False),
                               ("engine", True, True)):
        with engine(swaps, exact):
            out[name] = cardinality.select(problem, size, LOW, HIGH, fallback).value
    return out


def measure(count: int, assets: int, size: int) -> list[dict[str, Any]]:
    rows = []
    for name, prices in universes(count, assets):
        est = estimate(prices, PortfolioRequest(size))
        for objective in OBJECTIVES:
            problem = targets(qp.Problem(objective, est.mu, est.cov, RATE), size)
            started = time.perf_counter()
            exact = scip_exact(problem, size)
            scip_seconds = time.perf_counter() - started
            values = engine_values(problem, size)
            rows.append({"universe": name, "objective": objective, "exact": exact,
                         "scip_seconds": round(scip_seconds, 3),
                         **{k: (v - exact) / abs(exact) for k, v in values.items()}})
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    methods = ("top-K", "top-K + swaps", "engine")
    lines = ["| objective | instances | " + " | ".join(
        f"{m}: median / worst gap, optimal in" for m in methods) + " | SCIP s (median) |",
        "|---|---|" + "---|" * len(methods) + "---|"]
    for objective in OBJECTIVES:
        mine = [r for r in rows if r["objective"] == objective]
        cells = []
        for m in methods:
            gaps = [max(r[m], 0.0) for r in mine]
            hit = sum(g <= 1e-6 for g in gaps)
            cells.append(f"{statistics.median(gaps):.2e} / {max(gaps):.2e}, {hit}/{len(gaps)}")
        scip = statistics.median(r["scip_seconds"] for r in mine)
        lines.append(f"| {objective} | {len(mine)} | " + " | ".join(cells) + f" | {scip:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--instances", type=int, default=20)
    parser.add_argument("--assets", type=int, default=25)
    parser.add_argument("--size", type=int, default=10)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    count = 3 if args.smoke else args.instances
    rows = measure(count, args.assets, args.size)
    print(f"{args.assets} assets, K = {args.size}, weights {LOW}..{HIGH}, "
          f"{count} universes; gap vs SCIP (≤ 1e-6 counts as exact)")
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
