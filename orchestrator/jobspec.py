"""What a job asks for: its parameters, and the JSON job files that name a CSV and set them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from orchestrator.errors import DataError, ParameterError
from orchestrator.paths import Share
from orchestrator.settings import Settings

Objective = Literal["min_volatility", "max_sharpe"]
OBJECTIVES: tuple[str, ...] = Objective.__args__  # type: ignore[attr-defined]


class JobParams(BaseModel):
    """Parameters of one job; defaults come from settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    portfolio_size: int = Field(20, ge=10, le=100, strict=True)
    objective: Objective = "min_volatility"
    max_weight: float = Field(0.25, gt=0, le=1)
    min_weight: float = Field(0.01, gt=0, lt=1)
    risk_free_rate: float = Field(0.02, ge=-0.1, le=0.5)
    reference_file: str | None = None

    @model_validator(mode="after")
    def _feasible(self) -> JobParams:
        k = self.portfolio_size
        if self.max_weight * k < 1 - 1e-12:
            raise ValueError(
                f"max_weight {self.max_weight} × portfolio_size {k} = {self.max_weight * k:g} "
                f"< 1, so the weights cannot sum to 1: raise max_weight to at least {1 / k:.4g} "
                f"or portfolio_size to at least {int(-(-1 // self.max_weight))}")
        if self.min_weight * k > 1 + 1e-12:
            raise ValueError(f"min_weight {self.min_weight} × portfolio_size {k} > 1: lower "
                             f"min_weight to at most {1 / k:.4g}")
        if self.min_weight > self.max_weight:
            raise ValueError(f"min_weight {self.min_weight} > max_weight {self.max_weight}")
        return self


class JobFile(JobParams):
    """A ``*.json`` job file: ``input_file`` (a CSV in the share) plus any parameter."""

    input_file: str


def defaults(settings: Settings) -> dict[str, Any]:
    return {key: getattr(settings, key) for key in
            ("portfolio_size", "objective", "max_weight", "min_weight", "risk_free_rate")}


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
    raw = _load_json(path)
    try:
        spec = JobFile(**{**defaults(settings), **raw})
    except ValidationError as error:
        raise ParameterError(explain(error), file=path.name) from None
    csv_path = share.resolve_inside(path.parent, spec.input_file, file=path.name,
                                    field="input_file")
    return csv_path, JobParams(**spec.model_dump(exclude={"input_file"}))


def _load_json(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_bytes())
    except UnicodeDecodeError:
        raise DataError("not a UTF-8 JSON job file", file=path.name) from None
    except json.JSONDecodeError as error:
        raise DataError(f"JSON syntax error: {error.msg}", file=path.name, row=error.lineno,
                        column=f"char {error.colno}") from None
    if not isinstance(raw, dict):
        raise DataError(f"a job file must hold a JSON object, got {type(raw).__name__}",
                        file=path.name)
    return raw
