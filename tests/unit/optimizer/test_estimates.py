"""Stories for the estimates: each one equals what an established library computes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pypfopt import expected_returns, risk_models
from sklearn.covariance import ledoit_wolf as sklearn_ledoit_wolf

from orchestrator.errors import ParameterError
from orchestrator.optimizer.estimates import estimate, ledoit_wolf
from orchestrator.optimizer.request import PortfolioRequest
from tests.unit.optimizer.conftest import random_prices


@pytest.mark.parametrize(("days", "assets"), [(500, 40), (30, 60), (756, 57)])
def test_ledoit_wolf_equals_scikit_learn(days, assets):
    # given returns with more, or fewer, days than assets
    returns = np.random.default_rng(days).normal(0.0005, 0.02, (days, assets))
    # when shrunk here and by scikit-learn
    ours, shrinkage = ledoit_wolf(returns)
    theirs, their_shrinkage = sklearn_ledoit_wolf(returns)
    # then both the matrix and the intensity agree to rounding
    assert np.abs(ours - theirs).max() <= 1e-12 * np.abs(theirs).max()
    assert shrinkage == pytest.approx(their_shrinkage, rel=1e-10)


def test_default_estimates_equal_pypfopt_ledoit_wolf_and_arithmetic_mean(sample_prices):
    # given the real sample
    est = estimate(sample_prices, PortfolioRequest(20))
    # when PyPortfolioOpt estimates the same (arithmetic mean, ×252)
    cov = risk_models.CovarianceShrinkage(sample_prices).ledoit_wolf().to_numpy()
    mu = expected_returns.mean_historical_return(sample_prices, compounding=False).to_numpy()
    # then they agree, and the report says what was used
    assert np.abs(est.cov - cov).max() <= 1e-12
    assert np.abs(est.mu - mu).max() <= 1e-12
    assert est.info["covariance"] == "ledoit_wolf" and 0 < est.info["shrinkage"] < 1
    assert (est.info["observations"], est.info["tickers"]) == (755, 57)


def test_sample_covariance_ewma_and_log_returns_equal_pandas(sample_prices):
    # given a request for the sample covariance, EWMA means (span 60) and log returns
    request = PortfolioRequest(20, covariance="sample", expected_returns="ewma", ewma_span=60,
                               returns="log")
    est = estimate(sample_prices, request)
    logs = np.log(sample_prices).diff().iloc[1:]
    # then Σ is pandas' covariance (divisor T − 1) and μ pandas' EWMA of the last day, ×252
    assert np.abs(est.cov - logs.cov().to_numpy() * 252).max() <= 1e-12
    ewma = logs.ewm(span=60).mean().iloc[-1].to_numpy() * 252
    assert np.abs(est.mu - ewma).max() <= 1e-12
    assert est.info["ewma_span"] == 60 and "shrinkage" not in est.info


def test_in_sample_record_uses_simple_returns_even_for_log_estimates():
    prices = random_prices(12, 50)
    est = estimate(prices, PortfolioRequest(10, returns="log"))
    assert np.allclose(est.simple, prices.pct_change().iloc[1:].to_numpy(), atol=1e-15)
    assert len(est.dates) == 49 and est.dates[0] == str(prices.index[1])[:10]


@pytest.mark.parametrize("bad", [np.nan, np.inf, 0.0, -1.0])
def test_unusable_prices_are_refused_by_ticker(bad):
    prices = random_prices(12, 60)
    prices.iloc[30, 3] = bad
    with pytest.raises(ParameterError, match="S003"):
        estimate(prices, PortfolioRequest(10))


def test_constant_prices_are_refused_not_held():
    prices = random_prices(12, 60)
    prices["FLAT"] = 50.0
    with pytest.raises(ParameterError, match=r"zero variance.*FLAT"):
        estimate(prices, PortfolioRequest(10))


def test_duplicate_columns_are_refused():
    prices = random_prices(12, 60)
    doubled = pd.concat([prices, prices[["S001"]]], axis=1)
    with pytest.raises(ParameterError, match="duplicate ticker"):
        estimate(doubled, PortfolioRequest(10))
