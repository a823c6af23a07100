"""Stories for the optimize step: exactly K holdings, bounds held, honest refusals."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cvxpy as cp
import numpy as np
import pandas as pd
import pytest
from sklearn.covariance import ledoit_wolf

from orchestrator.errors import ParameterError, SolverError
from orchestrator.steps import optimize as step
from orchestrator.steps.optimize import (
    OBJECTIVES,
    Portfolio,
    PortfolioRequest,
    check_request,
    optimize,
)

SAMPLE = Path("/work/shared/data/sp500_sample.csv")
TOL = 1e-9


@pytest.fixture(scope="module")
def sample_prices() -> pd.DataFrame:
    if not SAMPLE.exists():
        pytest.skip(f"sample data {SAMPLE} not present")
    prices = pd.read_csv(SAMPLE, parse_dates=["date"], index_col="date")
    return prices.dropna(axis=1, how="any")


@pytest.fixture(scope="module")
def solved(sample_prices: pd.DataFrame) -> dict[tuple[str, int], Portfolio]:
    return {
        (objective, size): optimize(sample_prices, PortfolioRequest(size, objective))
        for objective in OBJECTIVES
        for size in (10, 20)
    }


def random_walk(n_assets: int = 50, n_days: int = 500, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    drift = rng.uniform(0.0, 0.0008, n_assets)
    log_returns = rng.normal(drift, rng.uniform(0.008, 0.03, n_assets), (n_days, n_assets))
    dates = pd.bdate_range("2015-01-01", periods=n_days)
    return pd.DataFrame(100.0 * np.exp(np.cumsum(log_returns, axis=0)), index=dates,
                        columns=[f"S{i:03d}" for i in range(n_assets)])


def annual_covariance(prices: pd.DataFrame) -> pd.DataFrame:
    """Independent estimate: Ledoit–Wolf on simple daily returns of the whole universe."""
    returns = prices.pct_change().iloc[1:]
    cov, _ = ledoit_wolf(returns.to_numpy())
    return pd.DataFrame(cov * 252, index=prices.columns, columns=prices.columns)


def assert_well_formed(portfolio: Portfolio, request: PortfolioRequest) -> None:
    weights = np.array(list(portfolio.weights.values()))
    assert len(portfolio.weights) == request.portfolio_size
    assert abs(weights.sum() - 1.0) <= TOL
    assert weights.min() >= request.min_weight - TOL
    assert weights.max() <= request.max_weight + TOL
    assert np.isfinite([portfolio.expected_return, portfolio.volatility, portfolio.sharpe]).all()
    assert portfolio.solver_status == "optimal"


# --------------------------------------------------------------------------- real sample


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("size", [10, 20])
def test_sample_gives_exactly_k_holdings_within_bounds(solved, objective, size):
    # given the real sample and a request for K holdings
    request = PortfolioRequest(size, objective)
    # when it was optimized
    portfolio = solved[(objective, size)]
    # then exactly K tickers are held, the weights sum to 1 and respect the bounds
    assert_well_formed(portfolio, request)
    assert portfolio.sharpe == pytest.approx(
        (portfolio.expected_return - request.risk_free_rate) / portfolio.volatility)


@pytest.mark.parametrize("size", [10, 20])
def test_min_volatility_beats_equal_weight_of_same_tickers(sample_prices, solved, size):
    # given the min-volatility portfolio of K tickers
    portfolio = solved[("min_volatility", size)]
    tickers = list(portfolio.weights)
    cov = annual_covariance(sample_prices).loc[tickers, tickers].to_numpy()
    # when compared with holding the same tickers in equal weights
    equal = np.full(size, 1.0 / size)
    # then its volatility is no higher
    assert portfolio.volatility <= np.sqrt(equal @ cov @ equal) + 1e-9


@pytest.mark.parametrize("size", [10, 20])
def test_max_sharpe_has_at_least_the_sharpe_of_min_volatility(solved, size):
    # given both objectives solved on the same data
    # then max_sharpe's Sharpe ratio is at least min_volatility's
    assert solved[("max_sharpe", size)].sharpe >= solved[("min_volatility", size)].sharpe - 1e-6


@pytest.mark.parametrize("size", [10, 20])
def test_min_volatility_matches_an_independent_cvxpy_solve(sample_prices, solved, size):
    # given the K tickers min_volatility chose and their covariance, estimated independently
    portfolio = solved[("min_volatility", size)]
    request = PortfolioRequest(size)
    tickers = list(portfolio.weights)
    cov = annual_covariance(sample_prices).loc[tickers, tickers].to_numpy()
    # when the restricted K-asset problem is solved directly with cvxpy
    w = cp.Variable(size)
    problem = cp.Problem(cp.Minimize(cp.quad_form(w, cp.psd_wrap(cov))),
                         [cp.sum(w) == 1, w >= request.min_weight, w <= request.max_weight])
    problem.solve(solver="CLARABEL")
    # then the optimal variance agrees within 1e-6 relative
    assert problem.status == "optimal"
    assert portfolio.volatility**2 == pytest.approx(problem.value, rel=1e-6)


def test_to_dict_is_json_and_sorted(solved):
    # given a portfolio
    portfolio = solved[("max_sharpe", 20)]
    # when serialized
    data = json.loads(json.dumps(portfolio.to_dict()))
    # then weights come largest first and the figures survive
    weights = list(data["weights"].values())
    assert weights == sorted(weights, reverse=True)
    assert set(data) == {"weights", "expected_return", "volatility", "sharpe", "method",
                         "solver_status"}
    assert "Ledoit-Wolf" in data["method"] and "\n" not in data["method"]


# --------------------------------------------------------------------------- synthetic


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_synthetic_random_walk_works_and_reports_progress(objective):
    # given 50 assets × 500 days of a seeded geometric random walk
    prices = random_walk()
    request = PortfolioRequest(15, objective, max_weight=0.2, risk_free_rate=0.0)
    seen: list[float] = []
    # when optimized
    portfolio = optimize(prices, request, progress=seen.append)
    # then the portfolio is well formed and progress rose to 1
    assert_well_formed(portfolio, request)
    assert set(portfolio.weights) <= set(prices.columns)
    assert len(seen) >= 3 and seen == sorted(seen) and seen[-1] == 1.0


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("request_", "n_tickers", "expected"),
    [
        (PortfolioRequest(5), 60, "outside 10..100"),
        (PortfolioRequest(500), 600, "outside 10..100"),
        (PortfolioRequest(20, "max_return"), 60, "min_volatility, max_sharpe"),
        (PortfolioRequest(10, max_weight=0.05), 60,
         "max_weight 0.05 × portfolio_size 10 = 0.5 < 1: raise max_weight to at least 0.1 "
         "or portfolio_size to at least 20"),
        (PortfolioRequest(20, min_weight=0.1), 60, "lower min_weight to at most 0.05"),
        (PortfolioRequest(20, min_weight=0.3, max_weight=0.25), 60, "min_weight 0.3 > max_weight"),
        (PortfolioRequest(20, min_weight=0.0), 60, "min_weight 0 must be > 0"),
        (PortfolioRequest(30), 25, "only 25 usable tickers for portfolio_size 30"),
    ],
    ids=["size-5", "size-500", "objective", "max-weight", "min-weight", "min-gt-max",
         "min-zero", "few-tickers"],
)
def test_check_request_refuses_with_a_useful_message(request_, n_tickers, expected):
    # given an infeasible request, when checked, then ParameterError says what would work
    with pytest.raises(ParameterError) as caught:
        check_request(request_, n_tickers)
    assert expected in str(caught.value)


def test_check_request_accepts_a_feasible_request():
    check_request(PortfolioRequest(20, "max_sharpe"), n_tickers=57)


def test_optimize_refuses_too_few_tickers_before_solving():
    # given 12 tickers and a request for 20
    with pytest.raises(ParameterError, match="only 12 usable tickers"):
        optimize(random_walk(n_assets=12), PortfolioRequest(20))


def test_max_sharpe_refuses_when_no_asset_beats_the_risk_free_rate():
    # given a market where every asset falls
    prices = random_walk()
    falling = prices.mul(np.exp(-0.003 * np.arange(len(prices))), axis=0)
    request = PortfolioRequest(10, "max_sharpe", risk_free_rate=0.05)
    # when max_sharpe is asked for, then the error names the way out
    with pytest.raises(ParameterError, match=re.escape(
            "no asset's expected return exceeds risk_free_rate 0.05; use min_volatility")):
        optimize(falling, request)


# --------------------------------------------------------------------------- degenerate input


def test_constant_prices_are_refused_not_held():
    # given one ticker whose price never moves (zero variance)
    prices = random_walk()
    prices["FLAT"] = 50.0
    # when optimized, then it is refused by name rather than becoming a riskless holding
    with pytest.raises(ParameterError, match=r"zero variance.*FLAT"):
        optimize(prices, PortfolioRequest(10))


@pytest.mark.parametrize("bad", [np.nan, np.inf, 0.0, -1.0])
def test_nan_or_non_positive_prices_are_refused(bad):
    # given a NaN (or a non-positive price) sneaking into one column
    prices = random_walk()
    prices.iloc[100, 3] = bad
    # when optimized, then the column is named in a ParameterError
    with pytest.raises(ParameterError, match="S003"):
        optimize(prices, PortfolioRequest(10))


def test_solver_failure_becomes_solver_error_with_status(monkeypatch):
    # given a solver that ends infeasible
    class FailingFrontier:
        def __init__(self, *args, **kwargs):
            self._opt = type("Problem", (), {"status": "infeasible"})()

        def min_volatility(self):
            raise step.pypfopt_exceptions.OptimizationError("Solver status: infeasible")

    monkeypatch.setattr(step, "EfficientFrontier", FailingFrontier)
    # when optimized, then a SolverError carries the status
    with pytest.raises(SolverError, match="status infeasible"):
        optimize(random_walk(), PortfolioRequest(10))


def test_non_finite_solver_weights_become_solver_error(monkeypatch):
    # given a solver that claims success but returns NaN weights
    class NanFrontier:
        def __init__(self, mu, *args, **kwargs):
            self._opt = type("Problem", (), {"status": "optimal"})()
            self.weights = np.full(len(mu), np.nan)

        def min_volatility(self):
            return None

    monkeypatch.setattr(step, "EfficientFrontier", NanFrontier)
    # when optimized, then the NaN does not reach a portfolio
    with pytest.raises(SolverError, match="status optimal"):
        optimize(random_walk(), PortfolioRequest(10))
