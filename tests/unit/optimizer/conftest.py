"""Data for the optimizer's tests: the real sample and seeded synthetic prices."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.conftest import SAMPLE


def load_sample() -> pd.DataFrame:
    """The bundled S&P 500 sample, tickers with gaps left out (57 × 756)."""
    prices = pd.read_csv(SAMPLE, parse_dates=["date"], index_col="date")
    return prices.dropna(axis=1, how="any")


@pytest.fixture(scope="session")
def sample_prices() -> pd.DataFrame:
    return load_sample()


def random_prices(n_assets: int = 40, n_days: int = 500, seed: int = 7) -> pd.DataFrame:
    """Seeded prices from a one-factor model with drifts spread around 8 % a year."""
    rng = np.random.default_rng(seed)
    market = rng.normal(0.0, 0.01, n_days)
    beta = rng.uniform(0.4, 1.6, n_assets)
    idio = rng.normal(0.0, 1.0, (n_days, n_assets)) * rng.uniform(0.008, 0.025, n_assets)
    drift = rng.normal(0.10, 0.10, n_assets) / 252
    returns = drift + np.outer(market, beta) + idio
    return pd.DataFrame(100.0 * np.cumprod(1.0 + returns, axis=0),
                        index=pd.bdate_range("2016-01-01", periods=n_days),
                        columns=[f"S{i:03d}" for i in range(n_assets)])
