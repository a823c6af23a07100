"""Every job parameter, declared once: its name, type, default, bounds, choices and help.

Before this module a parameter's bounds were written four times (the job parameter model, the
settings that hold the defaults, the optimizer's checks and ``pipeline submit``'s options) and
had drifted: five parameters could be set in a job file but not on the command line. Now:

- ``orchestrator/jobs/jobspec.py``'s ``JobParams`` is this model plus the checks across fields
  (weights × size, a target and its objective), which it asks of the optimizer;
- ``orchestrator/optimizer/request.py`` takes its bounds and choices from here;
- ``orchestrator/settings.py`` declares the defaults it holds (``PIPELINE_PORTFOLIO_SIZE``...)
  with :func:`setting`, so a default obeys the same bounds;
- ``cli/params.py`` generates ``pipeline submit``'s options from the fields, and the HTTP API's
  request schema is the model's JSON schema (``orchestrator/api/models.py``);
- ``docs/reference.md``'s parameter table is generated from it (orchestrator/envexample.py).

It imports nothing of the project, so that every layer may import it.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, Literal

import annotated_types
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

Objective = Literal["min_volatility", "max_sharpe", "efficient_risk", "efficient_return",
                    "risk_parity"]
Covariance = Literal["ledoit_wolf", "sample"]
ExpectedReturns = Literal["mean", "ewma"]
ReturnKind = Literal["simple", "log"]
Separator = Literal["auto", ",", ";", "tab", "\t", "|"]
DecimalMark = Literal["auto", ".", ","]
LateListing = Literal["trim_history", "drop_ticker"]


class Parameters(BaseModel):
    """The fields of one job's parameters. Checks across fields are JobParams' (jobspec.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # strict: a job file's "20" or 20.5 is refused rather than read as 20
    portfolio_size: int = Field(20, ge=10, le=100, strict=True,
                                description="exactly this many holdings")
    objective: Objective = Field("min_volatility", description="what the optimizer optimizes")
    max_weight: float = Field(0.25, gt=0, le=1, description="largest weight of one holding; "
                              "max_weight × portfolio_size must be ≥ 1")
    min_weight: float = Field(0.01, gt=0, lt=1, description="smallest weight of a holding")
    risk_free_rate: float = Field(0.02, ge=-0.1, le=0.5,
                                  description="annual risk-free rate (Sharpe ratio)")
    target_volatility: float | None = Field(
        None, gt=0, le=5, description="annual volatility for efficient_risk (required there, "
        "refused elsewhere)")
    target_return: float | None = Field(
        None, ge=-1, le=10, description="annual expected return for efficient_return "
        "(required there, refused elsewhere)")
    covariance: Covariance = Field("ledoit_wolf", description="ledoit_wolf (shrunk) or sample")
    expected_returns: ExpectedReturns = Field(
        "mean", description="mean (historical) or ewma (exponentially weighted)")
    ewma_span: int = Field(180, ge=2, le=100_000, strict=True,
                           description="span in trading days of the ewma mean")
    returns: ReturnKind = Field("simple", description="daily simple or log returns")
    reference_file: str | None = Field(
        None, description="a file in the share listing the expected tickers (one per line, or "
        "a CSV header); missing and unexpected tickers are reported")
    # How to read the price file (docs/inputs.md): "auto" detects per file.
    separator: Separator = Field("auto", description="the price file's field separator; "
                                 "auto: detected per file")
    decimal: DecimalMark = Field("auto", description="the price file's decimal mark; auto: "
                                 "detected per file")
    late_listing: LateListing = Field(
        "trim_history", description="a late-listed ticker: trim every history, or drop it")


#: The parameters, in the order they are declared (and listed to users).
NAMES: tuple[str, ...] = tuple(Parameters.model_fields)
#: Parameters whose default is a setting (PIPELINE_<SETTING>), by the setting's name.
SETTING_OF: dict[str, str] = {
    "portfolio_size": "portfolio_size", "objective": "objective", "max_weight": "max_weight",
    "min_weight": "min_weight", "risk_free_rate": "risk_free_rate",
    "late_listing": "late_listing", "separator": "csv_separator", "decimal": "csv_decimal"}
#: ``pipeline submit`` options kept from before the options were generated (--size).
CLI_ALIASES: dict[str, tuple[str, ...]] = {"portfolio_size": ("--size",)}


def option_names(name: str) -> tuple[str, ...]:
    """``pipeline submit``'s names of a parameter: the field's name with dashes, and aliases."""
    return (f"--{name.replace('_', '-')}", *CLI_ALIASES.get(name, ()))


@dataclass(frozen=True)
class Bounds:
    """A numeric parameter's interval: ``low``/``high`` (None: unbounded), each open or not."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def words(self) -> str:
        """e.g. "between 10 and 100", "> 0 and ≤ 1": for messages that are not pydantic's."""
        if not (self.low_open or self.high_open) and None not in (self.low, self.high):
            return f"between {self.low:g} and {self.high:g}"
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '≥'} {self.low:g}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '≤'} {self.high:g}")
        return " and ".join(parts)

    def __contains__(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)


def field(name: str) -> FieldInfo:
    return Parameters.model_fields[name]


def default(name: str) -> Any:
    """The declared default (a settings-backed parameter's PIPELINE_* may differ)."""
    return field(name).default


def value_type(name: str) -> Any:
    """The field's type without ``| None``: int, float, str or a Literal."""
    annotation = field(name).annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation



def choices(name: str) -> tuple[str, ...]:
    """The values a Literal parameter takes, in declared order; () for the others."""
    kind = value_type(name)
    return typing.get_args(kind) if typing.get_origin(kind) is Literal else ()


def bounds(name: str) -> Bounds:
    """The interval a numeric parameter's field declares (gt, ge, lt, le)."""
    found: dict[str, Any] = {}
    for item in field(name).metadata:
        if isinstance(item, annotated_types.Gt):
            found.update(low=item.gt, low_open=True)
        elif isinstance(item, annotated_types.Ge):
            found.update(low=item.ge)
        elif isinstance(item, annotated_types.Lt):
            found.update(high=item.lt, high_open=True)
        elif isinstance(item, annotated_types.Le):
            found.update(high=item.le)
    return Bounds(**found)


def int_bounds(name: str) -> tuple[int, int]:
    """An integer parameter's closed interval (portfolio_size: 10, 100)."""
    declared = bounds(name)
    assert declared.low is not None and declared.high is not None, name
    return int(declared.low), int(declared.high)


@cache
def _adapter(name: str) -> TypeAdapter[Any]:
    return TypeAdapter(Annotated[field(name).annotation, field(name)])


def problem(name: str, value: Any) -> str | None:
    """What the field alone refuses in ``value``, in the words a job file gets (jobspec.explain:
    "Input should be greater than or equal to 10 (got 5)"); None if it accepts it. The CLI
    words its refusals with this, so a bound reads the same on every door."""
    try:
        _adapter(name).validate_python(value)
    except ValidationError as error:
        item = error.errors()[0]
        return f"{item['msg'].removeprefix('Value error, ')} (got {value!r})"
    return None


def setting(name: str, meaning: str | None = None) -> Any:
    """The settings field holding ``name``'s default (``PIPELINE_<NAME>``): the declared
    default and bounds, lax (an environment variable is text: "20" is 20)."""
    declared = field(name)
    limits = bounds(name)
    keys = {"gt" if limits.low_open else "ge": limits.low,
            "lt" if limits.high_open else "le": limits.high}
    return Field(declared.default, **{k: v for k, v in keys.items() if v is not None},
                 description=f"job default: {meaning or declared.description}")
