"""Long-only portfolio of exactly K holdings from a clean wide price table.

Estimates: simple daily returns; Ledoit–Wolf shrunk covariance and mean historical
returns, both annualized with 252 trading days. Selection heuristic: solve the objective
over the whole universe with bounds (0, max_weight), keep the K tickers with the largest
weights (ties and zero weights broken by the objective's per-asset ranking), then re-solve
on those K with bounds (min_weight, max_weight) so that all K are held.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cvxpy as cp
import numpy as np
import pandas as pd
from pypfopt import exceptions as pypfopt_exceptions
from pypfopt.efficient_frontier import EfficientFrontier
from sklearn.covariance import ledoit_wolf

from orchestrator.errors import ParameterError, SolverError

OBJECTIVES = ("min_volatility", "max_sharpe")
TRADING_DAYS = 252
MIN_SIZE, MAX_SIZE = 10, 100
WEIGHT_TOL = 1e-6  # full-solve weights at or below this count as zero when selecting
OFF_BOUNDS_TOL = 1e-5  # solver answers further than this from the constraints are refused
SOLVER = "CLARABEL" if "CLARABEL" in cp.installed_solvers() else None


@dataclass(frozen=True)
class PortfolioRequest:
    """What the caller asks for: K holdings, an objective and per-holding bounds."""

    portfolio_size: int
    objective: str = "min_volatility"
    max_weight: float = 0.25
    min_weight: float = 0.01
    risk_free_rate: float = 0.02


@dataclass(frozen=True)
class Portfolio:
    """The answer: weights of exactly K tickers, summing to 1, and their annualized figures."""

    weights: dict[str, float]
    expected_return: float
    volatility: float
    sharpe: float
    method: str
    solver_status: str

    def to_dict(self) -> dict[str, object]:
        """JSON-serializable form, weights sorted from largest to smallest."""
        ordered = sorted(self.weights.items(), key=lambda item: (-item[1], item[0]))
        return {
            "weights": {ticker: float(weight) for ticker, weight in ordered},
            "expected_return": float(self.expected_return),
            "volatility": float(self.volatility),
            "sharpe": float(self.sharpe),
            "method": self.method,
            "solver_status": self.solver_status,
        }


@dataclass(frozen=True)
class _Estimates:
    tickers: list[str]
    mu: np.ndarray
    cov: np.ndarray


# --------------------------------------------------------------------------- request checks


def _ceil_to(value: float, places: int = 4) -> float:
    scale = 10**places
    return math.ceil(round(value * scale, 6)) / scale


def _floor_to(value: float, places: int = 4) -> float:
    scale = 10**places
    return math.floor(round(value * scale, 6)) / scale


def _check_size_and_objective(request: PortfolioRequest) -> None:
    size = request.portfolio_size
    if isinstance(size, bool) or not isinstance(size, int | np.integer):
        raise ParameterError(f"portfolio_size must be an integer between {MIN_SIZE} and "
                             f"{MAX_SIZE}, got {size!r}")
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ParameterError(f"portfolio_size {size} is outside {MIN_SIZE}..{MAX_SIZE}: "
                             f"choose a size between {MIN_SIZE} and {MAX_SIZE}")
    if request.objective not in OBJECTIVES:
        raise ParameterError(f"unknown objective {request.objective!r}: "
                             f"choose one of {', '.join(OBJECTIVES)}")


def _check_numbers(request: PortfolioRequest) -> None:
    for name in ("max_weight", "min_weight", "risk_free_rate"):
        value = getattr(request, name)
        if not isinstance(value, int | float) or not math.isfinite(value):
            raise ParameterError(f"{name} must be a finite number, got {value!r}")
    if request.min_weight <= 0:
        raise ParameterError(f"min_weight {request.min_weight:g} must be > 0 so that all "
                             f"portfolio_size tickers are held: use e.g. 0.01")


def _check_bounds_order(request: PortfolioRequest) -> None:
    if request.min_weight > request.max_weight:
        raise ParameterError(f"min_weight {request.min_weight:g} > max_weight "
                             f"{request.max_weight:g}: lower min_weight to at most "
                             f"{request.max_weight:g}")


def _check_max_weight(request: PortfolioRequest) -> None:
    size, high = request.portfolio_size, request.max_weight
    if high * size >= 1:
        return
    fix = f"raise max_weight to at least {_ceil_to(1 / size):g}"
    if high > 0 and math.ceil(round(1 / high, 9)) <= MAX_SIZE:
        fix += f" or portfolio_size to at least {math.ceil(round(1 / high, 9))}"
    raise ParameterError(f"max_weight {high:g} × portfolio_size {size} = {high * size:g} < 1: "
                         f"{fix}")


def _check_min_weight(request: PortfolioRequest) -> None:
    size, low = request.portfolio_size, request.min_weight
    if low * size <= 1:
        return
    fix = f"lower min_weight to at most {_floor_to(1 / size):g}"
    if math.floor(round(1 / low, 9)) >= MIN_SIZE:
        fix += f" or portfolio_size to at most {math.floor(round(1 / low, 9))}"
    raise ParameterError(f"min_weight {low:g} × portfolio_size {size} = {low * size:g} > 1: "
                         f"{fix}")


def _check_universe(request: PortfolioRequest, n_tickers: int) -> None:
    size = request.portfolio_size
    if n_tickers >= size:
        return
    fix = f"supply at least {size} tickers"
    if n_tickers >= MIN_SIZE:
        fix += f" or lower portfolio_size to at most {n_tickers}"
    raise ParameterError(f"only {n_tickers} usable tickers for portfolio_size {size}: {fix}")


def check_request(request: PortfolioRequest, n_tickers: int) -> None:
    """Raise ParameterError, saying what would be feasible, if the request cannot be met."""
    _check_size_and_objective(request)
    _check_numbers(request)
    _check_max_weight(request)
    _check_bounds_order(request)
    _check_min_weight(request)
    _check_universe(request, n_tickers)


# --------------------------------------------------------------------------- estimates


def _daily_returns(prices: pd.DataFrame) -> np.ndarray:
    if not isinstance(prices, pd.DataFrame) or prices.shape[0] < 3:
        raise ParameterError("prices must be a table with at least 3 rows (dates)")
    if not prices.columns.is_unique:
        raise ParameterError("prices has duplicate ticker columns")
    values = prices.to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values).all(axis=0) | ~(values > 0).all(axis=0)
    if bad.any():
        raise ParameterError(f"prices must be finite and positive; not so for "
                             f"{_names(prices.columns[bad])}")
    returns = values[1:] / values[:-1] - 1.0
    flat = returns.std(axis=0) == 0
    if flat.any():
        raise ParameterError(f"constant prices (zero variance) for {_names(prices.columns[flat])}:"
                             f" drop these tickers")
    return returns


def _names(columns: pd.Index, limit: int = 10) -> str:
    names = [str(c) for c in columns]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _estimate(prices: pd.DataFrame) -> _Estimates:
    returns = _daily_returns(prices)
    cov, _shrinkage = ledoit_wolf(returns)
    mu = returns.mean(axis=0) * TRADING_DAYS
    cov = np.asarray(cov) * TRADING_DAYS
    if not (np.isfinite(mu).all() and np.isfinite(cov).all()):
        raise SolverError("status estimation_failed: non-finite expected returns or covariance")
    return _Estimates([str(c) for c in prices.columns], mu, cov)


# --------------------------------------------------------------------------- solving


def _solve(est: _Estimates, request: PortfolioRequest, bounds: tuple[float, float]) \
        -> tuple[np.ndarray, str]:
    """Solve the objective on these estimates; return raw weights and the solver status."""
    ef = EfficientFrontier(est.mu, est.cov, weight_bounds=bounds, solver=SOLVER)
    try:
        if request.objective == "max_sharpe":
            ef.max_sharpe(risk_free_rate=request.risk_free_rate)
        else:
            ef.min_volatility()
    except (pypfopt_exceptions.OptimizationError, cp.error.SolverError, ValueError,
            TypeError, ArithmeticError) as exc:
        status = ef._opt.status if ef._opt is not None else "solver_failed"
        raise SolverError(f"status {status}: {request.objective} on {len(est.tickers)} "
                          f"tickers failed ({exc})") from exc
    status = str(ef._opt.status)
    weights = np.asarray(ef.weights, dtype=np.float64)
    if status != "optimal" or not np.isfinite(weights).all():
        raise SolverError(f"status {status}: {request.objective} on {len(est.tickers)} tickers "
                          f"did not reach an optimal, finite answer")
    return weights, status


def _asset_score(est: _Estimates, request: PortfolioRequest) -> np.ndarray:
    """Per-asset ranking for the objective, higher is better."""
    vol = np.sqrt(np.diag(est.cov))
    if request.objective == "max_sharpe":
        return (est.mu - request.risk_free_rate) / vol
    return -vol


def _select(weights: np.ndarray, score: np.ndarray, size: int) -> np.ndarray:
    """Indices of the top `size` assets by weight; zero weights and ties go by score."""
    held = np.where(weights > WEIGHT_TOL, weights, 0.0)
    order = np.lexsort((-score, -held))  # last key is primary
    return np.sort(order[:size])


def _subset(est: _Estimates, index: np.ndarray) -> _Estimates:
    return _Estimates([est.tickers[i] for i in index], est.mu[index],
                      est.cov[np.ix_(index, index)])


def _project(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Closest point to `values` with low <= w <= high and sum(w) == 1 (bisection on a shift)."""
    lo, hi = float(values.min()) - high, float(values.max()) - low
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if np.clip(values - mid, low, high).sum() > 1.0:
            lo = mid
        else:
            hi = mid
    weights = np.clip(values - 0.5 * (lo + hi), low, high)
    return weights / weights.sum()


