"""Σ as the solvers see it: a dense N × N matrix, or low rank plus diagonal.

When tickers outnumber days (N > T), Ledoit–Wolf's Σ = (1 − s)·XᵀX/T + s·m·I is a rank-T
matrix plus a constant diagonal: storing the T × N factor instead of N² numbers takes
T/N of the memory (at 10,000 × 756, 60 MB instead of 800 MB), and the shrinkage needs only
the T × T Gram matrix XXᵀ (T²N flops instead of N²T). The engine never needs all of Σ on a
large universe: the solvers take blocks on at most max(200, 4·K) tickers, the reduced costs
need Σ[:, S]·w, the ranking needs diag(Σ). These functions give those for either form.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LowRank:
    """Σ = factorᵀ·factor + diag(diagonal); factor is T × N."""

    factor: np.ndarray
    diagonal: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        n = self.factor.shape[1]
        return n, n

    def is_finite(self) -> bool:
        return bool(np.isfinite(self.factor.sum()) and np.isfinite(self.diagonal).all())


Covariance = np.ndarray | LowRank


def block(cov: Covariance, index: np.ndarray) -> np.ndarray:
    """Σ[index, index], dense."""
    if isinstance(cov, LowRank):
        part = cov.factor[:, index]
        out = part.T @ part
        out.flat[:: len(index) + 1] += cov.diagonal[index]
        return out
    return cov[np.ix_(index, index)]


def times(cov: Covariance, index: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Σ[:, index] · weights: every asset's covariance with the portfolio on `index`."""
    if isinstance(cov, LowRank):
        out = cov.factor.T @ (cov.factor[:, index] @ weights)
        out[index] += cov.diagonal[index] * weights
        return out
    return cov[:, index] @ weights


def diagonal(cov: Covariance) -> np.ndarray:
    """The variances."""
    if isinstance(cov, LowRank):
        return np.einsum("ij,ij->j", cov.factor, cov.factor) + cov.diagonal
    return np.diag(cov)


def dense(cov: Covariance) -> np.ndarray:
    """The whole matrix (for small universes only: the exact MIQP, tests)."""
    if isinstance(cov, LowRank):
        return block(cov, np.arange(cov.shape[0]))
    return cov
