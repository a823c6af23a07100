"""The optimize step: a long-only portfolio of exactly K holdings from a clean price table.

Estimates (orchestrator/optimizer/estimates.py), the convex solves (optimizer/qp.py,
optimizer/riskparity.py) and the exact-K selection (optimizer/cardinality.py) are imported
here once, when a worker first loads the step; nothing is imported per task.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from time import perf_counter
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import ThreadpoolController

from orchestrator.errors import ParameterError, SolverError
from orchestrator.optimizer import cardinality, covariance, figures, qp, riskparity
from orchestrator.optimizer.estimates import Estimates, estimate
from orchestrator.optimizer.request import (
    MAX_SIZE,
    MIN_SIZE,
    OBJECTIVES,
    TRADING_DAYS,
    PortfolioRequest,
    check_request,
)

__all__ = ["MAX_SIZE", "MIN_SIZE", "OBJECTIVES", "TRADING_DAYS", "Portfolio", "PortfolioRequest",
           "check_request", "optimize"]

OFF_BOUNDS_TOL = 1e-6  # solver answers further than this from the constraints are refused
AT_BOUND_TOL = 1e-7  # a weight this close to min_weight or max_weight is held at the bound


@dataclass(frozen=True)
class Portfolio:
    """The answer: weights of exactly K tickers, summing to 1, and what to read off them."""

    weights: dict[str, float]
    expected_return: float
    volatility: float
    sharpe: float
    method: str
    solver_status: str
    objective: str = "min_volatility"
    effective_holdings: float = 0.0
    max_drawdown: float = 0.0
    risk_contributions: dict[str, float] = field(default_factory=dict)
    estimates: dict[str, Any] = field(default_factory=dict)
    selection: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    in_sample: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def figures(self) -> dict[str, Any]:
        """The key figures, JSON-serializable."""
        weights = list(self.weights.values())
        return {
            "objective": self.objective,
            "expected_return": float(self.expected_return),
            "volatility": float(self.volatility),
            "sharpe": float(self.sharpe),
            "holdings": len(weights),
            "largest_weight": float(max(weights)),
            "effective_holdings": float(self.effective_holdings),
            "max_drawdown": float(self.max_drawdown),
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form, weights sorted from largest to smallest."""
        ordered = sorted(self.weights.items(), key=lambda item: (-item[1], item[0]))
        return {
            **self.figures(),
            "weights": {ticker: float(weight) for ticker, weight in ordered},
            "risk_contributions": {t: float(self.risk_contributions[t]) for t, _ in ordered},
            "method": self.method,
            "solver_status": self.solver_status,
            "estimates": self.estimates,
            "selection": self.selection,
            "timings": self.timings,
            "in_sample": self.in_sample,
            "warnings": list(self.warnings),
        }


# One BLAS thread per task: a worker already runs one task per core, and BLAS threads that
# compete for busy cores spin-wait. On this 2-core machine under load, two threads made the
# 500 × 2,520 covariance up to 10× slower and even the sample's 57 × 755 one 20× slower than
# one thread (measured); the controller scans the loaded libraries once, at import.
_BLAS = ThreadpoolController()