def _best_excess_return(mu: np.ndarray, low: float, high: float) -> float:
    """Largest w·mu over low <= w <= high, sum(w) == 1 (greedy: fill the best assets first)."""
    weights = np.full(mu.size, low)
    spare = 1.0 - weights.sum()
    for i in np.argsort(-mu):
        add = min(high - low, spare)
        weights[i] += add
        spare -= add
    return float(weights @ mu)


def _check_sharpe_feasible(est: _Estimates, request: PortfolioRequest,
                           bounds: tuple[float, float]) -> None:
    if request.objective != "max_sharpe":
        return
    rate = request.risk_free_rate
    if est.mu.max() <= rate:
        raise ParameterError(f"no asset's expected return exceeds risk_free_rate {rate:g}; "
                             f"use min_volatility or a lower rate")
    best = _best_excess_return(est.mu, *bounds)
    if best <= rate:
        raise ParameterError(f"within weights {bounds[0]:g}..{bounds[1]:g}, the best expected "
                             f"return of the {len(est.tickers)} selected tickers is {best:.4g}, "
                             f"not above risk_free_rate {rate:g}; use min_volatility, a lower "
                             f"rate or a lower min_weight")


def _finish(est: _Estimates, raw: np.ndarray, request: PortfolioRequest, status: str,
            method: str) -> Portfolio:
    weights = _project(raw, request.min_weight, request.max_weight)
    drift = float(np.abs(weights - raw).max())
    if drift > OFF_BOUNDS_TOL:
        raise SolverError(f"status {status} but weights off the constraints by {drift:.2g}")
    ret = float(weights @ est.mu)
    vol = float(math.sqrt(max(float(weights @ est.cov @ weights), 0.0)))
    if not (math.isfinite(ret) and vol > 0 and math.isfinite(vol)):
        raise SolverError(f"status {status} but portfolio figures are not finite "
                          f"(return {ret}, volatility {vol})")
    return Portfolio(
        weights={t: float(w) for t, w in zip(est.tickers, weights, strict=True)},
        expected_return=ret,
        volatility=vol,
        sharpe=(ret - request.risk_free_rate) / vol,
        method=method,
        solver_status=status,
    )


