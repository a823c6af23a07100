"""``pipeline health``: is every part the pipeline needs there? One line per part.

broker (connect), result backend (a round trip), database (SELECT 1), share (writable, free
space >= PIPELINE_HEALTH_MIN_FREE_MB), workers (at least PIPELINE_HEALTH_MIN_WORKERS answer a
ping), beat (its last tick, recorded in the database by the beat process each time it sends
a scheduled task, is younger than twice the stuck-job recovery interval plus 30 s; a beat that
started within that time and has not ticked yet is ok: its first send is one interval away),
disk waits (no job is waiting to retry because the share was full or failing: those wait up to
PIPELINE_DISK_WAIT_SECONDS, and the reason is only seen here and in their history).
Each check has its own short time limit, so a dead server makes the check fail, not hang.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celery import Celery
from sqlalchemy import text

from orchestrator.settings import Settings

PARTS = ("broker", "results", "database", "share", "workers", "beat", "disk_waits")
TIMEOUT = 3.0


@dataclass(frozen=True)
class Check:
    part: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{self.part}: {'ok' if self.ok else 'FAIL'}: {self.detail}"


class Unhealthy(Exception):
    """A part failed its check; the message is the reason people read."""


def check_broker(app: Celery, settings: Settings) -> str:
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0.2, timeout=TIMEOUT)
        where = "the embedded broker" if settings.embedded_broker else conn.as_uri()
        return f"connected to {where}"


def check_results(app: Celery, settings: Settings) -> str:
    url = settings.results
    if url.startswith(("redis://", "rediss://")):
        import redis

        client = redis.Redis.from_url(url, socket_timeout=TIMEOUT,
                                      socket_connect_timeout=TIMEOUT)
        try:
            client.ping()
        finally:
            client.close()
        return "Redis answered a ping"
    folder = getattr(app.backend, "path", None)
    if folder is not None:  # the embedded file backend
        _write_probe(os.fsdecode(folder))
        return f"{os.fsdecode(folder)} is writable"
    app.backend.get_task_meta(f"health-{uuid.uuid4().hex}")
    return f"{type(app.backend).__name__} answered"


def check_database(_app: Celery, settings: Settings) -> str:
    from orchestrator.store.db import transaction

    with transaction() as conn:
        conn.execute(text("SELECT 1"))
    return f"{conn.engine.url.get_backend_name()} answered"


def check_share(_app: Celery, settings: Settings) -> str:
    root = settings.share_dir
    if not root.is_dir():
        raise Unhealthy(f"{root} is not a folder (not mounted?)")
    _write_probe(str(root))
    free_mb = shutil.disk_usage(root).free // 2**20
    if free_mb < settings.health_min_free_mb:
        raise Unhealthy(f"{root}: {free_mb} MB free, below PIPELINE_HEALTH_MIN_FREE_MB="
                        f"{settings.health_min_free_mb}")
    return f"{root} writable, {free_mb} MB free"


def check_workers(app: Celery, settings: Settings) -> str:
    from orchestrator.monitoring.queues import workers_online

    names = workers_online(app, timeout=1.0)
    if len(names) < settings.health_min_workers:
        raise Unhealthy(f"{len(names)} worker(s) answered a ping, "
                        f"{settings.health_min_workers} wanted")
    return f"{len(names)} online: {', '.join(names)}" if names else "none wanted"


def check_beat(_app: Celery, settings: Settings) -> str:
    """Beat's last tick, or its start while its first tick is not due yet (a grace period:
    the first scheduled send comes one recovery interval after start)."""
    from orchestrator.monitoring.heartbeat import BEAT, BEAT_START, last
    from orchestrator.store.jobs import now

    limit = 2 * settings.recovery_interval + 30
    tick, start = last(BEAT), last(BEAT_START)
    if start is not None and (tick is None or tick[0] < start[0]):
        age = (now() - start[0]).total_seconds()
        if age <= limit:
            return (f"started {age:.0f} s ago ({start[1]}), first tick due within "
                    f"{settings.recovery_interval} s of its start")
        raise Unhealthy(f"started {age:.0f} s ago and no tick since (limit {limit} s): beat "
                        "is down or stands by without the schedule lock")
    if tick is None:
        raise Unhealthy("beat has never ticked (is `celery -A orchestrator beat` running?)")
    age = (now() - tick[0]).total_seconds()
    if age > limit:
        raise Unhealthy(f"last tick {age:.0f} s ago (limit {limit} s): beat is down or "
                        "stands by without the schedule lock")
    return f"last tick {age:.0f} s ago ({tick[1]})"


#: What a step's retry event says (tasks/base.py) when the share's disk failed it.
DISK_ERRORS = ("No space left on device", "Disk quota exceeded", "Input/output error",
               "Stale file handle")


def check_disk_waits(_app: Celery, settings: Settings) -> str:
    from sqlalchemy import select

    from orchestrator.store.db import transaction
    from orchestrator.store.tables import job_events, jobs

    # A queued job's last event is the retry that queued it (same time as the row's update).
    query = (select(job_events.c.detail).join(jobs, jobs.c.id == job_events.c.job_id)
             .where((jobs.c.state == "queued") & (job_events.c.at == jobs.c.updated_at)
                    & job_events.c.detail.like("retry %")))
    with transaction() as conn:
        waiting = [d for (d,) in conn.execute(query)
                   if any(reason in d for reason in DISK_ERRORS)]
    if waiting:
        raise Unhealthy(f"{len(waiting)} job(s) waiting for the share's disk (retried for up "
                        f"to PIPELINE_DISK_WAIT_SECONDS={settings.disk_wait_seconds}); "
                        f"e.g. {waiting[-1]}")
    return "no job waiting for the share's disk"


CHECKS: dict[str, Callable[[Celery, Settings], str]] = {
    "broker": check_broker, "results": check_results, "database": check_database,
    "share": check_share, "workers": check_workers, "beat": check_beat,
    "disk_waits": check_disk_waits,
}


def run(app: Celery, settings: Settings, parts: tuple[str, ...] = PARTS) -> list[Check]:
    out: list[Check] = []
    for part in parts:
        if part == "workers" and any(c.part == "broker" and not c.ok for c in out):
            out.append(Check(part, False, "not asked: the broker is unreachable"))
            continue
        try:
            out.append(Check(part, True, CHECKS[part](app, settings)))
        except Exception as error:
            out.append(Check(part, False, _reason(error)))
    return out


def _reason(error: BaseException) -> str:
    if isinstance(error, Unhealthy):
        return str(error)
    first = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def _write_probe(folder: str) -> None:
    probe = os.path.join(folder, f".health-{uuid.uuid4().hex}.tmp")
    with open(probe, "w") as handle:
        handle.write("ok")
    os.remove(probe)


def as_dict(checks: list[Check]) -> dict[str, Any]:
    return {"healthy": all(c.ok for c in checks),
            "parts": {c.part: {"ok": c.ok, "detail": c.detail} for c in checks}}
