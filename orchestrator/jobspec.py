"""What a job asks for: its parameters, and the JSON job files that name a CSV and set them."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from orchestrator import safeopen
from orchestrator.errors import DataError, ParameterError
from orchestrator.optimizer.request import PortfolioRequest, check_request, from_mapping
from orchestrator.paths import Share
from orchestrator.settings import Settings

Objective = Literal["min_volatility", "max_sharpe", "efficient_risk", "efficient_return",
                    "risk_parity"]
OBJECTIVES: tuple[str, ...] = Objective.__args__  # type: ignore[attr-defined]
#: A job file holds a few parameters; anything bigger is refused unread.
MAX_JOB_FILE_BYTES = 1 << 20


class JobParams(BaseModel):
    """Parameters of one job; defaults come from settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    portfolio_size: int = Field(20, ge=10, le=100, strict=True)
    objective: Objective = "min_volatility"
    max_weight: float = Field(0.25, gt=0, le=1)
    min_weight: float = Field(0.01, gt=0, lt=1)
    risk_free_rate: float = Field(0.02, ge=-0.1, le=0.5)
    target_volatility: float | None = Field(None, gt=0, le=5)  # efficient_risk, annual
    target_return: float | None = Field(None, ge=-1, le=10)  # efficient_return, annual
    covariance: Literal["ledoit_wolf", "sample"] = "ledoit_wolf"
    expected_returns: Literal["mean", "ewma"] = "mean"
    ewma_span: int = Field(180, ge=2, le=100_000, strict=True)  # trading days
    returns: Literal["simple", "log"] = "simple"
    reference_file: str | None = None
    # How to read the price file (docs/inputs.md): "auto" detects per file.
    separator: Literal["auto", ",", ";", "tab", "\t", "|"] = "auto"
    decimal: Literal["auto", ".", ","] = "auto"
    late_listing: Literal["trim_history", "drop_ticker"] = "trim_history"

    @model_validator(mode="after")
    def _feasible(self) -> JobParams:
        k = self.portfolio_size
        if self.max_weight * k < 1 - 1e-12:
            raise ValueError(
                f"max_weight {self.max_weight} × portfolio_size {k} = {self.max_weight * k:g} "
                f"< 1, so the weights cannot sum to 1: raise max_weight to at least {1 / k:.4g}"
                + _or_size(self.max_weight))
        if self.min_weight * k > 1 + 1e-12:
            raise ValueError(f"min_weight {self.min_weight} × portfolio_size {k} > 1: lower "
                             f"min_weight to at most {1 / k:.4g}")
        if self.min_weight > self.max_weight:
            raise ValueError(f"min_weight {self.min_weight} > max_weight {self.max_weight}")
        try:  # the optimizer's own checks (targets and their objectives), no data needed
            check_request(self.request())
        except ParameterError as error:
            raise ValueError(str(error)) from None
        return self

    def forced_separator(self) -> str | None:
        """The separator validation must use, or None to detect it."""
        return {"auto": None, "tab": "\t"}.get(self.separator, self.separator)

    def forced_decimal(self) -> str | None:
        """The decimal mark validation must use, or None to detect it."""
        return None if self.decimal == "auto" else self.decimal

    def request(self) -> PortfolioRequest:
        """What the optimize step is asked for."""
        return from_mapping(dict(self))


def _or_size(max_weight: float) -> str:
    """The other way out, when there is one: enough holdings (at most 100) at this cap. A
    tiny cap (2e-311, found by fuzzing) makes 1 / cap infinite: no int() of that."""
    if 1 / max_weight > 100:
        return ""
    return f" or portfolio_size to at least {int(-(-1 // max_weight))}"


class JobFile(JobParams):
    """A ``*.json`` job file: ``input_file`` (a CSV in the share) plus any parameter."""

    input_file: str
    #: Run even when the same input and parameters ran within PIPELINE_DEDUPE_WINDOW.
    force: bool = Field(False, strict=True)


def defaults(settings: Settings) -> dict[str, Any]:
    return {**{key: getattr(settings, key) for key in
               ("portfolio_size", "objective", "max_weight", "min_weight", "risk_free_rate",
                "late_listing")},
            "separator": settings.csv_separator, "decimal": settings.csv_decimal}


def explain(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"])
        got = f" (got {item['input']!r})" if where and "input" in item else ""
        message = item["msg"].removeprefix("Value error, ")
        parts.append(f"field {where!r}: {message}{got}" if where else message)
    return "; ".join(parts)


def make_params(settings: Settings, overrides: dict[str, Any], *, file: str | None = None,
                ) -> JobParams:
    """Defaults from settings, overridden by the job's own values; ParameterError if bad."""
    try:
        return JobParams(**{**defaults(settings), **overrides})
    except ValidationError as error:
        raise ParameterError(explain(error), file=file) from None


def read_job_file(path: Path, share: Share, settings: Settings) -> tuple[Path, JobParams]:
    """The CSV a job file names (checked to be inside the share) and its parameters."""
    raw = _load_json(path, share)
    try:
        spec = JobFile(**{**defaults(settings), **raw})
    except ValidationError as error:
        raise ParameterError(explain(error), file=path.name) from None
    try:
        csv_path = share.resolve_inside(path.parent, spec.input_file, file=path.name,
                                        field="input_file")
    except (OSError, ValueError, RuntimeError) as error:  # NUL, name too long, link loop
        reason = os.strerror(error.errno) if getattr(error, "errno", None) else str(error)
        raise DataError(f"input_file {spec.input_file[:100]!r} is not a usable path: {reason}",
                        file=path.name) from None
    return csv_path, JobParams(**spec.model_dump(exclude={"input_file", "force"}))


def _read_bounded(path: Path, share: Share) -> bytes:
    """The job file's bytes, read once from one descriptor (orchestrator/safeopen.py): a link,
    FIFO or device is refused unread (it could block or never end), and so is a file over
    MAX_JOB_FILE_BYTES. Outside the share only a file named by the caller gets here."""
    data = safeopen.read_bounded(share.root, path, MAX_JOB_FILE_BYTES, caller_named=True)
    if len(data) > MAX_JOB_FILE_BYTES:
        raise DataError(f"the job file is larger than {MAX_JOB_FILE_BYTES:,} bytes; a job file "
                        "holds a few parameters", file=path.name)
    return data


def wants_force(path: Path, share: Share) -> bool:
    """The job file's ``force`` field; call after read_job_file accepted the file."""
    try:
        return _load_json(path, share).get("force") is True
    except DataError:
        return False


def _load_json(path: Path, share: Share) -> dict[str, Any]:
    try:
        raw = json.loads(_read_bounded(path, share))
    except UnicodeDecodeError:
        raise DataError("not a UTF-8 JSON job file", file=path.name) from None
    except json.JSONDecodeError as error:
        raise DataError(f"JSON syntax error: {error.msg}", file=path.name, row=error.lineno,
                        column=f"char {error.colno}") from None
    except (ValueError, RecursionError) as error:  # a 5,000-digit number; [[[[… 100,000 deep
        raise DataError(f"not a usable JSON job file: {str(error)[:200]}",
                        file=path.name) from None
    if not isinstance(raw, dict):
        raise DataError(f"a job file must hold a JSON object, got {type(raw).__name__}",
                        file=path.name)
    return raw
