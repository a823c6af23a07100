"""Pipeline statistics from the status database and the broker (no Flower needed).

Over a window (``--since``, default one hour) of jobs that *finished* in it:

- throughput: finished jobs (completed, failed, cancelled) per minute of the window;
- failure rate: failed / (completed + failed); cancelled jobs are left out (an operator's or
  the duplicate check's decision, not a failure);
- durations, p50 and p95: per step from the history (a step runs from the event that starts it
  to the job's next event; every attempt counts), the wait in the queue (queued -> the next
  start), and end to end (created -> finished) for completed jobs.

And now: jobs by state (all of them), the age of the oldest job waiting in ``queued``, queue
depth per queue from the broker and the workers answering a ping. A part that cannot be read
(the broker is down) is reported in ``errors`` and the rest still shows.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any

from sqlalchemy import func, select

from orchestrator.settings import get_settings
from orchestrator.store.db import transaction
from orchestrator.store.jobs import _utc, count_by_state, now
from orchestrator.store.states import JobState
from orchestrator.store.tables import job_events, jobs

S = JobState
ENDED = (S.COMPLETED, S.FAILED, S.CANCELLED)
CHUNK = 500


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100), linear between closest ranks; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values: Sequence[float]) -> dict[str, Any]:
    p50, p95 = percentile(values, 50), percentile(values, 95)
    return {"count": len(values), "p50": _round(p50), "p95": _round(p95)}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def finished_jobs(since: datetime) -> list[Any]:
    query = (select(jobs.c.id, jobs.c.state, jobs.c.created_at, jobs.c.finished_at)
             .where(jobs.c.state.in_([s.value for s in ENDED]) & (jobs.c.finished_at >= since)))
    with transaction() as conn:
        return list(conn.execute(query))


def events_of(job_ids: Sequence[str]) -> dict[str, list[Any]]:
    """Each job's history in order (the index on job_id serves it, chunk by chunk)."""
    out: dict[str, list[Any]] = defaultdict(list)
    with transaction() as conn:
        for start in range(0, len(job_ids), CHUNK):
            chunk = list(job_ids[start:start + CHUNK])
            query = (select(job_events.c.job_id, job_events.c.at, job_events.c.from_state,
                            job_events.c.to_state, job_events.c.step)
                     .where(job_events.c.job_id.in_(chunk)).order_by(job_events.c.id))
            for row in conn.execute(query):
                out[row.job_id].append(row)
    return out


def step_durations(histories: Iterable[list[Any]]) -> dict[str, list[float]]:
    """Seconds per step (and ``queued``: waiting for a worker), from consecutive events."""
    out: dict[str, list[float]] = defaultdict(list)
    for events in histories:
        changes = [e for e in events if e.from_state != e.to_state or e.step]  # no remarks
        for event, following in pairwise(changes):
            seconds = (_utc(following.at) - _utc(event.at)).total_seconds()  # type: ignore[operator]
            if event.to_state == S.PROCESSING and event.step:
                out[event.step].append(seconds)
            elif event.to_state == S.QUEUED and following.to_state == S.PROCESSING:
                out["queued"].append(seconds)
    return out


def oldest_queued_age() -> float | None:
    """Seconds the longest-waiting queued job has been waiting (None: nothing queued)."""
    query = select(func.min(jobs.c.updated_at)).where(jobs.c.state == S.QUEUED.value)
    with transaction() as conn:
        oldest = _utc(conn.execute(query).scalar())
    return None if oldest is None else round(max(0.0, (now() - oldest).total_seconds()), 3)


def database_stats(window: timedelta) -> dict[str, Any]:
    since = now() - window
    ended = finished_jobs(since)
    by_state = {s.value: 0 for s in ENDED}
    for row in ended:
        by_state[row.state] += 1
    judged = by_state[S.COMPLETED] + by_state[S.FAILED]
    durations = step_durations(events_of([row.id for row in ended]).values())
    end_to_end = [(_utc(r.finished_at) - _utc(r.created_at)).total_seconds()  # type: ignore[operator]
                  for r in ended if r.state == S.COMPLETED]
    return {
        "window_seconds": window.total_seconds(),
        "jobs_by_state": {s.value: 0 for s in S} | count_by_state(),
        "finished": {**by_state, "total": len(ended)},
        "throughput_per_minute": round(len(ended) / (window.total_seconds() / 60), 4),
        "failure_rate": round(by_state[S.FAILED] / judged, 4) if judged else None,
        "durations": {name: summary(durations.get(name, []))
                      for name in ("queued", *get_settings().steps.names)}
                     | {"end_to_end": summary(end_to_end)},
        "oldest_queued_seconds": oldest_queued_age(),
    }


def collect(window: timedelta, app: Any | None = None, ping_timeout: float = 1.0,
            ) -> dict[str, Any]:
    """Everything ``pipeline stats`` shows; broker parts may be missing (see ``errors``)."""
    from orchestrator.monitoring import queues

    if app is None:
        from orchestrator.celery import app
    out: dict[str, Any] = {"at": now().isoformat(), **database_stats(window),
                           "queues": None, "workers": None, "errors": {}}
    try:
        out["queues"] = queues.depths(app)
    except Exception as error:
        out["errors"]["broker"] = _reason(error)
    try:
        out["workers"] = queues.workers_online(app, ping_timeout)
    except Exception as error:
        out["errors"]["workers"] = _reason(error)
    return out


def _reason(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
