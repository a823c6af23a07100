"""The jobs page: server-rendered (Jinja2), with a little plain JavaScript that follows live
progress over the API's own SSE endpoint. No build step, no CDN.

Login keeps the token in a cookie marked HttpOnly (scripts cannot read it) and
SameSite=Strict (other sites' pages cannot make the browser send it). Forms are CSRF-safe by
double submit: a random value in a SameSite=Strict cookie that the form repeats. The checks are
the API's: :func:`orchestrator.access.auth.authorize` with the cookie's token.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from orchestrator.access.auth import (
    TOKEN_SHAPE,
    Principal,
    Role,
    TokenInfo,
    authorize,
    identify,
    refuse,
)
from orchestrator.api import models, routes
from orchestrator.api.errors import ApiError, translate
from orchestrator.api.security import COOKIE, CSRF_COOKIE, csrf_ok, new_csrf
from orchestrator.errors import Forbidden, PipelineError, Unauthorized
from orchestrator.jobs.jobspec import OBJECTIVES, defaults
from orchestrator.jobs.params import NAMES, bounds
from orchestrator.settings import Settings
from orchestrator.store import jobs as store
from orchestrator.store.states import FINAL, JobState

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
#: Jobs whose progress the list page follows live (a browser opens at most 6 connections
#: to one server over HTTP/1.1: the rest of the page must still load).
LIVE_ROWS = 4


def _age(at: datetime) -> str:
    seconds = max((store.now() - at).total_seconds(), 0)
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


templates.env.filters["age"] = _age


async def who(request: Request, role: Role) -> Principal:
    token = request.cookies.get(COOKIE)
    return await run_in_threadpool(authorize, role, token, f"page {request.method} "
                                   f"{request.url.path}", request.app.state.settings)


async def signed_in(request: Request) -> TokenInfo | None:
    """The cookie's token, to show who is signed in (reads may be open to everyone)."""
    token = request.cookies.get(COOKIE)
    return await run_in_threadpool(identify, token) if token else None


async def render(request: Request, name: str, status: int = 200, **context: Any,
                 ) -> HTMLResponse:
    csrf = request.cookies.get(CSRF_COOKIE) or new_csrf()
    response = templates.TemplateResponse(request, name, {
        "csrf": csrf, "user": await signed_in(request), "objectives": OBJECTIVES,
        # declared once: orchestrator/jobs/params.py
        "bounds": {name: bounds(name) for name in NAMES},
        "defaults": defaults(request.app.state.settings),
        "states": [s.value for s in JobState], **context}, status_code=status)
    response.set_cookie(CSRF_COOKIE, csrf, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; frame-src 'self'; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'")
    return response


async def to_login(request: Request, reason: str) -> Response:
    return await render(request, "login.html", 401, reason=reason)


async def jobs_page(request: Request) -> Response:
    try:
        principal = await who(request, Role.VIEWER)
    except (Unauthorized, Forbidden) as refused:
        return await to_login(request, str(refused))
    state = request.query_params.get("state") or None
    if state not in (None, *[s.value for s in JobState]):
        state = None

    def read() -> list[store.Job]:
        return store.list_jobs(JobState(state) if state else None, limit=100)

    found = await run_in_threadpool(read)
    live = [j.id for j in found if j.state not in FINAL][:LIVE_ROWS]
    return await render(request, "jobs.html", jobs=found, live=live, state=state,
                  principal=principal, error=request.query_params.get("error"))


async def job_page(request: Request) -> Response:
    try:
        principal = await who(request, Role.VIEWER)
    except (Unauthorized, Forbidden) as refused:
        return await to_login(request, str(refused))
    job_id = request.path_params["job_id"]
    try:
        job = await run_in_threadpool(store.get_job, job_id)
    except PipelineError as error:
        return await render(request, "message.html", translate(error).status, message=str(error))
    history = await run_in_threadpool(store.history, job_id)
    return await render(request, "job.html", job=job, history=history, principal=principal,
                  final=job.state in FINAL, files=models.RESULT_FILES)


async def upload(request: Request) -> Response:
    """The page's upload form: the API's upload, then the job's page (or the list, with why)."""
    if not csrf_ok(request.cookies.get(CSRF_COOKIE), request.query_params.get("csrf")):
        return await render(request, "message.html", 403, message="the form has expired or came "
                      "from another site: reload the page and send it again")
    try:
        await who(request, Role.SUBMITTER)
        job = await routes.upload_one(request, request.app.state.orchestrator)
    except (ApiError, PipelineError, OSError) as error:
        refused = translate(error) if not isinstance(error, OSError) else ApiError(
            503, "unavailable", str(error))
        extra = refused.extra.get("original_job")
        message = refused.message + (f" (job {extra})" if extra else "")
        return await render(request, "message.html", refused.status, message=message,
                      back="/")
    return RedirectResponse(f"/jobs/{job.id}", 303)


async def login(request: Request) -> Response:
    form = await request.form()
    if not csrf_ok(request.cookies.get(CSRF_COOKIE), str(form.get("csrf") or "")):
        return await to_login(request, "the form has expired: send it again")
    token = str(form.get("token") or "").strip()
    try:
        await run_in_threadpool(check_login, token, request.app.state.settings)
    except (Unauthorized, Forbidden) as refused:
        return await to_login(request, str(refused))
    response = RedirectResponse("/", 303)
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", max_age=12 * 3600)
    return response


def check_login(token: str, settings: Settings) -> None:
    """A login needs a real token even where reads are open to everyone (authorize would
    let any value through then): unknown ones are refused, and audited, here."""
    if identify(token) is None:
        shape = TOKEN_SHAPE.match(token)
        refuse(Unauthorized, "page login", f"token id {shape[1]}" if shape else
               "a malformed token", "log in: the token is unknown or revoked")
    authorize(Role.VIEWER, token, "page login", settings)


async def login_form(request: Request) -> Response:
    return await render(request, "login.html", reason=None)


async def logout(request: Request) -> Response:
    form = await request.form()
    if not csrf_ok(request.cookies.get(CSRF_COOKIE), str(form.get("csrf") or "")):
        return await render(request, "message.html", 403, message="the form has expired")
    response = RedirectResponse("/login", 303)
    response.delete_cookie(COOKIE, httponly=True, samesite="strict")
    return response


def mount(app: FastAPI) -> None:
    """The page's routes (left out of the OpenAPI document: they are for browsers)."""
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="page-static")
    for path, endpoint, methods in (
            ("/", jobs_page, ["GET"]), ("/jobs/{job_id}", job_page, ["GET"]),
            ("/upload", upload, ["POST"]), ("/login", login_form, ["GET"]),
            ("/login", login, ["POST"]), ("/logout", logout, ["POST"])):
        app.add_api_route(path, endpoint, methods=methods, include_in_schema=False)
