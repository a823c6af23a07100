"""What a job asks for: its parameters, and the JSON job files that name a CSV and set them."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

from orchestrator import safeopen
from orchestrator.errors import DataError, ParameterError
from orchestrator.jobs.params import SETTING_OF, Parameters, choices
from orchestrator.optimizer.request import PortfolioRequest, check_request, from_mapping
from orchestrator.paths import Share
from orchestrator.settings import Settings

OBJECTIVES: tuple[str, ...] = choices("objective")
#: A job file holds a few parameters; anything bigger is refused unread.
MAX_JOB_FILE_BYTES = 1 << 20


class JobParams(Parameters):
    """Parameters of one job: the fields declared in orchestrator/jobs/params.py (defaults there
    and in settings), checked across fields here with the optimizer's own checks."""

    @model_validator(mode="after")
    def _feasible(self) -> JobParams:
        """What one field cannot say (weights × size, a target and its objective): the
        optimizer's own checks, which need no data, so both refuse in the same words."""
        try:
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


class JobFile(JobParams):
    """A ``*.json`` job file: ``input_file`` (a CSV in the share) plus any parameter."""

    input_file: str
    #: Run even when the same input and parameters ran within PIPELINE_DEDUPE_WINDOW.
    force: bool = Field(False, strict=True)


def defaults(settings: Settings) -> dict[str, Any]:
    """The parameters whose default is a setting (PIPELINE_*), as the settings say."""
    return {name: getattr(settings, key) for name, key in SETTING_OF.items()}


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