def _method(request: PortfolioRequest) -> str:
    return (f"Ledoit-Wolf covariance, mean historical returns (simple daily, ×{TRADING_DAYS}); "
            f"full-universe {request.objective} solve with bounds (0, {request.max_weight:g}), "
            f"top-{request.portfolio_size} by weight, re-solved on them with bounds "
            f"({request.min_weight:g}, {request.max_weight:g}); solver {SOLVER or 'default'}")


def optimize(prices: pd.DataFrame, request: PortfolioRequest,
             progress: Callable[[float], None] | None = None) -> Portfolio:
    """Choose exactly `request.portfolio_size` tickers from `prices` and weight them.

    Raises ParameterError for requests or data that cannot be met, SolverError when the
    solver does not reach an optimal, finite answer.
    """
    report = progress or (lambda _fraction: None)
    check_request(request, prices.shape[1] if isinstance(prices, pd.DataFrame) else 0)
    est = _estimate(prices)
    report(0.2)
    _check_sharpe_feasible(est, request, (0.0, request.max_weight))
    full, _status = _solve(est, request, (0.0, request.max_weight))
    report(0.6)
    chosen = _subset(est, _select(full, _asset_score(est, request), request.portfolio_size))
    bounds = (request.min_weight, request.max_weight)
    _check_sharpe_feasible(chosen, request, bounds)
    raw, status = _solve(chosen, request, bounds)
    portfolio = _finish(chosen, raw, request, status, _method(request))
    report(1.0)
    return portfolio