def _project(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Closest point to `values` with low <= w <= high and sum(w) == 1 (bisection on a shift)."""
    lo, hi = float(values.min()) - high, float(values.max()) - low
    for _ in range(64):  # the bracket is < 2 wide: 64 halvings reach 1e-19
        mid = 0.5 * (lo + hi)
        if np.clip(values - mid, low, high).sum() > 1.0:
            lo = mid
        else:
            hi = mid
    return np.clip(values - 0.5 * (lo + hi), low, high)


def _problem(est: Estimates, request: PortfolioRequest) -> qp.Problem:
    return qp.Problem(request.objective, est.mu, est.cov, request.risk_free_rate,
                      request.target_volatility, request.target_return)


def _select_min_volatility(est: Estimates, request: PortfolioRequest,
                           ) -> cardinality.Selection:
    problem = qp.Problem("min_volatility", est.mu, est.cov, request.risk_free_rate)
    low, high = request.min_weight, request.max_weight
    return cardinality.select(problem, request.portfolio_size, low, high,
                              lambda: cardinality.top_k(np.zeros(est.mu.size),
                                                        cardinality.asset_score(problem),
                                                        request.portfolio_size))


def _select_efficient_risk(est: Estimates, request: PortfolioRequest,
                           ) -> cardinality.Selection:
    floor = _select_min_volatility(est, request)
    lowest = math.sqrt(floor.value)
    target = float(request.target_volatility)
    if target < lowest * (1 - 1e-9):
        raise ParameterError(
            f"target_volatility {target:g} is below the lowest volatility reachable with "
            f"{request.portfolio_size} holdings within weights {request.min_weight:g}.."
            f"{request.max_weight:g}: {lowest:.4g} (the min_volatility portfolio); choose "
            f"target_volatility ≥ {math.ceil(lowest * 1e4) / 1e4:g}")
    return cardinality.select(_problem(est, request), request.portfolio_size,
                              request.min_weight, request.max_weight,
                              lambda: floor.solution.index)


def _select_risk_parity(est: Estimates, request: PortfolioRequest) -> cardinality.Selection:
    started = perf_counter()
    problem = _problem(est, request)
    score = cardinality.asset_score(problem)
    pool = _screen_risk_parity(score, request)
    universe = riskparity.unbounded(covariance.block(est.cov, pool))
    index = pool[cardinality.top_k(universe, score[pool], request.portfolio_size)]
    weights = riskparity.risk_parity(covariance.block(est.cov, index), request.min_weight,
                                     request.max_weight)
    details = {"method": "top-K by universe risk-parity weight, then bounded equal risk "
                         "contribution on them", "relaxation_candidates": int(pool.size),
               "relaxation_seconds": round(perf_counter() - started, 6)}
    return cardinality.Selection(qp.Solution(index, weights, "optimal"), math.nan, details)


def _screen_risk_parity(score: np.ndarray, request: PortfolioRequest) -> np.ndarray:
    """The lowest-volatility tickers, as many as the relaxation may consider (each Newton
    step of the universe ERC solves an N × N system: ~N³)."""
    cap = cardinality.screen_size(request.portfolio_size, request.max_weight)
    if score.size <= cap:
        return np.arange(score.size)
    return np.sort(np.argsort(-score, kind="stable")[:cap])


def _select(est: Estimates, request: PortfolioRequest) -> cardinality.Selection:
    objective = request.objective
    if objective == "risk_parity":
        return _select_risk_parity(est, request)
    if objective == "efficient_risk":
        return _select_efficient_risk(est, request)
    problem = _problem(est, request)
    size, low, high = request.portfolio_size, request.min_weight, request.max_weight
    cardinality.check_targets(problem, size, low, high)
    return cardinality.select(problem, size, low, high,
                              lambda: cardinality.best_return_subset(est.mu, size))


def _method(request: PortfolioRequest, est: Estimates, selection: cardinality.Selection) -> str:
    cov = "Ledoit-Wolf" if request.covariance == "ledoit_wolf" else "sample"
    mu = "mean historical" if request.expected_returns == "mean" else \
        f"EWMA (span {request.ewma_span})"
    solver = "Clarabel" if request.objective == "efficient_risk" else \
        "projected Newton" if request.objective == "risk_parity" else "DAQP"
    return (f"{cov} covariance, {mu} returns ({request.returns} daily, ×{TRADING_DAYS}); "
            f"{request.objective} with exactly {request.portfolio_size} holdings in "
            f"[{request.min_weight:g}, {request.max_weight:g}]: {selection.details['method']}; "
            f"solver {solver}")


def _finish(est: Estimates, request: PortfolioRequest, selection: cardinality.Selection,
            ) -> Portfolio:
    index, raw = selection.solution.index, selection.solution.weights
    weights = _project(raw, request.min_weight, request.max_weight)
    drift = float(np.abs(weights - raw).max())
    if drift > OFF_BOUNDS_TOL:
        raise SolverError(f"status {selection.solution.status} but weights off the "
                          f"constraints by {drift:.2g}")
    cov = covariance.block(est.cov, index)
    ret = float(weights @ est.mu[index])
    vol = math.sqrt(max(float(weights @ cov @ weights), 0.0))
    if not (math.isfinite(ret) and math.isfinite(vol) and vol > 0):
        raise SolverError(f"status {selection.solution.status} but portfolio figures are not "
                          f"finite (return {ret}, volatility {vol})")
    tickers = [est.tickers[i] for i in index]
    mine, equal = figures.in_sample(est.simple, index, weights)
    return Portfolio(
        weights=dict(zip(tickers, weights.tolist(), strict=True)),
        expected_return=ret, volatility=vol, sharpe=(ret - request.risk_free_rate) / vol,
        method=_method(request, est, selection), solver_status=selection.solution.status,
        objective=request.objective,
        effective_holdings=figures.effective_holdings(weights),
        max_drawdown=figures.max_drawdown(mine),
        risk_contributions=dict(zip(tickers, riskparity.contributions(cov, weights).tolist(),
                                    strict=True)),
        estimates=est.info, selection=_clean(selection.details),
        warnings=bound_warnings(request, weights),
        in_sample={"dates": [est.info["first_date"], *est.dates],
                   "portfolio": np.round(mine, 6).tolist(),
                   "equal_weight": np.round(equal, 6).tolist(),
                   "equal_weight_max_drawdown": figures.max_drawdown(equal)},
    )


def bound_warnings(request: PortfolioRequest, weights: np.ndarray) -> list[str]:
    """Say so when the weight bounds, not the objective, decide the weights.

    K = 100 with min_weight 0.01 leaves one feasible point (every weight 1 %): each objective
    then returns the same equal weights, which a user would not guess from the answer alone.
    """
    size, low, high = request.portfolio_size, request.min_weight, request.max_weight
    if size * low >= 1 - 1e-12:
        forced = (f"portfolio_size {size} × min_weight {low:g} = {size * low:g}: every holding "
                  f"must be held at min_weight")
        fix = f"lower min_weight (e.g. to {math.floor(0.5 / size * 1e4) / 1e4:g})"
    elif size * high <= 1 + 1e-12:
        forced = (f"portfolio_size {size} × max_weight {high:g} = {size * high:g}: every "
                  f"holding must be held at max_weight")
        fix = f"raise max_weight (e.g. to {math.ceil(2 / size * 1e4) / 1e4:g})"
    else:
        forced = fix = ""
    if forced:
        return [f"the weight bounds decide the answer, not the objective {request.objective}: "
                f"{forced}, so the weights are equal ({1 / size:.4g} each) and only the choice "
                f"of tickers is optimized; {fix} to let the objective set the weights"]
    at_bound = (np.abs(weights - low) <= AT_BOUND_TOL) | (np.abs(weights - high) <= AT_BOUND_TOL)
    if at_bound.all():
        return [f"the weight bounds decide the answer: every one of the {size} weights is at "
                f"min_weight {low:g} or max_weight {high:g}; widen the bounds to let the "
                f"objective {request.objective} set the weights"]
    return []


def _clean(details: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in details.items() if not k.endswith("_seconds")}


def optimize(prices: pd.DataFrame, request: PortfolioRequest,
             progress: Callable[[float], None] | None = None) -> Portfolio:
    """Choose exactly `request.portfolio_size` tickers from `prices` and weight them.

    Raises ParameterError for requests or data that cannot be met, SolverError when a solver
    does not reach an optimal, finite answer.
    """
    report = progress or (lambda _fraction: None)
    check_request(request, prices.shape[1] if isinstance(prices, pd.DataFrame) else 0)
    started = perf_counter()
    with _BLAS.limit(limits=1, user_api="blas"):
        est = estimate(prices, request)
        estimated = perf_counter()
        report(0.2)
        selection = _select(est, request)
        report(0.9)
        portfolio = _finish(est, request, selection)
    timings = {"estimates_seconds": round(estimated - started, 6),
               **{k: v for k, v in selection.details.items() if k.endswith("_seconds")},
               "total_seconds": round(perf_counter() - started, 6)}
    report(1.0)
    return replace(portfolio, timings=timings)
