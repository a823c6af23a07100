"""Submitting through the API: the same intake as the share and ``pipeline submit``.

Parameters are checked first, by the job parameter model itself (orchestrator/jobs/jobspec.py),
so a bad one is refused with the words a job file gets and nothing is recorded. Then the
staged files go through :class:`orchestrator.jobs.canvas.Orchestrator` like any other input: the
intake claims them (a rename), records the jobs with the share's duplicate rule, publishes
their chain or chord.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from orchestrator.api.errors import ApiError
from orchestrator.errors import DataError, ParameterError
from orchestrator.jobs.canvas import Orchestrator
from orchestrator.jobs.jobspec import JobParams, make_params
from orchestrator.jobs.params import choices
from orchestrator.monitoring.health import check_broker
from orchestrator.store import jobs as store
from orchestrator.store.states import JobState

#: Request fields that are not job parameters.
CONTROL_FIELDS = ("force", "name")


def form_params(fields: dict[str, str], file: str) -> tuple[dict[str, Any], bool]:
    """Form fields (text) as typed job parameters, and ``force``.

    Each value is read with the type its JobParams field declares (lax: "30" is 30), so the
    model's own strict checks then see real numbers. An empty field is not given (HTML forms
    send every input). Unknown names are passed on, for the model to refuse by name.
    """
    params: dict[str, Any] = {}
    for name, sent in fields.items():
        text = sent if sent in _choices(name) else sent.strip()  # separator "\t" is a value
        if name in CONTROL_FIELDS or text == "":
            continue
        declared = JobParams.model_fields.get(name)
        if declared is None:
            params[name] = text
            continue
        try:
            params[name] = TypeAdapter(declared.annotation).validate_python(text)
        except ValidationError as error:
            reason = error.errors()[0]["msg"]
            raise ParameterError(f"field {name!r}: {reason} (got {text[:100]!r})",
                                 file=file) from None
    return params, _flag(fields.get("force"))


def _choices(name: str) -> tuple[str, ...]:
    return choices(name) if name in JobParams.model_fields else ()


def _flag(text: str | None) -> bool:
    if text is None or text.strip() == "":
        return False
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ParameterError(f"field 'force': not a boolean (got {text[:100]!r})")


def check_params(orch: Orchestrator, params: dict[str, Any], file: str) -> None:
    """Refuse bad parameters before anything is claimed or recorded (422)."""
    make_params(orch.settings, params, file=file)


def check_broker_up(orch: Orchestrator) -> None:
    """Publishing would fail: refuse now (503), before a file is claimed or a row written."""
    check_broker(orch.app, orch.settings)


@dataclass(frozen=True)
class Submitted:
    job: store.Job

    @property
    def duplicate_of(self) -> str | None:
        error = self.job.error or {}
        if self.job.state is JobState.CANCELLED and error.get("type") == "DuplicateInput":
            return str(error.get("original_job"))
        return None


def submit_file(orch: Orchestrator, path: Path, params: dict[str, Any], force: bool,
                ) -> Submitted:
    """One input (a staged upload, or a file on the share) through the intake."""
    job_id = orch.submit(path, params, dedupe=not force)
    return Submitted(store.get_job(job_id))


def refusal(submitted: Submitted) -> ApiError | None:
    """A job the intake recorded but will not run: a duplicate (409) or refused input (422)."""
    job = submitted.job
    if submitted.duplicate_of is not None:
        return ApiError(409, "duplicate", str((job.error or {}).get("message", "")).replace(
            "Submit with --force, or set \"force\": true in a job file",
            "Send force=true"), job_id=job.id, original_job=submitted.duplicate_of)
    if job.state is JobState.FAILED and job.step is None and job.error:
        return ApiError(422, "invalid_input", str(job.error.get("message")), job_id=job.id)
    return None


def on_share(orch: Orchestrator, body: Any) -> tuple[Path, dict[str, Any], bool]:
    """A JSON request naming a file on the share: the file (resolved inside the share only),
    its parameters and ``force``; refused (422) in the job files' words."""
    if not isinstance(body, dict):
        raise ParameterError("the JSON body must be an object with input_file and parameters")
    params = dict(body)
    name = params.pop("input_file", None)
    force = params.pop("force", False)
    if not isinstance(name, str) or not name:
        raise ParameterError("field 'input_file': a path relative to the share is required")
    if not isinstance(force, bool):
        raise ParameterError(f"field 'force': Input should be a valid boolean (got {force!r})")
    if "\x00" in name or len(name) > 4096:
        raise ApiError(400, "bad_filename", "input_file holds a NUL or is too long")
    try:
        path = orch.share.resolve_inside(orch.share.root, name, file="request",
                                         field="input_file")
    except OSError as error:  # a name too long for the filesystem, a link loop
        raise DataError(f"input_file {name[:100]!r} is not a usable path: {error.strerror}",
                        file="request") from None
    if path.is_relative_to(orch.share.processing.resolve()):
        raise DataError(f"input_file {name[:100]!r} is inside processing/, which belongs to "
                        "running jobs; name a file in input/ or elsewhere on the share",
                        file="request")
    return path, params, force
