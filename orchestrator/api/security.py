"""Who is calling: the CLI's tokens and roles, sent as ``Authorization: Bearer <token>``.

Every check goes through :func:`orchestrator.access.auth.authorize`, the one the CLI's
``@requires`` makes, so the roles, the refusals written to the audit log and whether auth is
in force at all are decided in one place (this module does not know how "off" is decided).
The page sends the same token from an HttpOnly, SameSite=Strict cookie; a cookie is taken
only for reads and for the page's own forms with their CSRF field (orchestrator/api/page.py),
never for the API's POSTs, so another site cannot make a browser act with it.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from orchestrator.access.auth import HTTP_HOW, TOKEN_SHAPE, Principal, Role, authorize, digest
from orchestrator.settings import Settings

COOKIE = "pipeline_token"
#: Shown in the OpenAPI document: every /v1 endpoint takes a Bearer token.
bearer_scheme = HTTPBearer(auto_error=False, description="a token from `pipeline token create`")
_BEARER = re.compile(r"^\s*Bearer\s+(\S+)\s*$", re.IGNORECASE)


def token_of(request: Request, *, cookie_ok: bool) -> str | None:
    header = request.headers.get("authorization")
    if header:
        found = _BEARER.match(header)
        return found[1] if found else header  # malformed: refused as such by authorize
    return request.cookies.get(COOKIE) if cookie_ok else None


def token_id(token: str | None) -> str:
    """What logs show for a token: its public id, never the token."""
    if not token:
        return "-"
    shape = TOKEN_SHAPE.match(token)
    return shape[1] if shape else "malformed"


def action_of(request: Request) -> str:
    route = request.scope.get("route")
    path = getattr(route, "path", request.url.path)
    return f"api {request.method} {path}"


class Verified:
    """Tokens that passed :func:`authorize` for a role, remembered for ``ttl`` seconds.

    A status read costs two token queries (is auth in force, which token is this) before the
    job's own query: most of the request. Only successes are kept (every refusal is checked
    and audited anew), by the token's sha256, and a revoked token stops working within
    ``ttl`` (PIPELINE_API_AUTH_CACHE_SECONDS; 0 turns this off).
    """

    def __init__(self, ttl: float, size: int = 10_000) -> None:
        self.ttl, self.size = ttl, size
        self._seen: dict[tuple[str, Role], tuple[float, Principal]] = {}

    def get(self, token: str | None, role: Role) -> Principal | None:
        if self.ttl <= 0:
            return None
        found = self._seen.get((digest(token or ""), role))
        if found is None or found[0] < time.monotonic():
            return None
        return found[1]

    def put(self, token: str | None, role: Role, principal: Principal) -> None:
        if self.ttl <= 0:
            return
        if len(self._seen) >= self.size:
            self._seen.clear()
        self._seen[(digest(token or ""), role)] = (time.monotonic() + self.ttl, principal)


def requires(role: Role) -> Callable[[Request], Awaitable[Principal]]:
    """A FastAPI dependency: the caller's principal, or 401/403 (recorded in the audit log)."""

    async def check(request: Request, _documented: Annotated[
            HTTPAuthorizationCredentials | None, Security(bearer_scheme)] = None) -> Principal:
        settings: Settings = request.app.state.settings
        safe = request.method in ("GET", "HEAD")
        token = token_of(request, cookie_ok=safe)
        cache: Verified = request.app.state.verified
        principal = cache.get(token, role)
        if principal is None:
            principal = await run_in_threadpool(authorize, role, token, action_of(request),
                                                settings, how=HTTP_HOW)
            cache.put(token, role, principal)
        request.state.principal = principal
        return principal

    return check


CSRF_COOKIE = "pipeline_csrf"


def new_csrf() -> str:
    return secrets.token_urlsafe(24)


def csrf_ok(cookie: str | None, sent: str | None) -> bool:
    """Double submit: the form's hidden field equals the SameSite=Strict cookie, which
    another site can neither read nor make the browser send."""
    return bool(cookie) and bool(sent) and hmac.compare_digest(cookie or "", sent or "")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
