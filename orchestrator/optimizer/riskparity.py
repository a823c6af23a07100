"""Equal risk contribution (risk parity) weights, with the request's weight bounds.

Unbounded, the ERC portfolio is y / Σy for the unique minimizer y of ½yᵀΣy − (1/n)Σ log y_i
(Maillard, Roncalli & Teïletche 2010): there every y_i(Σy)_i is equal. With bounds
low ≤ w ≤ high we solve min ½wᵀΣw − c·Σ log w_i over the box, and choose c by root finding
so that Σw = 1: at that point every holding strictly inside its bounds has the same risk
contribution c, a holding held at max_weight contributes less and one held at min_weight
more (the KKT conditions of the box problem). Each box problem is solved by projected
Newton with an Armijo search along the projection arc (Bertsekas 1982).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.optimize import brentq

from orchestrator.errors import SolverError

NEWTON_STEPS = 100
GRAD_TOL = 1e-13


def _barrier(cov: np.ndarray, w: np.ndarray, c: float) -> float:
    return 0.5 * float(w @ cov @ w) - c * float(np.log(w).sum())


def _newton_step(cov: np.ndarray, w: np.ndarray, grad: np.ndarray, free: np.ndarray,
                 c: float) -> np.ndarray:
    step = -grad.copy()  # pinned coordinates: a gradient step, cut by the projection
    if free.any():
        hess = cov[np.ix_(free, free)] + np.diag(c / w[free] ** 2)
        step[free] = -np.linalg.solve(hess, grad[free])
    return step


def box_barrier(cov: np.ndarray, c: float, low: float, high: float, start: np.ndarray,
                ) -> np.ndarray:
    """argmin ½wᵀΣw − c·Σ log w over low ≤ w ≤ high (low > 0), by projected Newton."""
    w = np.clip(start, low, high)
    for _ in range(NEWTON_STEPS):
        grad = cov @ w - c / w
        pinned = ((w <= low) & (grad > 0)) | ((w >= high) & (grad < 0))
        free = ~pinned
        if not free.any() or np.abs(grad[free]).max() <= GRAD_TOL * max(1.0, c / low):
            return w
        step = _newton_step(cov, w, grad, free, c)
        before, t = _barrier(cov, w, c), 1.0
        while t > 1e-12:
            trial = np.clip(w + t * step, low, high)
            if _barrier(cov, trial, c) <= before + 1e-4 * float(grad @ (trial - w)):
                break
            t *= 0.5
        if np.array_equal(trial, w):
            return w
        w = trial
    return w


def unbounded(cov: np.ndarray) -> np.ndarray:
    """ERC weights with no bounds but positivity (Newton on the log-barrier problem)."""
    n = cov.shape[0]
    y = 1.0 / np.sqrt(np.diag(cov))
    y /= np.sqrt(float(y @ cov @ y)) * np.sqrt(n)
    for _ in range(NEWTON_STEPS):
        grad = cov @ y - 1.0 / (n * y)
        if np.abs(grad * y).max() <= 1e-14:
            break
        step = -np.linalg.solve(cov + np.diag(1.0 / (n * y**2)), grad)
        t = 1.0
        while np.any(y + t * step <= 0):  # stay inside the barrier's domain
            t *= 0.5
        y = y + t * step
    weights = y / y.sum()
    if not np.isfinite(weights).all():
        raise SolverError("status not_finite: risk_parity Newton iterations diverged")
    return weights


def _bracket(excess: Callable[[float], float], free: np.ndarray, cov: np.ndarray,
             ) -> tuple[float, float]:
    """log c below and above the root: Σw(c) grows like √c around the unbounded scale."""
    centre = -2.0 * np.log(float(np.sqrt(free @ cov @ free)) * np.sqrt(cov.shape[0]))
    lo, hi = centre - 2.0, centre + 2.0
    for _ in range(60):
        if excess(lo) < 0:
            break
        lo -= 4.0
    for _ in range(60):
        if excess(hi) > 0:
            break
        hi += 4.0
    return lo, hi


def risk_parity(cov: np.ndarray, low: float, high: float) -> np.ndarray:
    """Bounded ERC weights summing to 1 (see the module docstring)."""
    free = unbounded(cov)
    if free.min() >= low and free.max() <= high:
        return free
    state = {"w": np.clip(free, low, high)}

    def excess(log_c: float) -> float:
        state["w"] = box_barrier(cov, float(np.exp(log_c)), low, high, state["w"])
        return float(np.log(state["w"].sum()))

    lo, hi = _bracket(excess, free, cov)
    try:
        log_c = brentq(excess, lo, hi, xtol=1e-14, rtol=1e-15, maxiter=200)
    except ValueError as error:
        raise SolverError(f"status no_root: risk_parity budget not bracketed ({error})") from None
    weights = box_barrier(cov, float(np.exp(log_c)), low, high, state["w"])
    weights = weights / weights.sum()
    if not np.isfinite(weights).all():
        raise SolverError("status not_finite: risk_parity gave non-finite weights")
    return weights


def contributions(cov: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Each holding's share of the portfolio variance, w_i(Σw)_i / wᵀΣw (sums to 1)."""
    marginal = weights * (cov @ weights)
    return marginal / marginal.sum()
