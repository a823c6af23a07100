"""What a portfolio manager reads off a portfolio: concentration and the in-sample record."""

from __future__ import annotations

import numpy as np


def effective_holdings(weights: np.ndarray) -> float:
    """1 / Σw²: the number of equal weights with the same concentration."""
    return float(1.0 / np.sum(weights**2))


def growth(daily: np.ndarray) -> np.ndarray:
    """Value of 1 invested, day by day, starting with 1 on the first price date."""
    return np.concatenate([[1.0], np.cumprod(1.0 + daily)])


def max_drawdown(values: np.ndarray) -> float:
    """Largest fall from a running peak, as a positive fraction (0.25 = −25 %)."""
    peaks = np.maximum.accumulate(values)
    return float(np.max(1.0 - values / peaks))


def in_sample(simple: np.ndarray, index: np.ndarray, weights: np.ndarray,
              ) -> tuple[np.ndarray, np.ndarray]:
    """Growth of the portfolio and of the equal-weight universe, rebalanced daily."""
    return growth(simple[:, index] @ weights), growth(simple.mean(axis=1))
