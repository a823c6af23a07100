"""Daily returns from prices, then annualized expected returns and covariance.

Ledoit–Wolf is computed here with NumPy in one matrix product: the shrinkage intensity
needs Σ_t (Σ_i x_ti²)², which is O(T·N), not the second N×N product scikit-learn forms
in blocks. The formula is scikit-learn's (Ledoit & Wolf 2004, constant-variance target,
centred returns, divisor T) and the tests check it against scikit-learn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from orchestrator.errors import ParameterError, SolverError
from orchestrator.optimizer.covariance import Covariance, LowRank
from orchestrator.optimizer.request import TRADING_DAYS, PortfolioRequest


@dataclass(frozen=True)
class Estimates:
    """Annualized estimates for a universe of tickers, and the data they came from."""

    tickers: list[str]
    dates: list[str]  # one per return row (the later of the two prices)
    simple: np.ndarray  # T × N simple daily returns, for the in-sample record
    mu: np.ndarray  # N, annual
    cov: Covariance  # N × N, annual; low rank + diagonal when tickers outnumber days
    info: dict[str, Any] = field(default_factory=dict)


def _names(columns: pd.Index, limit: int = 10) -> str:
    names = [str(c) for c in columns]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _dates(index: pd.Index) -> list[str]:
    if isinstance(index, pd.DatetimeIndex):
        return np.datetime_as_string(index.values, unit="D").tolist()
    return [str(d)[:10] for d in index]


def price_values(prices: pd.DataFrame) -> np.ndarray:
    """The prices as a float array, refused with the tickers at fault if unusable."""
    if not isinstance(prices, pd.DataFrame) or prices.shape[0] < 3:
        raise ParameterError("prices must be a table with at least 3 rows (dates)")
    if not prices.columns.is_unique:
        raise ParameterError("prices has duplicate ticker columns")
    values = prices.to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values).all(axis=0) | ~(values > 0).all(axis=0)
    if bad.any():
        raise ParameterError(f"prices must be finite and positive; not so for "
                             f"{_names(prices.columns[bad])}")
    return values


def _shrinkage(frob: float, scale: float, row_sq: np.ndarray, t: int, n: int) -> float:
    """Ledoit–Wolf's intensity from ‖S‖²_F, tr(S)/N and each day's Σ_i x_ti²."""
    beta = (float(row_sq @ row_sq) / t - frob) / (n * t)
    delta = (frob - n * scale**2) / n
    beta = min(beta, delta)
    return 0.0 if beta == 0 else beta / delta


def ledoit_wolf(returns: np.ndarray) -> tuple[np.ndarray, float]:
    """Ledoit–Wolf shrunk covariance (daily) of centred returns, and the shrinkage."""
    t, n = returns.shape
    x = returns - returns.mean(axis=0)
    sample = x.T @ x  # NumPy uses BLAS syrk for xᵀx: half the flops of a general product
    sample /= t
    scale = float(np.trace(sample)) / n
    row_sq = np.einsum("ij,ij->i", x, x)
    shrinkage = _shrinkage(float(np.einsum("ij,ij->", sample, sample)), scale, row_sq, t, n)
    sample *= 1.0 - shrinkage  # in place: at 5,000 tickers each N × N copy is 200 MB
    sample.flat[:: n + 1] += shrinkage * scale
    return sample, shrinkage


def ledoit_wolf_low_rank(returns: np.ndarray, periods: int = 1) -> tuple[LowRank, float]:
    """The same Σ, ×periods, as low rank plus diagonal, from the T × T Gram matrix.

    ‖XᵀX‖_F = ‖XXᵀ‖_F and tr(XᵀX) = tr(XXᵀ): when N > T the shrinkage costs T²N, not N²T,
    and Σ is never formed (see orchestrator/optimizer/covariance.py).
    """
    t, n = returns.shape
    x = returns - returns.mean(axis=0)
    gram = x @ x.T
    row_sq = np.diag(gram).copy()
    scale = float(row_sq.sum()) / (t * n)
    shrinkage = _shrinkage(float(np.einsum("ij,ij->", gram, gram)) / t**2, scale, row_sq, t, n)
    x *= np.sqrt((1.0 - shrinkage) * periods / t)
    return LowRank(x, np.full(n, shrinkage * scale * periods)), shrinkage


def sample_covariance(returns: np.ndarray) -> np.ndarray:
    """Unbiased sample covariance (divisor T − 1, as pandas and PyPortfolioOpt use)."""
    x = returns - returns.mean(axis=0)
    cov = x.T @ x
    cov /= returns.shape[0] - 1
    return cov


def ewma_mean(returns: np.ndarray, span: int) -> np.ndarray:
    """Exponentially weighted mean with the newest day weighted most (pandas adjust=True)."""
    alpha = 2.0 / (span + 1.0)
    weights = (1.0 - alpha) ** np.arange(returns.shape[0] - 1, -1, -1, dtype=np.float64)
    return (weights @ returns) / weights.sum()


def estimate(prices: pd.DataFrame, request: PortfolioRequest) -> Estimates:
    """Returns of the kind asked, then μ and Σ annualized with 252 trading days."""
    values = price_values(prices)
    simple = values[1:] / values[:-1] - 1.0
    returns = np.log1p(simple) if request.returns == "log" else simple
    flat = returns.std(axis=0) == 0
    if flat.any():
        raise ParameterError(f"constant prices (zero variance) for {_names(prices.columns[flat])}"
                             f": drop these tickers")
    info: dict[str, Any] = {
        "returns": request.returns, "periods_per_year": TRADING_DAYS,
        "observations": int(returns.shape[0]), "tickers": int(returns.shape[1]),
        "first_date": str(prices.index[0])[:10], "last_date": str(prices.index[-1])[:10],
        "covariance": request.covariance, "expected_returns": request.expected_returns,
    }
    cov: Covariance
    if request.covariance == "ledoit_wolf" and returns.shape[1] > returns.shape[0]:
        cov, shrinkage = ledoit_wolf_low_rank(returns, TRADING_DAYS)  # already annual
        info["shrinkage"] = round(shrinkage, 6)
    elif request.covariance == "ledoit_wolf":
        cov, shrinkage = ledoit_wolf(returns)
        cov *= TRADING_DAYS  # in place, as above
        info["shrinkage"] = round(shrinkage, 6)
    else:
        cov = sample_covariance(returns)
        cov *= TRADING_DAYS
    if request.expected_returns == "ewma":
        mu = ewma_mean(returns, request.ewma_span)
        info["ewma_span"] = request.ewma_span
    else:
        mu = returns.mean(axis=0)
    mu = mu * TRADING_DAYS
    # the sum, not an N × N mask (100 MB at 10,000 tickers): a NaN or ±inf makes it non-finite
    finite = cov.is_finite() if isinstance(cov, LowRank) else np.isfinite(cov.sum())
    if not (np.isfinite(mu).all() and finite):
        raise SolverError("status estimation_failed: non-finite expected returns or covariance")
    dates = _dates(prices.index[1:])
    return Estimates([str(c) for c in prices.columns], dates, simple, mu, cov, info)
