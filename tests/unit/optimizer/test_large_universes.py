"""Stories for large universes: the work stays bounded by K, not by the number of tickers.

A 5,000-ticker file took 188 s (issue 16) because the relaxation's working set grew to the
whole universe; these tests pin the bounds that fixed it, by counting work, not seconds.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pandas as pd
import pytest
from sklearn.covariance import ledoit_wolf as sklearn_ledoit_wolf

from orchestrator.optimizer import cardinality, covariance, estimates, qp, riskparity
from orchestrator.optimizer.estimates import estimate, ledoit_wolf_low_rank
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


@pytest.mark.parametrize(("assets", "days", "matrices"), [(400, 600, 1), (1200, 200, 0)])
def test_the_covariance_is_built_without_extra_n_by_n_copies(assets, days, matrices):
    # given fewer tickers than days (Σ dense), or more (the 5,000 × 756 case, scaled down)
    prices = random_walks(assets, days)
    # when the estimates are computed under tracemalloc (NumPy reports its buffers)
    tracemalloc.start()
    try:
        est = estimate(prices, PortfolioRequest(20))
        peak = tracemalloc.get_traced_memory()[1] / 8
    finally:
        tracemalloc.stop()
    # then the peak is the answer's one N × N matrix, or none when tickers outnumber days
    # (low rank + diagonal), beside three T × N tables (prices, returns, centred) and T × T
    assert est.cov.shape == (assets, assets)
    allowed = matrices * assets**2 + 3 * days * assets + days**2
    assert peak < allowed, f"peak {peak / assets**2:.2f} × N² doubles"


def test_low_rank_ledoit_wolf_is_scikit_learns_matrix():
    # given more tickers than days
    returns = np.random.default_rng(5).normal(0.0005, 0.02, (120, 300))
    # when shrunk as low rank + diagonal, and densely by scikit-learn
    low_rank, shrinkage = ledoit_wolf_low_rank(returns, 252)
    theirs, their_shrinkage = sklearn_ledoit_wolf(returns)
    # then the matrices and intensities agree to rounding, and so do the pieces the engine uses
    ours = covariance.dense(low_rank)
    assert np.abs(ours - 252 * theirs).max() <= 1e-12 * np.abs(252 * theirs).max()
    assert shrinkage == pytest.approx(their_shrinkage, rel=1e-10)
    index, w = np.array([3, 50, 299]), np.array([0.2, 0.3, 0.5])
    assert np.allclose(covariance.block(low_rank, index), ours[np.ix_(index, index)],
                       rtol=1e-12, atol=0)
    assert np.allclose(covariance.times(low_rank, index, w), ours[:, index] @ w, rtol=1e-12,
                       atol=1e-18)
    assert np.allclose(covariance.diagonal(low_rank), np.diag(ours), rtol=1e-12, atol=0)


@pytest.mark.parametrize("objective", ["min_volatility", "max_sharpe", "risk_parity",
                                       "efficient_risk"])
def test_low_rank_and_dense_covariance_give_the_same_portfolio(walks, objective, monkeypatch):
    # given more tickers than days, solved with Σ as low rank + diagonal and as a dense matrix
    request = PortfolioRequest(20, objective, **(
        {"target_volatility": 0.3} if objective == "efficient_risk" else {}))
    low_rank = optimize(walks, request)
    real = estimates.ledoit_wolf_low_rank
    monkeypatch.setattr(estimates, "ledoit_wolf_low_rank",
                        lambda r, p: (lambda c, s: (covariance.dense(c), s))(*real(r, p)))
    dense = optimize(walks, request)
    # then the same tickers, weights and figures, to rounding
    assert list(low_rank.weights) == list(dense.weights)
    assert np.allclose(list(low_rank.weights.values()), list(dense.weights.values()),
                       rtol=0, atol=1e-8)
    assert low_rank.volatility == pytest.approx(dense.volatility, rel=1e-9)
