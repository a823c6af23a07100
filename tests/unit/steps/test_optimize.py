"""Stories for the optimize step: exactly K holdings, every objective, honest refusals."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from orchestrator.errors import ParameterError, SolverError
from orchestrator.optimizer import cardinality, qp
from orchestrator.optimizer.estimates import estimate
from orchestrator.steps.optimize import (
    OBJECTIVES,
    Portfolio,
    PortfolioRequest,
    bound_warnings,
    check_request,
    optimize,
)
from tests.unit.optimizer.conftest import load_sample, random_prices

TOL = 1e-9
TARGETS = {"efficient_risk": {"target_volatility": 0.24},
           "efficient_return": {"target_return": 0.25}}


@pytest.fixture(scope="module")
def sample_prices() -> pd.DataFrame:
    return load_sample()


@pytest.fixture(scope="module")
def solved(sample_prices: pd.DataFrame) -> dict[tuple[str, int], Portfolio]:
    return {(objective, size): optimize(sample_prices, PortfolioRequest(
        size, objective, **TARGETS.get(objective, {}))) for objective in OBJECTIVES
        for size in (10, 20)}


def assert_well_formed(portfolio: Portfolio, request: PortfolioRequest) -> None:
    weights = np.array(list(portfolio.weights.values()))
    assert len(portfolio.weights) == request.portfolio_size
    assert abs(weights.sum() - 1.0) <= TOL
    assert weights.min() >= request.min_weight - TOL
    assert weights.max() <= request.max_weight + TOL
    assert np.isfinite([portfolio.expected_return, portfolio.volatility, portfolio.sharpe]).all()
    assert portfolio.solver_status == "optimal"


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("size", [10, 20])
def test_every_objective_gives_exactly_k_holdings_within_bounds(solved, objective, size):
    # given the real sample, when optimized for K holdings
    portfolio = solved[(objective, size)]
    request = PortfolioRequest(size, objective)
    # then exactly K tickers are held, the weights sum to 1 and respect the bounds
    assert_well_formed(portfolio, request)
    assert portfolio.sharpe == pytest.approx(
        (portfolio.expected_return - request.risk_free_rate) / portfolio.volatility)
    figures = portfolio.figures()
    assert figures["holdings"] == size
    assert 1 <= figures["effective_holdings"] <= size
    assert 0 < figures["max_drawdown"] < 1


@pytest.mark.parametrize("size", [10, 20])
def test_the_objectives_rank_as_their_definitions_say(solved, size):
    # given every objective solved on the same data
    by = {o: solved[(o, size)] for o in OBJECTIVES}
    # then min_volatility has the lowest volatility and max_sharpe the highest Sharpe ratio
    assert by["min_volatility"].volatility <= min(p.volatility for p in by.values()) + 1e-9
    assert by["max_sharpe"].sharpe >= max(p.sharpe for p in by.values()) - 1e-9
    # and the targets are met: return at least the target, volatility at most it
    assert by["efficient_return"].expected_return >= 0.25 - 1e-8
    assert by["efficient_risk"].volatility <= 0.24 + 1e-8


def test_exact_miqp_answers_min_volatility_on_the_sample(solved):
    # given the sample (57 tickers, within the exact solver's reach) and min_volatility K=20
    portfolio = solved[("min_volatility", 20)]
    # then the report says the subset is the proven optimum, and how far the search was
    # (the two may be the same subset: equal up to rounding, never better by more)
    assert portfolio.selection["method"].startswith("exact MIQP")
    assert portfolio.selection["search_gap"] >= -cardinality.IMPROVEMENT


def test_the_proven_subset_stands_when_the_search_ties_it_up_to_rounding(sample_prices):
    # given the search's answer on the sample, its value made better by rounding noise
    # (1e-16 relative, as seen on a busy machine)
    est = estimate(sample_prices, PortfolioRequest(20))
    problem = qp.Problem("min_volatility", est.mu, est.cov)
    found = cardinality.select(problem, 20, 0.01, 0.25, lambda: np.arange(20))
    tied = cardinality.Selection(found.solution, found.value * (1 - 2e-16), {"method": "search"})
    # when the exact MIQP is tried against it
    cardinality._try_exact(problem, 20, 0.01, 0.25, tied)
    # then the proven optimum is the answer, and the gap within rounding
    assert tied.details["method"].startswith("exact MIQP")
    assert abs(tied.details["search_gap"]) <= cardinality.IMPROVEMENT


def test_the_exact_solve_is_bounded_by_work_not_by_the_clock(sample_prices, monkeypatch):
    # given a solver that reports how it was limited
    seen: dict[str, object] = {}
    real = cardinality.daqp.solve

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(cardinality.daqp, "solve", spy)
    est = estimate(sample_prices, PortfolioRequest(20))
    # when the exact MIQP runs
    chosen, verdict = cardinality.exact(qp.Problem("min_volatility", est.mu, est.cov), 20,
                                        0.01, 0.25)
    # then an iteration budget decides it, with a wall-clock cap only as a safety net for hard
    # instances (the branch and bound ran for minutes on random walks), and the sample is proven
    assert seen["iter_limit"] == cardinality.EXACT_ITERATIONS
    assert seen["time_limit"] == cardinality.EXACT_SECONDS_CAP
    assert verdict == "proven optimal" and chosen is not None and chosen.size == 20


def test_an_exhausted_iteration_budget_keeps_the_search_answer(sample_prices, monkeypatch):
    # given an iteration budget too small to prove anything
    monkeypatch.setattr(cardinality, "EXACT_ITERATIONS", 5)
    est = estimate(sample_prices, PortfolioRequest(20))
    problem = qp.Problem("min_volatility", est.mu, est.cov)
    # when selecting, then the search's answer stands and the report says why
    chosen = cardinality.select(problem, 20, 0.01, 0.25, lambda: np.arange(20))
    assert chosen.details["exact"] == "not proven optimal (iteration_limit)"
    assert chosen.details["method"] == "relaxation top-K + swap search"
    assert chosen.solution.index.size == 20


def test_portfolio_json_is_complete_and_sorted(solved):
    # given a portfolio, when serialized
    data = json.loads(json.dumps(solved[("max_sharpe", 20)].to_dict()))
    # then weights come largest first and every figure the report needs is there
    weights = list(data["weights"].values())
    assert weights == sorted(weights, reverse=True)
    for key in ("expected_return", "volatility", "sharpe", "holdings", "largest_weight",
                "effective_holdings", "max_drawdown", "method", "estimates", "selection",
                "timings", "in_sample", "risk_contributions"):
        assert key in data, key
    assert sum(data["risk_contributions"].values()) == pytest.approx(1.0)
    assert data["estimates"]["covariance"] == "ledoit_wolf"
    assert len(data["in_sample"]["dates"]) == len(data["in_sample"]["portfolio"]) == 756
    assert data["in_sample"]["portfolio"][0] == 1.0
    assert "Ledoit-Wolf" in data["method"] and "\n" not in data["method"]


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_synthetic_universe_works_and_reports_progress(objective):
    # given 50 assets × 500 days of seeded prices
    request = PortfolioRequest(15, objective, 0.2, 0.01, 0.0, **{
        k: 0.15 for k in TARGETS.get(objective, {})})
    seen: list[float] = []
    # when optimized
    portfolio = optimize(random_prices(50, 500), request, progress=seen.append)
    # then the portfolio is well formed and progress rose to 1
    assert_well_formed(portfolio, request)
    assert len(seen) >= 3 and seen == sorted(seen) and seen[-1] == 1.0


def test_the_same_input_gives_the_same_portfolio():
    prices = random_prices(80, 300)
    first = optimize(prices, PortfolioRequest(20, "max_sharpe"))
    again = optimize(prices, PortfolioRequest(20, "max_sharpe"))
    assert first.weights == again.weights


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("request_", "n_tickers", "expected"),
    [
        (PortfolioRequest(5), 60, "outside 10..100"),
        (PortfolioRequest(500), 600, "outside 10..100"),
        (PortfolioRequest(20, "max_return"), 60, "choose one of min_volatility, max_sharpe"),
        (PortfolioRequest(10, max_weight=0.05), 60,
         "max_weight 0.05 × portfolio_size 10 = 0.5 < 1, so the weights cannot sum to 1: "
         "raise max_weight to at least 0.1 or portfolio_size to at least 20"),
        (PortfolioRequest(20, min_weight=0.1), 60, "lower min_weight to at most 0.05"),
        (PortfolioRequest(20, min_weight=0.3, max_weight=0.25), 60, "min_weight 0.3 > max_weight"),
        (PortfolioRequest(20, min_weight=0.0), 60, "min_weight 0 must be > 0"),
        (PortfolioRequest(30), 25, "only 25 usable tickers for portfolio_size 30"),
        (PortfolioRequest(20, "efficient_risk"), 60, "objective efficient_risk needs "
                                                     "target_volatility"),
        (PortfolioRequest(20, "efficient_return"), 60, "needs target_return"),
        (PortfolioRequest(20, target_return=0.1), 60, "target_return is used only by "
                                                      "objective efficient_return"),
        (PortfolioRequest(20, "efficient_risk", target_volatility=-0.1), 60, "must be > 0"),
        (PortfolioRequest(20, covariance="shrunk"), 60, "choose one of ledoit_wolf, sample"),
        (PortfolioRequest(20, expected_returns="ewma", ewma_span=1), 60, "ewma_span must be"),
        (PortfolioRequest(20, returns="percent"), 60, "choose one of simple, log"),
    ],
    ids=["size-5", "size-500", "objective", "max-weight", "min-weight", "min-gt-max",
         "min-zero", "few-tickers", "no-target-vol", "no-target-return", "stray-target",
         "negative-vol", "covariance", "span", "returns"],
)
def test_check_request_refuses_with_a_useful_message(request_, n_tickers, expected):
    # given an infeasible request, when checked, then ParameterError says what would work
    with pytest.raises(ParameterError) as caught:
        check_request(request_, n_tickers)
    assert expected in str(caught.value)


def test_check_request_accepts_a_feasible_request():
    check_request(PortfolioRequest(20, "max_sharpe"), n_tickers=57)


def test_target_volatility_below_the_minimum_names_the_minimum(sample_prices):
    # given a target volatility no 10 holdings can reach
    request = PortfolioRequest(10, "efficient_risk", target_volatility=0.05)
    # when optimized, then the refusal names the lowest reachable volatility
    with pytest.raises(ParameterError, match=re.escape(
            "target_volatility 0.05 is below the lowest volatility reachable with 10 "
            "holdings within weights 0.01..0.25: 0.187")) as caught:
        optimize(sample_prices, request)
    assert "choose target_volatility ≥ 0.187" in str(caught.value)


def test_target_return_above_the_maximum_names_the_maximum(sample_prices):
    request = PortfolioRequest(10, "efficient_return", target_return=5.0)
    with pytest.raises(ParameterError, match="highest expected return reachable with 10 "
                                             r"holdings within weights 0.01..0.25: \d"):
        optimize(sample_prices, request)


def test_optimize_refuses_too_few_tickers_before_solving():
    with pytest.raises(ParameterError, match="only 12 usable tickers"):
        optimize(random_prices(12), PortfolioRequest(20))


def test_max_sharpe_refuses_when_no_asset_beats_the_risk_free_rate():
    # given a market where every asset falls
    prices = random_prices()
    falling = prices.mul(np.exp(-0.004 * np.arange(len(prices))), axis=0)
    # when max_sharpe is asked for, then the error names the way out
    with pytest.raises(ParameterError, match=r"above risk_free_rate 0\.05 .*use min_volatility"):
        optimize(falling, PortfolioRequest(10, "max_sharpe", risk_free_rate=0.05))


# --------------------------------------------------------------------------- solver trouble


def test_solver_failure_becomes_solver_error_with_status(monkeypatch):
    # given a QP solver that ends infeasible (DAQP exit flag -1)
    monkeypatch.setattr(qp.daqp, "solve", lambda *a, **k: (np.zeros(a[0].shape[0]), 0.0, -1, {}))
    # when optimized, then a SolverError carries the status
    with pytest.raises(SolverError, match="status infeasible: min_volatility on 40 assets"):
        optimize(random_prices(), PortfolioRequest(10))


def test_non_finite_solver_weights_become_solver_error(monkeypatch):
    # given a solver that claims success but returns NaN weights
    monkeypatch.setattr(qp.daqp, "solve",
                        lambda *a, **k: (np.full(a[0].shape[0], np.nan), 0.0, 1, {}))
    with pytest.raises(SolverError, match="status optimal: min_volatility"):
        optimize(random_prices(), PortfolioRequest(10))


def test_cone_solver_failure_carries_clarabel_status(monkeypatch):
    class Stuck:
        def __init__(self, *args, **kwargs):
            pass

        def solve(self):
            return type("Result", (), {"status": "MaxIterations", "x": [np.nan] * 3})()

    monkeypatch.setattr(qp.clarabel, "DefaultSolver", Stuck)
    with pytest.raises(SolverError, match="status MaxIterations: efficient_risk"):
        optimize(random_prices(), PortfolioRequest(10, "efficient_risk", target_volatility=0.3))


def test_a_swap_that_fails_to_solve_is_skipped_not_fatal(monkeypatch):
    # given a solver that fails on every trial swap (but not on the first solves)
    real, calls = qp.solve, {"n": 0}

    def flaky(problem, index, low, high, start=None):
        calls["n"] += 1
        if start is not None:
            raise SolverError("status cycling: trial")
        return real(problem, index, low, high)

    monkeypatch.setattr(cardinality.qp, "solve", flaky)
    portfolio = optimize(random_prices(), PortfolioRequest(10))
    assert len(portfolio.weights) == 10 and calls["n"] > 2


def test_heavy_imports_happen_once_at_module_load():
    # given a fresh interpreter that has loaded the optimize step
    code = ("import sys, orchestrator.steps.optimize as o; from tests.unit.optimizer.conftest "
            "import random_prices; p = random_prices(20, 60); before = set(sys.modules); "
            "o.optimize(p, o.PortfolioRequest(10)); "
            "print(sorted(set(sys.modules) - before)); print('cvxpy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    # then a task imports nothing new, and the step never loads cvxpy
    assert out == ["[]", "False"]


# --------------------------------------------------------------------------- warnings


def rising(prices: pd.DataFrame) -> pd.DataFrame:
    """The same prices with 25 % a year added, so that max_sharpe has assets to hold."""
    return prices.mul(np.exp(0.001 * np.arange(len(prices))), axis=0)


@pytest.mark.parametrize("objective", ["min_volatility", "max_sharpe", "risk_parity"])
def test_k_100_at_min_weight_1_percent_warns_that_the_bounds_decide(objective):
    # given K = 100 and the default min_weight 0.01: one feasible point, 1 % each
    portfolio = optimize(rising(random_prices(150, 300)), PortfolioRequest(100, objective))
    # then the weights are equal, and the portfolio says why and what to change
    assert set(np.round(list(portfolio.weights.values()), 12)) == {0.01}
    [warning] = portfolio.warnings
    assert f"the weight bounds decide the answer, not the objective {objective}" in warning
    assert "portfolio_size 100 × min_weight 0.01 = 1" in warning
    assert "lower min_weight (e.g. to 0.005)" in warning
    assert portfolio.to_dict()["warnings"] == [warning]


def test_k_times_max_weight_of_1_warns_with_the_fix(sample_prices):
    portfolio = optimize(sample_prices, PortfolioRequest(10, max_weight=0.1))
    [warning] = portfolio.warnings
    assert "portfolio_size 10 × max_weight 0.1 = 1: every holding must be held at max_weight" \
        in warning and "raise max_weight (e.g. to 0.2)" in warning


def test_weights_all_at_their_bounds_warn():
    # given 10 weights each at min_weight 0.05 or max_weight 0.15 (the bounds left no room)
    request = PortfolioRequest(10, min_weight=0.05, max_weight=0.15)
    weights = np.array([0.15] * 5 + [0.05] * 5)
    # then the warning says the bounds, not the objective, set them
    [warning] = bound_warnings(request, weights)
    assert "every one of the 10 weights is at min_weight 0.05 or max_weight 0.15" in warning
    # and one weight inside the bounds is the objective's choice: no warning
    assert bound_warnings(request, np.array([0.15] * 4 + [0.1] * 2 + [0.05] * 4)) == []


def test_an_ordinary_portfolio_has_no_warning(solved):
    assert solved[("min_volatility", 20)].warnings == []
    assert solved[("max_sharpe", 20)].to_dict()["warnings"] == []
