"""Heartbeats: "this process was alive at T", one row per name in the status database.

Beat is alive when it publishes: each scheduled task it sends (stuck-job recovery every
PIPELINE_RECOVERY_INTERVAL seconds) records the ``beat`` heartbeat from the beat process itself.
The database is shared by every machine, so ``pipeline health`` can judge beat from anywhere
(the beat schedule file is local to beat's host and written only every few minutes).
"""

from __future__ import annotations

import logging
import time
from datetime import datetime

from celery import signals
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from orchestrator.store.db import transaction
from orchestrator.store.jobs import _utc, now
from orchestrator.store.tables import heartbeats

log = logging.getLogger(__name__)
BEAT = "beat"
#: When a beat started running the schedule (recorded once it holds the schedule lock): its
#: first tick comes one recovery interval later, and `pipeline health` waits that long.
BEAT_START = "beat-start"
#: At most one write per this many seconds per process (beat may send bursts of tasks).
MIN_INTERVAL = 10.0
_state = {"in_beat": False, "last": 0.0}


def record(name: str, detail: str | None = None, url: str | None = None) -> None:
    at = now()
    with transaction(url) as conn:
        changed = conn.execute(update(heartbeats).where(heartbeats.c.name == name)
                               .values(at=at, detail=detail)).rowcount
        if not changed:
            try:
                with conn.begin_nested():
                    conn.execute(insert(heartbeats).values(name=name, at=at, detail=detail))
            except IntegrityError:  # another process inserted it first: that is a beat too
                pass


def last(name: str, url: str | None = None) -> tuple[datetime, str | None] | None:
    with transaction(url) as conn:
        row = conn.execute(select(heartbeats.c.at, heartbeats.c.detail)
                           .where(heartbeats.c.name == name)).first()
    return (_utc(row.at), row.detail) if row else None  # type: ignore[return-value]


def beat_started() -> None:
    """Called by beat once it holds the schedule lock."""
    import os
    import socket

    try:
        record(BEAT_START, f"pid {os.getpid()} on {socket.gethostname()}")
    except Exception as error:  # like a tick: never stop beat for its heartbeat
        log.warning("beat start not recorded: %s", error)


@signals.beat_init.connect
def _in_beat(**_: object) -> None:
    _state["in_beat"] = True


@signals.after_task_publish.connect
def _beat_ticked(sender: str | None = None, **_: object) -> None:
    if not _state["in_beat"] or time.monotonic() - _state["last"] < MIN_INTERVAL:
        return
    _state["last"] = time.monotonic()
    try:
        record(BEAT, f"sent {sender}")
    except Exception as error:  # a heartbeat must never stop beat from publishing
        log.warning("beat heartbeat not recorded: %s", error)
