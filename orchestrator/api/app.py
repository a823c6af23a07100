"""The HTTP API and the jobs page: ``create_app(settings)``, served by uvicorn.

One more door into the same house: it submits through the intake the share and
``pipeline submit`` use, changes states through the orchestrator, reads the same store, and
checks the CLI's tokens. /docs is Swagger UI served from the fastapi-offline package's copy
of its assets (FastAPI's default page loads them from a CDN, which a closed network lacks).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi_offline import FastAPIOffline
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import OperationalError as DatabaseError
from starlette.exceptions import HTTPException

from orchestrator.api import errors, events, page, routes, tokens, uploads
from orchestrator.api.security import COOKIE, Verified, token_id
from orchestrator.errors import PipelineError
from orchestrator.settings import Settings, get_settings

log = logging.getLogger("orchestrator.api")
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGI = Callable[[Scope, Callable[[], Awaitable[Message]],
                 Callable[[Message], Awaitable[None]]], Awaitable[None]]

DESCRIPTION = """Submit price files, follow jobs, fetch their results.

Authenticate with `Authorization: Bearer <token>` (a token from `pipeline token create`):
viewer reads, submitter submits, operator cancels and retries. Errors are
`{"error": {"code": "...", "message": "..."}}` with a stable code. See docs/api.md.
"""


class RequestLog:
    """One log line per request, with the token's public id (never the token)."""

    def __init__(self, app: ASGI) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), [0]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            log.info("%s %s %s %.1fms token=%s client=%s", scope["method"], scope["path"],
                     status[0] or "-", (time.perf_counter() - started) * 1000,
                     _token_id(scope), (scope.get("client") or ("-",))[0])


def _token_id(scope: Scope) -> str:
    headers = dict(scope.get("headers") or [])
    value = headers.get(b"authorization", b"").decode("latin-1")
    if value:
        return token_id(value.split()[-1])
    for part in headers.get(b"cookie", b"").decode("latin-1").split(";"):
        name, _, cookie = part.strip().partition("=")
        if name == COOKIE:
            return token_id(cookie)
    return "-"


def create_app(settings: Settings | None = None) -> FastAPI:
    """The application; ``settings`` default to the environment's (PIPELINE_*)."""
    from orchestrator.jobs.canvas import Orchestrator

    settings = settings or get_settings()
    orchestrator = Orchestrator(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        removed = uploads.remove_stale(orchestrator.share)
        if removed:
            log.warning("removed %d upload staging folder(s) left by stopped API processes",
                        removed)
        yield

    app = FastAPIOffline(title="Pipeline Orchestrator API", version="1",
                         description=DESCRIPTION, lifespan=lifespan,
                         static_url="/static-docs")
    app.state.settings = settings
    app.state.orchestrator = orchestrator
    app.state.verified = Verified(settings.api_auth_cache_seconds)
    for kind in (errors.ApiError, PipelineError, DatabaseError, BrokerError, ConnectionError):
        app.add_exception_handler(kind, errors.on_error)
    app.add_exception_handler(HTTPException, errors.on_http)
    app.add_exception_handler(RequestValidationError, errors.on_validation)
    app.include_router(routes.router)
    app.include_router(events.router)
    app.include_router(tokens.router)
    page.mount(app)
    app.add_middleware(RequestLog)  # type: ignore[arg-type]
    return app


def factory() -> FastAPI:
    """For ``uvicorn --factory`` (``pipeline api``): settings from the environment."""
    from orchestrator.runtime.logs import configure

    settings = get_settings()
    configure(settings.log_level)
    return create_app(settings)
