"""Properties over random covariance matrices and parameters (hypothesis)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.errors import ParameterError
from orchestrator.optimizer import cardinality
from orchestrator.optimizer.estimates import estimate
from orchestrator.steps.optimize import OBJECTIVES, PortfolioRequest, check_request, optimize

TOL = 1e-9
SETTINGS = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


def prices_from_covariance(seed: int, n: int, days: int, spread: float) -> pd.DataFrame:
    """Daily returns drawn with a random covariance AᵀA (a random mixing matrix A)."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(0.0, 1.0, (n, n)) * rng.uniform(0.002, 0.012, n)[:, None]
    mixing += np.diag(rng.uniform(0.003, 0.02, n))
    drift = rng.normal(0.0004, spread, n)
    returns = np.clip(drift + rng.normal(0.0, 1.0, (days, n)) @ mixing, -0.5, 0.5)
    return pd.DataFrame(np.cumprod(1.0 + returns, axis=0) * 50.0,
                        index=pd.bdate_range("2019-01-01", periods=days),
                        columns=[f"T{i:02d}" for i in range(n)])


@st.composite
def problems(draw: st.DrawFn) -> tuple[pd.DataFrame, PortfolioRequest]:
    n = draw(st.integers(12, 30))
    prices = prices_from_covariance(draw(st.integers(0, 2**32 - 1)), n,
                                    draw(st.integers(40, 250)),
                                    draw(st.sampled_from([0.0002, 0.001, 0.003])))
    size = draw(st.integers(10, min(n, 20)))
    high = draw(st.floats(math.ceil(1e4 / size) / 1e4, 0.6))
    low = draw(st.floats(0.001, min(high, math.floor(1e4 / size) / 1e4)))
    objective = draw(st.sampled_from(OBJECTIVES))
    share = draw(st.floats(0.0, 1.0))
    request = PortfolioRequest(size, objective, high, low, risk_free_rate=-0.05)
    est = estimate(prices, request)
    if objective == "efficient_return":
        top = cardinality.best_return(est.mu[cardinality.best_return_subset(est.mu, size)],
                                      low, high)
        request = PortfolioRequest(size, objective, high, low, -0.05,
                                   target_return=top - share * abs(top))
    if objective == "efficient_risk":
        floor = optimize(prices, PortfolioRequest(size, "min_volatility", high, low))
        request = PortfolioRequest(size, objective, high, low, -0.05,
                                   target_volatility=floor.volatility * (1.001 + share))
    return prices, request


@settings(SETTINGS, max_examples=40)
@given(problems())
def test_weights_sum_to_one_within_bounds_with_exactly_k_holdings(case):
    prices, request = case
    try:
        portfolio = optimize(prices, request)
    except ParameterError as refused:  # max_sharpe when nothing beats the risk-free rate
        assert request.objective == "max_sharpe" and "risk_free_rate" in str(refused)
        return
    weights = np.array(list(portfolio.weights.values()))
    assert len(weights) == request.portfolio_size
    assert abs(weights.sum() - 1.0) <= TOL
    assert weights.min() >= request.min_weight - TOL
    assert weights.max() <= request.max_weight + TOL
    assert np.isfinite([portfolio.expected_return, portfolio.volatility]).all()
    if request.objective == "efficient_return":
        assert portfolio.expected_return >= request.target_return - 1e-8
    if request.objective == "efficient_risk":
        assert portfolio.volatility <= request.target_volatility + 1e-8


@SETTINGS
@given(size=st.integers(10, 100), shortfall=st.floats(0.01, 0.99))
def test_max_weight_too_small_for_k_is_refused_with_the_least_feasible(size, shortfall):
    high = (1.0 / size) * (1.0 - shortfall)
    with pytest.raises(ParameterError, match="raise max_weight to at least") as caught:
        check_request(PortfolioRequest(size, max_weight=high, min_weight=high / 2))
    least = float(str(caught.value).split("at least ")[1].split(" ")[0])
    check_request(PortfolioRequest(size, max_weight=least, min_weight=min(high / 2, 1 / size)))


@SETTINGS
@given(size=st.integers(10, 100), excess=st.floats(1.01, 5.0))
def test_min_weight_too_large_for_k_is_refused(size, excess):
    low = min(excess / size, 0.99)
    with pytest.raises(ParameterError, match="lower min_weight to at most"):
        check_request(PortfolioRequest(size, max_weight=1.0, min_weight=low))


@settings(max_examples=10, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**32 - 1), below=st.floats(0.05, 0.95))
def test_unreachable_targets_are_refused(seed, below):
    prices = prices_from_covariance(seed, 16, 120, 0.001)
    floor = optimize(prices, PortfolioRequest(10, "min_volatility"))
    with pytest.raises(ParameterError, match="below the lowest volatility reachable"):
        optimize(prices, PortfolioRequest(10, "efficient_risk",
                                          target_volatility=floor.volatility * below))
    with pytest.raises(ParameterError, match="above the highest expected return reachable"):
        optimize(prices, PortfolioRequest(10, "efficient_return", target_return=10.0))
