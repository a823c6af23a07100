"""/v1/tokens: an admin lists, creates and revokes tokens over HTTP, as `pipeline token`
does (orchestrator/access/auth.py does the work and writes the audit log). The first token, which
needs no token, is created with the CLI only: over HTTP someone must be an admin already.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from orchestrator.access import auth
from orchestrator.access.auth import Principal, Role
from orchestrator.api import models
from orchestrator.api.security import requires

router = APIRouter(prefix="/v1")
Admin = Annotated[Principal, Depends(requires(Role.ADMIN))]
ERRORS = models.error_responses(401, 403, 404, 422, 503)


class NewToken(BaseModel):
    role: str = Field(pattern="^(viewer|submitter|operator|admin)$")
    name: str | None = Field(None, max_length=100)


@router.get("/tokens", tags=["tokens"], summary="Every token (never its value)",
            responses=ERRORS)
async def list_tokens(_who: Admin) -> list[dict[str, Any]]:
    return [t.to_dict() for t in await run_in_threadpool(auth.list_tokens)]


@router.post("/tokens", status_code=201, tags=["tokens"], responses=ERRORS,
             summary="Create a token; its value is in this answer only")
async def create_token(body: NewToken, who: Admin) -> JSONResponse:
    value, info = await run_in_threadpool(auth.create_token, Role.parse(body.role), body.name,
                                          who.name)
    return JSONResponse({**info.to_dict(), "token": value}, 201,
                        headers={"Cache-Control": "no-store"})


@router.post("/tokens/{token_id}/revoke", tags=["tokens"], responses=ERRORS,
             summary="Revoke a token by its id (the 8 hex digits after pot_)")
async def revoke_token(token_id: str, who: Admin) -> dict[str, Any]:
    return (await run_in_threadpool(auth.revoke, token_id, who.name)).to_dict()
