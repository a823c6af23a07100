"""One JSON error body for every refusal, ``{"error": {"code": ..., "message": ...}}``.

The codes are stable (clients branch on them; docs/api.md lists them); the messages are for
people and use the same words as the CLI and the share's error.json. The project's own errors
map to a status here, so endpoints raise them as the CLI does and never build responses.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import OperationalError as DatabaseError
from starlette.exceptions import HTTPException

from orchestrator.errors import (
    DataError,
    Forbidden,
    IllegalTransition,
    JobNotFound,
    PipelineError,
    TransientError,
    Unauthorized,
)

#: Seconds a client is asked to wait when the broker or the database is away.
RETRY_AFTER = 5


class ApiError(Exception):
    """A refusal with its HTTP status, stable code and extra fields (e.g. the original job)."""

    def __init__(self, status: int, code: str, message: str, *,
                 headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers, self.extra = headers or {}, extra


def body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


def respond(error: ApiError) -> JSONResponse:
    return JSONResponse(body(error.code, error.message, **error.extra), error.status,
                        headers=error.headers)


#: Errors that map to a status and code with their own message as it is.
SIMPLE: tuple[tuple[type[Exception], int, str], ...] = (
    (Forbidden, 403, "forbidden"), (JobNotFound, 404, "not_found"),
    (IllegalTransition, 409, "illegal_transition"))


def translate(error: Exception) -> ApiError:
    """The project's errors as HTTP refusals (anything else is a 500, logged)."""
    if isinstance(error, ApiError):
        return error
    if isinstance(error, Unauthorized):
        return ApiError(401, "unauthorized", str(error).replace("pass --token or set "
                        "PIPELINE_TOKEN", "send Authorization: Bearer <token>"),
                        headers={"WWW-Authenticate": "Bearer"})
    for kind, status, code in SIMPLE:
        if isinstance(error, kind):
            return ApiError(status, code, str(error))
    if isinstance(error, DataError):
        return ApiError(422, "invalid_parameter", str(error), **_where(error))
    if isinstance(error, DatabaseError | BrokerError | ConnectionError | TransientError):
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        return ApiError(503, "unavailable", f"unavailable: {first}; nothing was recorded or "
                        "claimed, try again later", headers={"Retry-After": str(RETRY_AFTER)})
    if isinstance(error, PipelineError):
        return ApiError(400, "bad_request", str(error))
    return ApiError(500, "internal", "internal error; the server log has the details")


def _where(error: DataError) -> dict[str, Any]:
    return {k: v for k, v in (("file", error.file), ("row", error.row),
                              ("column", error.column)) if v is not None}


async def on_error(_request: Request, error: Exception) -> JSONResponse:
    return respond(translate(error))


async def on_http(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized",
             403: "forbidden"}
    return JSONResponse(body(codes.get(error.status_code, "http_error"), str(error.detail)),
                        error.status_code, headers=getattr(error, "headers", None))


async def on_validation(_request: Request, error: Exception) -> JSONResponse:
    """FastAPI's own checks (query, path, JSON body), in the share's words: field 'x': why."""
    assert isinstance(error, RequestValidationError)
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"] if p not in ("body", "query", "path"))
        message = str(item["msg"]).removeprefix("Value error, ")
        got = f" (got {item['input']!r})" if "input" in item and where else ""
        parts.append(f"field {where!r}: {message}{got}" if where else message)
    return JSONResponse(body("invalid_parameter", "; ".join(parts)), 422)
