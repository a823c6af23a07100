"""``GET /v1/jobs/{id}/events``: a job's life as Server-Sent Events, until it ends.

One ``transition`` event per history row (the same rows as ``/history``) and one
``progress`` event per change of step or percentage. Event ids are ``<n>`` for the n-th
history row and ``<n>.<percent>`` for progress after it, so a client that reconnects with
``Last-Event-ID`` gets exactly what it missed. The stream ends after the event that reaches a
final state.

The store is polled (every ``POLL`` seconds): state lives in SQL, written by workers on other
machines, and a read by primary key is cheap; a notification channel would need one per
database kind. No sse library is used: the format is a few lines of text (WHATWG HTML
§9.2), and Starlette's StreamingResponse does the streaming.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from orchestrator.access.auth import Principal, Role
from orchestrator.api import models
from orchestrator.api.errors import ApiError
from orchestrator.api.security import requires
from orchestrator.store import jobs as store
from orchestrator.store.states import FINAL

router = APIRouter(prefix="/v1")
Viewer = Annotated[Principal, Depends(requires(Role.VIEWER))]
POLL = 0.2
KEEPALIVE = 15.0  # seconds: a comment line keeps proxies from closing an idle stream


def frame(kind: str, ident: str, data: dict[str, Any]) -> str:
    return f"id: {ident}\nevent: {kind}\ndata: {json.dumps(data, default=str)}\n\n"


def parse_last(text: str | None) -> tuple[int, float | None]:
    """``Last-Event-ID`` as (history rows seen, last progress sent)."""
    if not text:
        return 0, None
    seen, _, percent = text.partition(".")
    try:
        return int(seen), float(percent) if percent else None
    except ValueError:
        raise ApiError(400, "bad_event_id", f"Last-Event-ID {text[:40]!r} is not one this "
                       "stream sent") from None


def _snapshot(job_id: str, seen: int) -> tuple[store.Job, list[store.JobEvent]]:
    job = store.get_job(job_id)
    return job, store.history(job_id)[seen:]


async def stream(job_id: str, seen: int, sent: float | None, request: Request,
                 ) -> AsyncIterator[str]:
    yield f"retry: {int(POLL * 5000)}\n\n"
    idle = 0.0
    while True:
        job, new = await run_in_threadpool(_snapshot, job_id, seen)
        for event in new:
            seen += 1
            yield frame("transition", str(seen), {**event.to_dict(), "progress": job.progress
                                                  if event is new[-1] else None})
            idle = 0.0
        if job.state in FINAL:
            yield frame("end", str(seen), {"state": job.state.value, "job": job.id})
            return
        point = (job.step, job.progress)
        if sent != job.progress and not new:
            sent = job.progress
            yield frame("progress", f"{seen}.{job.progress:g}",
                        {"state": job.state.value, "step": point[0], "progress": point[1]})
            idle = 0.0
        elif new:
            sent = job.progress
        if await request.is_disconnected():
            return
        await asyncio.sleep(POLL)
        idle += POLL
        if idle >= KEEPALIVE:
            idle = 0.0
            yield ": keep-alive\n\n"


@router.get("/jobs/{job_id}/events", tags=["jobs"],
            summary="Live state and progress as Server-Sent Events; ends at a final state",
            responses={200: {"content": {"text/event-stream": {}}},
                       **models.error_responses(400, 401, 403, 404, 503)})
async def job_events(job_id: str, request: Request, _who: Viewer,
                     last_event_id: Annotated[str | None, Header()] = None,
                     ) -> StreamingResponse:
    seen, sent = parse_last(last_event_id)
    await run_in_threadpool(store.get_job, job_id)  # 404 before the stream starts
    return StreamingResponse(stream(job_id, seen, sent, request),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
