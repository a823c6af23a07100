"""Each convex objective against an independent formulation written here with cvxpy.

The engine chooses K tickers; on that fixed subset the same problem is written from scratch
with cvxpy (its own canonicalization, Clarabel's interior point) on estimates made here with
pandas and scikit-learn. The optimal values agree within 1e-6 relative, our constraints hold
within 1e-8 and exactly K tickers are held.
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pandas as pd
import pytest
from sklearn.covariance import ledoit_wolf

from orchestrator.steps.optimize import Portfolio, PortfolioRequest, optimize
from tests.unit.optimizer.conftest import random_prices

REL, CONSTRAINT = 1e-6, 1e-8


def independent_estimates(prices: pd.DataFrame, tickers: list[str],
                          ) -> tuple[np.ndarray, np.ndarray]:
    returns = prices.pct_change().iloc[1:]
    cov = pd.DataFrame(ledoit_wolf(returns.to_numpy())[0] * 252, index=prices.columns,
                       columns=prices.columns)
    return returns.mean().loc[tickers].to_numpy() * 252, cov.loc[tickers, tickers].to_numpy()


def check_constraints(portfolio: Portfolio, request: PortfolioRequest) -> np.ndarray:
    w = np.array(list(portfolio.weights.values()))
    assert len(w) == request.portfolio_size
    assert abs(w.sum() - 1) <= CONSTRAINT
    assert w.min() >= request.min_weight - CONSTRAINT
    assert w.max() <= request.max_weight + CONSTRAINT
    return w


def solve(problem: cp.Problem) -> float:
    problem.solve(solver="CLARABEL")
    assert problem.status == "optimal"
    return float(problem.value)


def reference(objective: str, mu: np.ndarray, cov: np.ndarray, request: PortfolioRequest,
              ) -> float:
    """The optimal value on the fixed subset, in the engine's units."""
    k, low, high = len(mu), request.min_weight, request.max_weight
    w = cp.Variable(k)
    box = [cp.sum(w) == 1, w >= low, w <= high]
    risk = cp.quad_form(w, cp.psd_wrap(cov))
    if objective == "min_volatility":
        return np.sqrt(solve(cp.Problem(cp.Minimize(risk), box)))
    if objective == "efficient_return":
        return np.sqrt(solve(cp.Problem(cp.Minimize(risk),
                                        [*box, mu @ w >= request.target_return])))
    if objective == "efficient_risk":
        return solve(cp.Problem(cp.Maximize(mu @ w),
                                [*box, risk <= request.target_volatility**2]))
    # max_sharpe, homogenized (Cornuéjols & Tütüncü): y = κw
    y, kappa = cp.Variable(k), cp.Variable()
    value = solve(cp.Problem(cp.Minimize(cp.quad_form(y, cp.psd_wrap(cov))), [
        (mu - request.risk_free_rate) @ y == 1, cp.sum(y) == kappa, y >= low * kappa,
        y <= high * kappa]))
    return 1.0 / np.sqrt(value)


def ours(objective: str, portfolio: Portfolio) -> float:
    return {"min_volatility": portfolio.volatility, "efficient_return": portfolio.volatility,
            "efficient_risk": portfolio.expected_return, "max_sharpe": portfolio.sharpe}[objective]


CASES = [
    ("min_volatility", {}), ("max_sharpe", {}),
    ("efficient_return", {"target_return": 0.25}), ("efficient_risk", {"target_volatility": 0.24}),
]


@pytest.mark.parametrize(("objective", "extra"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("size", [10, 20])
def test_real_sample_matches_cvxpy_on_the_chosen_subset(sample_prices, objective, extra, size):
    # given the real sample and a request for K holdings
    request = PortfolioRequest(size, objective, **extra)
    # when the engine answers
    portfolio = optimize(sample_prices, request)
    w = check_constraints(portfolio, request)
    # then an independent cvxpy solve on its K tickers reaches the same optimum
    mu, cov = independent_estimates(sample_prices, list(portfolio.weights))
    assert ours(objective, portfolio) == pytest.approx(
        reference(objective, mu, cov, request), rel=REL)
    # and the objective's own constraint holds
    if objective == "efficient_return":
        assert w @ mu >= request.target_return - CONSTRAINT
    if objective == "efficient_risk":
        assert np.sqrt(w @ cov @ w) <= request.target_volatility + CONSTRAINT


@pytest.mark.parametrize(("objective", "extra"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("seed", [1, 2])
def test_random_universe_matches_cvxpy_on_the_chosen_subset(objective, extra, seed):
    # given a seeded synthetic universe of 40 assets and K = 15 within 0.02..0.15
    prices = random_prices(40, 500, seed)
    extra = {k: 0.15 for k in extra}  # targets these universes can reach
    request = PortfolioRequest(15, objective, 0.15, 0.02, 0.01, **extra)
    portfolio = optimize(prices, request)
    check_constraints(portfolio, request)
    mu, cov = independent_estimates(prices, list(portfolio.weights))
    assert ours(objective, portfolio) == pytest.approx(
        reference(objective, mu, cov, request), rel=REL)


@pytest.mark.parametrize(("size", "low", "high"), [(20, 0.01, 0.25), (20, 0.03, 0.06)])
def test_risk_parity_is_the_independent_log_barrier_solution(sample_prices, size, low, high):
    # given a risk-parity portfolio, loose bounds (unbinding) or tight ones (binding)
    request = PortfolioRequest(size, "risk_parity", high, low)
    portfolio = optimize(sample_prices, request)
    w = check_constraints(portfolio, request)
    _, cov = independent_estimates(sample_prices, list(portfolio.weights))
    contributions = w * (cov @ w)
    free = (w > low + 1e-9) & (w < high - 1e-9)
    # then the holdings inside their bounds contribute equal risk; pinned ones per KKT
    assert free.any()
    level = contributions[free].mean()
    assert np.abs(contributions[free] / level - 1).max() <= 1e-8
    assert (contributions[w <= low + 1e-9] >= level * (1 - 1e-8)).all()
    assert (contributions[w >= high - 1e-9] <= level * (1 + 1e-8)).all()
    # and cvxpy's own box log-barrier problem at that level gives the same weights
    x = cp.Variable(size)
    problem = cp.Problem(cp.Minimize(0.5 * cp.quad_form(x, cp.psd_wrap(cov))
                                     - level * cp.sum(cp.log(x))), [x >= low, x <= high])
    problem.solve(solver="CLARABEL")
    assert problem.status == "optimal"

    def barrier(v: np.ndarray) -> float:
        return 0.5 * v @ cov @ v - level * np.log(v).sum()

    # (the exponential-cone solve is accurate to ~1e-5 in the weights, ours to ~1e-12)
    assert barrier(w) <= barrier(x.value) + 1e-12 * abs(barrier(w))
    assert np.abs(x.value - w).max() <= 1e-4
