"""The API's response models (its OpenAPI document describes them) and request bodies.

Job parameters are not redefined here: requests are checked by the job parameter model of
orchestrator/jobs/jobspec.py (``JobParams``; a JSON request is a ``JobFile``), and the request
schemas are that model's JSON schema, so /openapi.json shows the bounds, choices and help
declared in orchestrator/jobs/params.py.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from orchestrator.jobs.jobspec import JobFile, JobParams
from orchestrator.store import jobs as store
from orchestrator.store.states import JobState


class Job(BaseModel):
    id: str
    input_name: str
    input_sha256: str
    input_size: int
    params: dict[str, Any]
    state: JobState
    step: str | None
    progress: float = Field(description="percent, 0-100")
    attempts: int
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    batch_id: str | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    archive_path: str | None = None
    links: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def of(cls, job: store.Job) -> Job:
        data = {k: getattr(job, k) for k in cls.model_fields if k != "links"}
        base = f"/v1/jobs/{job.id}"
        links = {"self": base, "history": f"{base}/history", "events": f"{base}/events"}
        if job.state is JobState.COMPLETED:
            links.update({name: f"{base}/files/{name}" for name in RESULT_FILES})
        return cls(**data, links=links)


RESULT_FILES = ("weights.csv", "report.json", "report.html", "quality.json")


class Event(BaseModel):
    job_id: str
    at: datetime
    from_state: str | None
    to_state: str
    step: str | None
    attempt: int
    worker: str | None
    detail: str | None = None


class JobPage(BaseModel):
    jobs: list[Job]
    next: str | None = Field(None, description="cursor of the next page; absent at the end")


class Batch(BaseModel):
    id: str
    name: str
    size: int
    created_at: datetime
    finished_at: datetime | None = None
    summary: dict[str, Any] | None = None
    by_state: dict[str, int]
    jobs: list[Job]


class BatchAccepted(BaseModel):
    batch_id: str
    jobs: list[Job]


class ErrorDetail(BaseModel):
    code: str = Field(description="stable: clients branch on it (docs/api.md lists them)")
    message: str = Field(description="for people: what, where, why, what to do")
    model_config = {"extra": "allow"}


class ErrorBody(BaseModel):
    error: ErrorDetail


def upload_schema(batch: bool) -> dict[str, Any]:
    """The multipart body, for the OpenAPI document: files plus the job parameters."""
    files = ({"files": {"type": "array", "items": {"type": "string", "format": "binary"}},
              "name": {"type": "string", "description": "the batch's name"}}
             if batch else {"file": {"type": "string", "format": "binary"}})
    params = JobParams.model_json_schema()["properties"]  # bounds, choices, descriptions
    required = ["files"] if batch else ["file"]
    multipart = {"type": "object", "required": required,
                 "properties": {**files, **params, "force": {"type": "boolean"}}}
    content: dict[str, Any] = {"multipart/form-data": {"schema": multipart}}
    if not batch:
        content["application/json"] = {"schema": JobFile.model_json_schema()}
    return {"requestBody": {"required": True, "content": content}}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    meaning = {400: "bad request", 401: "no token, or unknown or revoked",
               403: "the token's role is too low", 404: "unknown job or batch",
               409: "duplicate, or a state that does not allow it", 410: "rotated to archive",
               413: "upload too large", 415: "not a price file or media type",
               422: "bad parameter or input", 503: "broker or database away (Retry-After)"}
    return {code: {"model": ErrorBody, "description": meaning.get(code, "")} for code in codes}
