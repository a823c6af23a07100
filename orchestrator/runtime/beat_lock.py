"""One beat at a time: the schedule lock a beat process holds for its whole life.

Two beat processes would send every schedule twice (celery issue 2856). Whichever beat takes
the lock first runs the schedule; another one stands by until the holder dies, which releases
the lock by itself: a PostgreSQL session advisory lock ends with its connection, a file lock
(the embedded default, one machine) with its process.
"""

from __future__ import annotations

import fcntl
import logging
import time
from typing import IO, Any

from sqlalchemy import text

from orchestrator.settings import Settings
from orchestrator.store.db import get_engine

log = logging.getLogger(__name__)
LOCK_KEY = 744210002
_held: list[Any] = []  # what keeps the lock alive: an open connection or file


def hold_schedule_lock(settings: Settings, poll: float = 5.0) -> None:
    """Block until this process holds the schedule lock; keep it until the process exits."""
    engine = get_engine(settings.database)
    take = _advisory if engine.dialect.name == "postgresql" else _file_lock
    announced = False
    while True:
        holder = take(settings)
        if holder is not None:
            _held.append(holder)
            log.info("beat: holding the schedule lock")
            return
        if not announced:
            log.warning("beat: another beat holds the schedule lock; standing by")
            announced = True
        time.sleep(poll)


def _advisory(settings: Settings) -> Any | None:
    conn = get_engine(settings.database).connect()
    if conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": LOCK_KEY}).scalar():
        conn.commit()
        return conn
    conn.close()
    return None


def _file_lock(settings: Settings) -> IO[bytes] | None:
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    handle = open(settings.var_dir / "beat.lock", "ab")  # noqa: SIM115 - held for life
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle
