"""Convex solves on a fixed set of assets, with the weight bounds of the request.

The quadratic programs (min_volatility, max_sharpe, efficient_return) go to DAQP, a dense
dual active-set solver: on these small dense problems it is exact to machine precision
(its answer is a vertex of the active set, not an interior-point approximation) and 5–15×
faster than an interior-point solve (bench/optimize.py). efficient_risk has a quadratic
constraint, a second-order cone: it goes to Clarabel. Any status but optimal, or a
non-finite answer, is a SolverError carrying the solver's status.
"""

from __future__ import annotations

from dataclasses import dataclass

import clarabel
import daqp
import numpy as np
from scipy import sparse

from orchestrator.errors import SolverError
from orchestrator.optimizer import covariance
from orchestrator.optimizer.covariance import Covariance

INF = 1e30  # DAQP's "no bound"
EQUALITY = 5  # DAQP sense flag
DAQP_SETTINGS = {"primal_tol": 1e-10, "iter_limit": 20_000}
DAQP_STATUS = {
    1: "optimal", 2: "soft_optimal", 3: "constrained_point", 4: "optimal_inexact",
    5: "feasible_not_proven_optimal", -1: "infeasible", -2: "cycling", -3: "unbounded",
    -4: "iteration_limit", -5: "nonconvex", -6: "overdetermined_initial", -7: "time_limit",
    -8: "unsupported",
}
QUADRATIC = ("min_volatility", "max_sharpe", "efficient_return")


@dataclass(frozen=True)
class Problem:
    """One objective on one universe: annual μ and Σ, and the objective's own numbers."""

    objective: str
    mu: np.ndarray
    cov: Covariance  # dense, or low rank + diagonal (optimizer/covariance.py)
    risk_free_rate: float = 0.0
    target_volatility: float | None = None
    target_return: float | None = None


@dataclass(frozen=True)
class Solution:
    index: np.ndarray  # universe positions of the assets solved over, ascending
    weights: np.ndarray  # their weights, summing to 1
    status: str


def _daqp(h: np.ndarray, f: np.ndarray, a: np.ndarray, upper: np.ndarray, lower: np.ndarray,
          sense: np.ndarray, what: str, start: np.ndarray | None = None) -> np.ndarray:
    extra = {} if start is None else {"primal_start": np.ascontiguousarray(start, dtype=float)}
    x, _fval, flag, _info = daqp.solve(np.ascontiguousarray(h), f, np.ascontiguousarray(a),
                                       upper, lower, sense, **DAQP_SETTINGS, **extra)
    status = DAQP_STATUS.get(int(flag), f"exitflag {flag}")
    if flag != 1 or not np.isfinite(x).all():
        raise SolverError(f"status {status}: {what} did not reach an optimal, finite answer")
    return np.asarray(x, dtype=np.float64)


def _min_variance(cov: np.ndarray, mu: np.ndarray, low: float, high: float,
                  target_return: float | None, start: np.ndarray | None = None) -> np.ndarray:
    n = cov.shape[0]
    rows = [np.ones(n)]
    upper, lower = [1.0], [1.0]
    if target_return is not None:
        rows.append(mu)
        upper.append(INF)
        lower.append(target_return)
    sense = np.zeros(n + len(rows), dtype=np.int32)
    sense[n] = EQUALITY
    return _daqp(2.0 * cov, np.zeros(n), np.vstack(rows),
                 np.concatenate([np.full(n, high), upper]),
                 np.concatenate([np.full(n, low), lower]), sense,
                 f"{'efficient_return' if target_return is not None else 'min_volatility'} "
                 f"on {n} assets", start)


def _max_sharpe(cov: np.ndarray, mu: np.ndarray, rate: float, low: float, high: float,
                start: np.ndarray | None = None) -> np.ndarray:
    """Tangency portfolio by the homogenized QP: min yᵀΣy, (μ − r_f)ᵀy = 1, w = y / Σy.

    The bounds low ≤ w ≤ high become low·Σy ≤ y_i ≤ high·Σy, linear in y.
    """
    n = cov.shape[0]
    ones = np.ones((n, n))
    rows, upper, lower = [(mu - rate)[None, :]], [np.ones(1)], [np.ones(1)]
    if high < 1:
        rows.append(np.eye(n) - high * ones)
        upper.append(np.zeros(n))
        lower.append(np.full(n, -INF))
    if low > 0:
        rows.append(np.eye(n) - low * ones)
        upper.append(np.full(n, INF))
        lower.append(np.zeros(n))
    sense = np.zeros(n + sum(len(u) for u in upper), dtype=np.int32)
    sense[n] = EQUALITY
    if start is not None:  # the same portfolio, scaled to (μ − r_f)ᵀy = 1
        excess = float(start @ (mu - rate))
        start = start / excess if excess > 0 else None
    y = _daqp(2.0 * cov, np.zeros(n), np.vstack(rows),
              np.concatenate([np.full(n, INF), *upper]),
              np.concatenate([np.zeros(n), *lower]), sense, f"max_sharpe on {n} assets", start)
    total = y.sum()
    if not total > 0:
        raise SolverError(f"status degenerate: max_sharpe on {n} assets gave Σy = {total:g}")
    return y / total


def risk_factor(cov: np.ndarray) -> np.ndarray:
    """F with FFᵀ = Σ (Cholesky, or a symmetric root when Σ is only semidefinite)."""
    try:
        return np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        values, vectors = np.linalg.eigh(cov)
        return vectors * np.sqrt(np.clip(values, 0.0, None))


def _efficient_risk(cov: np.ndarray, mu: np.ndarray, target: float, low: float, high: float,
                    ) -> np.ndarray:
    """max μᵀw with ‖Fᵀw‖ ≤ target volatility (a second-order cone), by Clarabel."""
    n = cov.shape[0]
    factor = risk_factor(cov)
    eye = sparse.identity(n, format="csc")
    a = sparse.vstack([
        sparse.csc_matrix(np.ones((1, n))), eye, -eye,
        sparse.csc_matrix((1, n)), sparse.csc_matrix(-factor.T),
    ], format="csc")
    b = np.concatenate([[1.0], np.full(n, high), np.full(n, -low), [target], np.zeros(n)])
    cones = [clarabel.ZeroConeT(1), clarabel.NonnegativeConeT(2 * n),
             clarabel.SecondOrderConeT(n + 1)]
    settings = clarabel.DefaultSettings()
    settings.verbose = False
    solution = clarabel.DefaultSolver(sparse.csc_matrix((n, n)), -mu, a, b, cones,
                                      settings).solve()
    status = str(solution.status)
    x = np.asarray(solution.x, dtype=np.float64)
    if status != "Solved" or not np.isfinite(x).all():
        raise SolverError(f"status {status}: efficient_risk on {n} assets did not reach an "
                          f"optimal, finite answer")
    return x


def solve(problem: Problem, index: np.ndarray, low: float, high: float,
          start: np.ndarray | None = None) -> Solution:
    """Weights over the assets `index` for the problem's objective, low ≤ w ≤ high.

    `start`, universe-long, is a guess of the weights (a warm start for the QP solver).
    """
    index = np.sort(np.asarray(index))
    guess = None if start is None else start[index]
    cov = covariance.block(problem.cov, index)
    mu = problem.mu[index]
    objective = problem.objective
    if objective == "max_sharpe":
        weights = _max_sharpe(cov, mu, problem.risk_free_rate, low, high, guess)
    elif objective == "efficient_risk":
        weights = _efficient_risk(cov, mu, float(problem.target_volatility), low, high)
    elif objective in ("min_volatility", "efficient_return"):
        target = problem.target_return if objective == "efficient_return" else None
        weights = _min_variance(cov, mu, low, high, target, guess)
    else:
        raise ValueError(f"no convex program for objective {objective!r}")
    return Solution(index, weights, "optimal")


def value(problem: Problem, index: np.ndarray, weights: np.ndarray) -> float:
    """The objective as a number to minimize (variance, −Sharpe, −return)."""
    mu = problem.mu[index]
    variance = float(weights @ covariance.block(problem.cov, index) @ weights)
    if problem.objective == "max_sharpe":
        return -(float(weights @ mu) - problem.risk_free_rate) / np.sqrt(max(variance, 1e-300))
    if problem.objective == "efficient_risk":
        return -float(weights @ mu)
    return variance


def reduced_costs(problem: Problem, solution: Solution, low: float, high: float) -> np.ndarray:
    """First-order value, for every universe asset, of adding weight to it at this solution.

    The gradient of the objective plus the constraints' gradients times multipliers fitted
    on the holdings strictly inside their bounds (where stationarity holds with equality).
    Negative: the asset would improve the objective. Used to rank swap candidates.
    """
    index, w = solution.index, solution.weights
    sigma_w = covariance.times(problem.cov, index, w)
    variance = float(w @ sigma_w[index])
    ones = np.ones(problem.mu.size)
    constraints = [ones]
    if problem.objective == "max_sharpe":
        sd = np.sqrt(variance)
        excess = float(w @ problem.mu[index]) - problem.risk_free_rate
        grad = -(problem.mu / sd - excess * sigma_w / sd**3)
    elif problem.objective == "efficient_risk":
        grad = -problem.mu
        constraints.append(2.0 * sigma_w)
    else:
        grad = 2.0 * sigma_w
        if problem.objective == "efficient_return":
            constraints.append(-problem.mu)
    c = np.column_stack(constraints)
    free = index[(w > low + 1e-9) & (w < high - 1e-9)]
    if free.size < c.shape[1]:
        free = index
    multipliers = np.linalg.lstsq(c[free], -grad[free], rcond=None)[0]
    return grad + c @ multipliers
