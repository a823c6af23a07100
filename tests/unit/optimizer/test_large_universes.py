"""Stories for large universes: the work stays bounded by K, not by the number of tickers.

A 5,000-ticker file took 188 s (issue 16) because the relaxation's working set grew to the
whole universe; these tests pin the bounds that fixed it, by counting work, not seconds.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pandas as pd
import pytest

from orchestrator.optimizer import cardinality, qp, riskparity
from orchestrator.optimizer.estimates import estimate
from orchestrator.steps.optimize import PortfolioRequest, optimize


def random_walks(n_assets: int, n_days: int, seed: int = 1) -> pd.DataFrame:
    """Independent geometric random walks: the min-variance relaxation holds every one."""
    rng = np.random.default_rng(seed)
    steps = rng.normal(0.0004, 1.0, (n_days, n_assets)) * rng.uniform(0.01, 0.03, n_assets)
    return pd.DataFrame(100.0 * np.exp(np.cumsum(steps, axis=0)),
                        index=pd.bdate_range("2015-01-01", periods=n_days),
                        columns=[f"T{i:04d}" for i in range(n_assets)])


@pytest.fixture(scope="module")
def walks() -> pd.DataFrame:
    return random_walks(900, 300)


@pytest.mark.parametrize("objective", ["min_volatility", "max_sharpe", "risk_parity"])
def test_no_solve_grows_to_the_whole_universe(walks, objective, monkeypatch):
    # given 900 independent tickers (the relaxation would hold all of them) and K = 20,
    # and a record of how many assets each solve is over
    sizes: list[int] = []
    solve, erc = qp.solve, riskparity.unbounded

    def counted_solve(problem, index, *args, **kwargs):
        sizes.append(len(index))
        return solve(problem, index, *args, **kwargs)

    def counted_erc(cov):
        sizes.append(cov.shape[0])
        return erc(cov)

    monkeypatch.setattr(cardinality.qp, "solve", counted_solve)
    monkeypatch.setattr(riskparity, "unbounded", counted_erc)
    # when optimized
    portfolio = optimize(walks, PortfolioRequest(20, objective))
    # then no solve was over more than the screen (max(200, 4·K) tickers), the report
    # says how many the first stage considered, and exactly K are held
    assert max(sizes) <= 200 < walks.shape[1]
    assert portfolio.selection["relaxation_candidates"] == max(sizes)
    assert len(portfolio.weights) == 20


def test_screening_keeps_the_answer_as_good_as_the_whole_universe_relaxation(walks,
                                                                            monkeypatch):
    # given the same tickers, solved with the screen and with the whole-universe relaxation
    request = PortfolioRequest(20)
    screened = optimize(walks, request)
    monkeypatch.setattr(cardinality, "SCREEN", walks.shape[1])
    whole = optimize(walks, request)
    assert whole.selection["relaxation_candidates"] == walks.shape[1]
    # then the screened answer is at least as good (lower volatility), within rounding
    assert screened.volatility <= whole.volatility * (1 + 1e-9)


def test_the_covariance_is_built_without_extra_n_by_n_copies():
    # given more tickers than days (the 5,000 × 756 case, scaled down)
    prices = random_walks(1200, 200)
    n_by_n = 1200 * 1200 * 8
    # when the estimates are computed under tracemalloc (NumPy reports its buffers)
    tracemalloc.start()
    try:
        est = estimate(prices, PortfolioRequest(20))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # then the peak holds one N × N matrix (the answer), not three or four
    assert est.cov.shape == (1200, 1200)
    assert peak < 1.5 * n_by_n, f"peak {peak / n_by_n:.2f} × N² doubles"
