"""Exactly K holdings: a convex relaxation, a swap search, and an exact MIQP where affordable.

1. Relax: solve the objective with bounds (0, max_weight) over the universe, or over a
   screened working set of at most max(200, 4·K) assets on large universes (see relax).
2. Keep the K largest weights (zero weights ranked by a per-asset score), solve on them
   with bounds (min_weight, max_weight). If that subset cannot meet the objective's own
   constraint (a target, a positive excess return), start from a subset that can.
3. Swap search: exchange one holding for one outsider while the objective improves. Pairs
   are tried in the order of a first-order estimate of their effect built from the reduced
   costs at the current solution (see _pairs); the first improvement is taken. The search
   ends when the ROUND_EVALUATIONS best-ranked swaps bring no gain, or after
   DEFAULT_SWAP_EVALUATIONS trial solves: it is deterministic.
4. Exact: for min_volatility and efficient_return on universes of at most
   EXACT_MAX_ASSETS tickers, the mixed-integer QP (binary z_i: asset held or not,
   Σz = K, min_weight·z_i ≤ w_i ≤ max_weight·z_i) is solved by DAQP's branch and bound. A
   proof of optimality within EXACT_ITERATIONS active-set iterations makes it the answer
   unless the search's is better by more than rounding (IMPROVEMENT); otherwise the search's
   answer stands and the report says so. The budget counts work, not seconds, so a busy
   machine gives the same answer as a quiet one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import daqp
import numpy as np

from orchestrator.errors import ParameterError, SolverError
from orchestrator.optimizer import covariance, qp, riskparity

EXACT_MAX_ASSETS = 60
EXACT_ITERATIONS = 100_000  # active-set iterations in all nodes: ~1 s for 60 assets here
#: A safety cap, not the budget: DAQP's iteration limit bounds each node's solve, not the
#: branch and bound, which ran for minutes on generated 60 × 300 random walks. Far above what a
#: proof takes on real data (the sample: a few milliseconds), so a busy machine does not change
#: the answer; on a hard instance the search's answer stands and the report says so.
EXACT_SECONDS_CAP = 1.0
EXACT_OBJECTIVES = ("min_volatility", "efficient_return")  # MIQPs with a tight relaxation
SWAP_EVALUATIONS = {"efficient_risk": 30}  # Clarabel solves cost ~10× a DAQP solve
DEFAULT_SWAP_EVALUATIONS = 60
ROUND_EVALUATIONS = 24  # a round of this many best-ranked swaps without a gain ends the search
ENTER_CANDIDATES, LEAVE_CANDIDATES = 12, 8
WORKING_SET = 100  # assets in the relaxation's first working set
SCREEN, SCREEN_PER_HOLDING = 200, 4  # the relaxation's set stops at max(200, 4·K) assets
IMPROVEMENT = 1e-10  # relative; smaller changes are solver noise, not a better subset


@dataclass
class Selection:
    solution: qp.Solution
    value: float
    details: dict[str, Any] = field(default_factory=dict)


def _try(problem: qp.Problem, index: np.ndarray, low: float, high: float,
         start: np.ndarray | None = None) -> tuple[float, qp.Solution] | None:
    try:
        sol = qp.solve(problem, index, low, high, start)
    except SolverError:
        return None
    return qp.value(problem, sol.index, sol.weights), sol


def asset_score(problem: qp.Problem) -> np.ndarray:
    """Per-asset ranking for the objective, higher is better (breaks ties among zeros)."""
    vol = np.sqrt(covariance.diagonal(problem.cov))
    if problem.objective in ("max_sharpe", "efficient_risk"):
        return (problem.mu - problem.risk_free_rate) / vol
    return -vol


def top_k(weights: np.ndarray, score: np.ndarray, size: int) -> np.ndarray:
    """Universe positions of the `size` largest weights; zeros and ties go by score."""
    held = np.where(weights > 1e-9, weights, 0.0)
    return np.sort(np.lexsort((-score, -held))[:size])


def best_return_subset(mu: np.ndarray, size: int) -> np.ndarray:
    """The K assets that can reach the highest expected return (the K largest μ)."""
    return np.sort(np.argsort(-mu, kind="stable")[:size])


def best_return(mu: np.ndarray, low: float, high: float) -> float:
    """Largest μᵀw with low ≤ w ≤ high, Σw = 1: everyone at low, the best filled first."""
    weights = np.full(mu.size, low)
    spare = 1.0 - weights.sum()
    for i in np.argsort(-mu, kind="stable"):
        add = min(high - low, spare)
        weights[i] += add
        spare -= add
    return float(weights @ mu)


def screen_size(size: int, high: float) -> int:
    """How many assets the relaxation may consider: enough to rank K well, never N.

    A dense QP costs ~N³: on a 5,000-ticker file whose min-variance relaxation holds every
    ticker (independent random walks), growing the working set to the universe took 185 s.
    The swap search still prices every outsider by its reduced cost, so an asset outside
    the screen can enter the portfolio if it would improve it.
    """
    return max(SCREEN, SCREEN_PER_HOLDING * size, int(np.ceil(2 / high)))


def relax(problem: qp.Problem, high: float, size: int = 0) -> tuple[np.ndarray, int]:
    """Universe weights of the relaxation (bounds 0..high), for ranking, and how many
    assets it was solved over.

    Solved on a working set: the best-scored assets first, then every outsider whose reduced
    cost says it would enter, until none would (then it is the whole universe's optimum: its
    optimality conditions hold for every asset) or the set reaches screen_size (then it is
    the optimum over the best-screened assets, which is all the ranking needs).
    """
    n = problem.mu.size
    if problem.objective == "risk_parity":
        return riskparity.unbounded(covariance.dense(problem.cov)), n
    first = max(WORKING_SET, int(np.ceil(2 / high)))
    cap = screen_size(size, high)
    if n <= first or (n <= cap and problem.objective not in qp.QUADRATIC):
        return _expand(n, qp.solve(problem, np.arange(n), 0.0, high)), n
    index = _screen(problem, first if problem.objective in qp.QUADRATIC else cap, high)
    if problem.objective not in qp.QUADRATIC:  # a cone solve: once, on the screen
        try:
            return _expand(n, qp.solve(problem, index, 0.0, high)), index.size
        except SolverError:  # e.g. the target is out of the screen's reach: rank by score
            return np.zeros(n), index.size
    while True:
        sol = qp.solve(problem, index, 0.0, high)
        room = cap - index.size
        if room <= 0:
            return _expand(n, sol), index.size
        costs = qp.reduced_costs(problem, sol, 0.0, high)
        outside = np.setdiff1d(np.arange(n), index)
        tol = 1e-9 * max(float(np.abs(costs[index]).max()), 1e-300)
        enter = outside[costs[outside] < -tol]
        if enter.size == 0:
            return _expand(n, sol), index.size
        enter = enter[np.argsort(costs[enter], kind="stable")]
        index = np.union1d(index, enter[: min(room, max(20, index.size // 2))])


def _screen(problem: qp.Problem, count: int, high: float) -> np.ndarray:
    """The `count` best-scored assets, and those that can reach the highest returns."""
    ranked = np.argsort(-asset_score(problem), kind="stable")
    reach = np.argsort(-problem.mu, kind="stable")[: int(np.ceil(1 / high))]
    return np.union1d(ranked[:count], reach)


def _expand(n: int, sol: qp.Solution) -> np.ndarray:
    full = np.zeros(n)
    full[sol.index] = sol.weights
    return full


def _pairs(problem: qp.Problem, sol: qp.Solution, low: float, high: float,
           ) -> list[tuple[int, int]]:
    """Swap candidates (enter, leave), most promising first by a first-order estimate.

    An outsider enters at min_weight: about low·d_j. A holding pinned at min_weight that
    would rather go lower (d_i > 0) gives back about d_i·w_i when it leaves; a holding
    strictly inside its bounds has d_i ≈ 0, so it is ranked by its weight (small first).
    """
    costs = qp.reduced_costs(problem, sol, low, high)
    outside = np.setdiff1d(np.arange(problem.mu.size), sol.index)
    enter = outside[np.argsort(costs[outside], kind="stable")][:ENTER_CANDIDATES]
    refund = np.maximum(costs[sol.index], 0.0) * sol.weights
    order = np.lexsort((sol.weights, -refund))
    leave = sol.index[order][:LEAVE_CANDIDATES]
    gain = {int(i): float(r) for i, r in zip(sol.index, refund, strict=True)}
    pairs = [(low * float(costs[j]) - gain[int(i)], int(j), int(i))
             for j in enter for i in leave]
    return [(j, i) for _, j, i in sorted(pairs)]


def swap_search(problem: qp.Problem, start: Selection, low: float, high: float,
                budget: int) -> Selection:
    """Exchange one holding for one outsider while that improves the objective."""
    best, evaluations, swaps = start, 0, 0
    improved = True
    while improved and evaluations < budget:
        improved = False
        for enter, leave in _pairs(problem, best.solution, low, high)[:ROUND_EVALUATIONS]:
            if evaluations >= budget:
                break
            evaluations += 1
            index = np.append(best.solution.index[best.solution.index != leave], enter)
            trial = _try(problem, index, low, high, _guess(problem, best.solution, enter, low))
            if trial and trial[0] < best.value - IMPROVEMENT * abs(best.value):
                best = Selection(trial[1], trial[0], best.details)
                swaps += 1
                improved = True
                break
    best.details.update(swaps=swaps, swap_evaluations=evaluations)
    return best


def _guess(problem: qp.Problem, sol: qp.Solution, enter: int, low: float) -> np.ndarray:
    """Warm start after a swap: the current weights, the newcomer at min_weight."""
    guess = np.zeros(problem.mu.size)
    guess[sol.index] = sol.weights
    guess[enter] = low
    return guess


# --------------------------------------------------------------------------- exact MIQP


def _miqp_rows(problem: qp.Problem, n: int, size: int, low: float, high: float,
               ) -> tuple[list[np.ndarray], list[float], list[float], list[int]]:
    """Variables (w, z). Rows: w − high·z ≤ 0, w − low·z ≥ 0, Σw = 1, Σz = K (+ target)."""
    eye, zero = np.eye(n), np.zeros(n)
    rows = [np.hstack([eye, -high * eye]), np.hstack([eye, -low * eye]),
            np.hstack([np.ones(n), zero])[None, :], np.hstack([zero, np.ones(n)])[None, :]]
    upper = [*np.zeros(n), *np.full(n, qp.INF), 1.0, float(size)]
    lower = [*np.full(n, -qp.INF), *np.zeros(n), 1.0, float(size)]
    sense = [0] * (2 * n) + [qp.EQUALITY, qp.EQUALITY]
    if problem.objective == "efficient_return":
        rows.append(np.hstack([problem.mu, zero])[None, :])
        upper.append(qp.INF)
        lower.append(float(problem.target_return))
        sense.append(0)
    return rows, upper, lower, sense


def exact(problem: qp.Problem, size: int, low: float, high: float,
          ) -> tuple[np.ndarray | None, str]:
    """The optimal K-subset by branch and bound, or None with the reason it is not proven."""
    n = problem.mu.size
    rows, upper, lower, sense = _miqp_rows(problem, n, size, low, high)
    cov = covariance.dense(problem.cov)  # n ≤ EXACT_MAX_ASSETS
    scale = float(np.mean(np.diag(cov)))
    # z's own curvature: Σz_i² = K on every binary point, so this changes no ranking
    h = np.block([[2.0 * cov, np.zeros((n, n))], [np.zeros((n, n)),
                                                          1e-6 * scale * np.eye(n)]])
    bounds_sense = [0] * n + [16] * n  # 16: binary
    x, _f, flag, _info = daqp.solve(
        h, np.zeros(2 * n), np.vstack(rows),
        np.concatenate([np.full(n, high), np.ones(n), upper]),
        np.concatenate([np.zeros(n), np.zeros(n), lower]),
        np.array(bounds_sense + sense, dtype=np.int32), iter_limit=EXACT_ITERATIONS,
        time_limit=EXACT_SECONDS_CAP, primal_tol=1e-9)
    status = qp.DAQP_STATUS.get(int(flag), f"exitflag {flag}")
    if flag != 1:
        return None, f"not proven optimal ({status})"
    chosen = np.flatnonzero(np.asarray(x[n:]) > 0.5)
    if chosen.size != size:
        return None, f"branch and bound returned {chosen.size} holdings"
    return chosen, "proven optimal"


# --------------------------------------------------------------------------- entry point


def _start(problem: qp.Problem, size: int, low: float, high: float,
           fallback: Callable[[], np.ndarray]) -> Selection:
    relaxed, candidates = relax(problem, high, size)
    held = int((relaxed > 1e-9).sum())
    index = top_k(relaxed, asset_score(problem), size)
    details: dict[str, Any] = {"relaxation_holdings": held, "relaxation_candidates": candidates}
    trial = _try(problem, index, low, high)
    if trial is None:
        details["start"] = "fallback subset (the top-K of the relaxation is infeasible)"
        trial = _try(problem, fallback(), low, high)
        if trial is None:
            raise SolverError(f"status infeasible: no starting subset of {size} assets meets "
                              f"the {problem.objective} constraints")
    return Selection(trial[1], trial[0], details)


def select(problem: qp.Problem, size: int, low: float, high: float,
           fallback: Callable[[], np.ndarray]) -> Selection:
    """The K assets and their weights for a convex objective (see the module docstring)."""
    n = problem.mu.size
    timer = _Clock()
    best = _start(problem, size, low, high, fallback)
    best.details["relaxation_seconds"] = timer.lap()
    if n > size:
        budget = SWAP_EVALUATIONS.get(problem.objective, DEFAULT_SWAP_EVALUATIONS)
        before = best.value
        best = swap_search(problem, best, low, high, budget)
        best.details["search_improvement"] = _relative(before, best.value)
    best.details["search_seconds"] = timer.lap()
    best.details["method"] = "relaxation top-K + swap search" if n > size else "all tickers"
    if size < n <= EXACT_MAX_ASSETS and problem.objective in EXACT_OBJECTIVES:
        _try_exact(problem, size, low, high, best)
        best.details["exact_seconds"] = timer.lap()
    return best


def _try_exact(problem: qp.Problem, size: int, low: float, high: float, best: Selection,
               ) -> None:
    chosen, verdict = exact(problem, size, low, high)
    best.details["exact"] = verdict
    trial = _try(problem, chosen, low, high) if chosen is not None else None
    if trial is None:
        return
    best.details["search_gap"] = _relative(trial[0], best.value)
    if trial[0] <= best.value + IMPROVEMENT * abs(best.value):  # a tie is rounding noise
        best.solution, best.value = trial[1], trial[0]
        best.details["method"] = "exact MIQP (DAQP branch and bound, proven optimal)"


def _relative(reference: float, other: float) -> float:
    """How much worse `other` is than `reference`, relative (0 when equal)."""
    return float((other - reference) / max(abs(reference), 1e-300))


class _Clock:
    def __init__(self) -> None:
        from time import perf_counter

        self._now = perf_counter
        self._last = perf_counter()

    def lap(self) -> float:
        now = self._now()
        elapsed, self._last = now - self._last, now
        return round(elapsed, 6)


def check_targets(problem: qp.Problem, size: int, low: float, high: float) -> None:
    """Refuse, with what is feasible, a max_sharpe or efficient_return no K-subset can meet."""
    reachable = best_return(problem.mu[best_return_subset(problem.mu, size)], low, high)
    if problem.objective == "max_sharpe" and reachable <= problem.risk_free_rate:
        raise ParameterError(
            f"no {size} holdings within weights {low:g}..{high:g} have an expected return "
            f"above risk_free_rate {problem.risk_free_rate:g} (best reachable {reachable:.4g}):"
            f" use min_volatility or a risk_free_rate below {reachable:.4g}")
    if problem.objective == "efficient_return" and problem.target_return > reachable:
        raise ParameterError(
            f"target_return {problem.target_return:g} is above the highest expected return "
            f"reachable with {size} holdings within weights {low:g}..{high:g}: "
            f"{reachable:.4g}; choose target_return ≤ {np.floor(reachable * 1e4) / 1e4:g}")
