"""The audit log: refusals, tokens created and revoked, rotations and restores.

Each entry is a row in ``audit_events`` (kept with the job history, read with ``pipeline
audit``) and one structured log line (``audit {...}``) for the process's log. No secret is
ever written: a token appears by its public id and name only.
"""

from __future__ import annotations

import getpass
import json
import logging
import socket
from typing import Any

from sqlalchemy import insert, select

from orchestrator.store.db import transaction
from orchestrator.store.jobs import _utc, now
from orchestrator.store.tables import audit_events

log = logging.getLogger("orchestrator.access.audit")


def origin() -> str:
    """Who ran this process, where: ``user@host``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        user = "?"
    return f"{user}@{socket.gethostname()}"


def record(action: str, outcome: str, *, actor: str | None = None, role: str | None = None,
           detail: str | None = None) -> None:
    entry = {"action": action, "outcome": outcome, "actor": actor, "role": role,
             "detail": detail, "origin": origin()}
    log.info("audit %s", json.dumps(entry, sort_keys=True))
    text = f"{detail} (from {entry['origin']})" if detail else f"from {entry['origin']}"
    with transaction() as conn:
        conn.execute(insert(audit_events).values(at=now(), action=action, outcome=outcome,
                                                 actor=actor, role=role, detail=text))


def recent(limit: int = 50) -> list[dict[str, Any]]:
    query = select(audit_events).order_by(audit_events.c.id.desc()).limit(limit)
    with transaction() as conn:
        rows = conn.execute(query).all()
    return [{**dict(row._mapping), "at": _utc(row.at).isoformat()} for row in rows]  # type: ignore[union-attr]
