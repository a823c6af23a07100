"""What a caller may ask of the optimizer, and the checks that need no data.

Every refusal says what would be feasible. Checks that need the data (a target volatility
below the lowest reachable, a target return above the highest) live in the engine. Bounds and
choices are the job parameters' own (orchestrator/jobs/params.py): a request built here directly
(tests, benchmarks) is held to the same limits as a job file. The checks across fields are
declared here only; the job parameter model (jobspec.JobParams) calls them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from orchestrator.errors import ParameterError
from orchestrator.jobs import params

OBJECTIVES = params.choices("objective")
COVARIANCES = params.choices("covariance")
EXPECTED_RETURNS = params.choices("expected_returns")
RETURN_KINDS = params.choices("returns")
TRADING_DAYS = 252
MIN_SIZE, MAX_SIZE = params.int_bounds("portfolio_size")
MIN_SPAN, MAX_SPAN = params.int_bounds("ewma_span")
#: Added to the refusal of a number outside its declared bounds.
HINTS = {"min_weight": " so that all portfolio_size tickers are held: use e.g. 0.01",
         "target_volatility": " (annual, e.g. 0.15)", "target_return": " (annual, e.g. 0.1)"}
TARGETS = {"target_volatility": "efficient_risk", "target_return": "efficient_return"}


@dataclass(frozen=True)
class PortfolioRequest:
    """K holdings, an objective, per-holding bounds and how to estimate risk and return.

    The first five fields keep their positions: callers build requests positionally. The
    defaults are the job parameters' (orchestrator/jobs/params.py).
    """

    portfolio_size: int
    objective: str = params.default("objective")
    max_weight: float = params.default("max_weight")
    min_weight: float = params.default("min_weight")
    risk_free_rate: float = params.default("risk_free_rate")
    target_volatility: float | None = params.default("target_volatility")
    target_return: float | None = params.default("target_return")
    covariance: str = params.default("covariance")
    expected_returns: str = params.default("expected_returns")
    ewma_span: int = params.default("ewma_span")
    returns: str = params.default("returns")


def from_mapping(values: Mapping[str, Any]) -> PortfolioRequest:
    """The request named by the fields of `values` (other keys, e.g. input_file, ignored)."""
    return PortfolioRequest(**{f.name: values[f.name] for f in fields(PortfolioRequest)
                               if f.name in values})


def _ceil_to(value: float, places: int = 4) -> float:
    scale = 10**places
    return math.ceil(round(value * scale, 6)) / scale


def _floor_to(value: float, places: int = 4) -> float:
    scale = 10**places
    return math.floor(round(value * scale, 6)) / scale


def _is_int(value: object) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or type(value).__name__.startswith(("int", "uint"))


def _check_size(request: PortfolioRequest) -> None:
    size = request.portfolio_size
    if not _is_int(size):
        raise ParameterError(f"portfolio_size must be an integer between {MIN_SIZE} and "
                             f"{MAX_SIZE}, got {size!r}")
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ParameterError(f"portfolio_size {size} is outside {MIN_SIZE}..{MAX_SIZE}: "
                             f"choose a size between {MIN_SIZE} and {MAX_SIZE}")


def _check_choices(request: PortfolioRequest) -> None:
    for name, allowed in (("objective", OBJECTIVES), ("covariance", COVARIANCES),
                          ("expected_returns", EXPECTED_RETURNS), ("returns", RETURN_KINDS)):
        value = getattr(request, name)
        if value not in allowed:
            raise ParameterError(f"unknown {name} {value!r}: choose one of {', '.join(allowed)}")
    span = request.ewma_span
    if not _is_int(span) or not MIN_SPAN <= span <= MAX_SPAN:
        raise ParameterError(f"ewma_span must be a whole number of days between {MIN_SPAN} "
                             f"and {MAX_SPAN}, got {span!r}")


def _check_numbers(request: PortfolioRequest) -> None:
    for name in ("max_weight", "min_weight", "risk_free_rate", *TARGETS):
        value = getattr(request, name)
        if value is None and name in TARGETS:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not math.isfinite(value):
            raise ParameterError(f"{name} must be a finite number, got {value!r}")
        declared = params.bounds(name)
        if value not in declared:
            raise ParameterError(f"{name} {value:g} must be {declared.words()}"
                                 f"{HINTS.get(name, '')}")


def _check_targets(request: PortfolioRequest) -> None:
    for name, objective in TARGETS.items():
        value = getattr(request, name)
        if request.objective == objective and value is None:
            raise ParameterError(f"objective {objective} needs {name}: set it, e.g. "
                                 f"{name} 0.15 (annual, 15 %)")
        if request.objective != objective and value is not None:
            raise ParameterError(f"{name} is used only by objective {objective}: remove it or "
                                 f"set objective {objective}")


def _check_max_weight(request: PortfolioRequest) -> None:
    size, high = request.portfolio_size, request.max_weight
    if high * size >= 1 - 1e-12:
        return
    fix = f"raise max_weight to at least {_ceil_to(1 / size):g}"
    if high > 0 and 1 / high <= MAX_SIZE:  # a cap of 2e-311 (fuzzing) makes 1 / high infinite
        fix += f" or portfolio_size to at least {math.ceil(round(1 / high, 9))}"
    raise ParameterError(f"max_weight {high:g} × portfolio_size {size} = {high * size:g} < 1, "
                         f"so the weights cannot sum to 1: {fix}")


def _check_min_weight(request: PortfolioRequest) -> None:
    size, low = request.portfolio_size, request.min_weight
    if low > request.max_weight:
        raise ParameterError(f"min_weight {low:g} > max_weight {request.max_weight:g}: "
                             f"lower min_weight to at most {request.max_weight:g}")
    if low * size <= 1 + 1e-12:
        return
    fix = f"lower min_weight to at most {_floor_to(1 / size):g}"
    if math.floor(round(1 / low, 9)) >= MIN_SIZE:
        fix += f" or portfolio_size to at most {math.floor(round(1 / low, 9))}"
    raise ParameterError(f"min_weight {low:g} × portfolio_size {size} = {low * size:g} > 1: "
                         f"{fix}")


def _check_universe(request: PortfolioRequest, n_tickers: int) -> None:
    size = request.portfolio_size
    if n_tickers >= size:
        return
    fix = f"supply at least {size} tickers"
    if n_tickers >= MIN_SIZE:
        fix += f" or lower portfolio_size to at most {n_tickers}"
    raise ParameterError(f"only {n_tickers} usable tickers for portfolio_size {size}: {fix}")


def check_request(request: PortfolioRequest, n_tickers: int | None = None) -> None:
    """Raise ParameterError, saying what would be feasible, if the request cannot be met.

    Without `n_tickers` (at submit, before the data is read) the universe is not checked.
    """
    _check_size(request)
    _check_choices(request)
    _check_numbers(request)
    _check_targets(request)
    _check_max_weight(request)
    _check_min_weight(request)
    if n_tickers is not None:
        _check_universe(request, n_tickers)
