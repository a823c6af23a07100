"""Tokens and roles: who may change state.

Roles, each allowing what the ones before it allow: ``viewer`` (read) < ``submitter`` (submit
jobs) < ``operator`` (retry, cancel, rotate, restore, run services) < ``admin`` (tokens, schema).

A token is ``pot_<id>_<secret>``: 8 hex digits of public id (shown in lists and logs) and 256
random bits from :mod:`secrets`. Only its sha256 is stored. A slow password hash (bcrypt,
argon2) exists to make guessing low-entropy passwords expensive; a 256-bit random secret
cannot be guessed, so one sha256 is as safe here and keeps every command's check at
microseconds. The lookup is by that hash, so no comparison leaks timing about the secret.

When auth is in force (``PIPELINE_AUTH``): ``on`` always; ``off`` never; ``auto`` (default)
once a first token exists. Until then everything is open, as on a fresh laptop, and the first
token, which must be an admin token, can be created without one (the bootstrap rule).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum
from typing import NoReturn

from sqlalchemy import Connection, exists, insert, select, update

from orchestrator import audit
from orchestrator.errors import Forbidden, JobNotFound, Unauthorized
from orchestrator.settings import Settings
from orchestrator.store.db import transaction
from orchestrator.store.jobs import _utc, now
from orchestrator.store.tables import api_tokens

TOKEN_SHAPE = re.compile(r"^pot_([0-9a-f]{8})_[A-Za-z0-9_-]{20,}$")


class Role(IntEnum):
    VIEWER = 1
    SUBMITTER = 2
    OPERATOR = 3
    ADMIN = 4

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Role:
        return cls[text.upper()]


@dataclass(frozen=True)
class TokenInfo:
    id: str
    name: str
    role: str
    created_at: datetime
    created_by: str | None
    revoked_at: datetime | None

    def to_dict(self) -> dict[str, str | None]:
        return {"id": self.id, "name": self.name, "role": self.role,
                "created_at": self.created_at.isoformat(), "created_by": self.created_by,
                "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None}


@dataclass(frozen=True)
class Principal:
    """Who a command runs as. ``enforced`` False: auth was not in force (open)."""

    name: str
    role: Role | None
    enforced: bool
    bootstrap: bool = False


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _info(row: object) -> TokenInfo:
    data = dict(row._mapping)  # type: ignore[attr-defined]
    data.pop("token_sha256", None)
    data["created_at"], data["revoked_at"] = _utc(data["created_at"]), _utc(data["revoked_at"])
    return TokenInfo(**data)


def _any_active(conn: Connection) -> bool:
    return bool(conn.execute(select(exists().where(api_tokens.c.revoked_at.is_(None)))).scalar())


def in_force(settings: Settings) -> bool:
    if settings.auth != "auto":
        return settings.auth == "on"
    with transaction() as conn:
        return _any_active(conn)


def open_without_lookup(required: Role, settings: Settings) -> bool:
    """Settings alone leave this open (no database needed to decide)."""
    return settings.auth == "off" or (required is Role.VIEWER and settings.auth_viewers == "open")


def authorize(required: Role, token: str | None, action: str, settings: Settings, *,
              bootstrap: bool = False) -> Principal:
    """The one check every guarded command makes. Raises Unauthorized or Forbidden, after
    recording the refusal in the audit log. ``bootstrap``: allowed while no token exists."""
    if open_without_lookup(required, settings):
        return Principal("anonymous", None, enforced=False)
    with transaction() as conn:
        any_token = _any_active(conn)
    if not any_token and (bootstrap or settings.auth == "auto"):
        return Principal("anonymous", None, enforced=False, bootstrap=not any_token)
    if not token:
        refuse(Unauthorized, action, None, f"`{action}` needs a token with role "
                f"{required.label} or higher: pass --token or set PIPELINE_TOKEN")
    found = identify(token)
    if found is None:
        shape = TOKEN_SHAPE.match(token)
        who = f"token id {shape[1]}" if shape else "a malformed token"
        refuse(Unauthorized, action, who, f"`{action}`: the token is unknown or revoked")
    role = Role.parse(found.role)
    if role < required:
        refuse(Forbidden, action, found.name, f"`{action}` needs role {required.label} or "
                f"higher; token {found.name!r} has role {role.label}", role.label)
    return Principal(found.name, role, enforced=True)


def refuse(error: type[Unauthorized | Forbidden], action: str, actor: str | None,
           message: str, role: str | None = None) -> NoReturn:
    audit.record(action, "refused", actor=actor, role=role, detail=message)
    raise error(message)


def identify(token: str) -> TokenInfo | None:
    """The active token with this value, if any."""
    with transaction() as conn:
        row = conn.execute(select(api_tokens).where(
            (api_tokens.c.token_sha256 == digest(token)) & api_tokens.c.revoked_at.is_(None))
        ).first()
    return _info(row) if row is not None else None


def create_token(role: Role, name: str | None, created_by: str | None) -> tuple[str, TokenInfo]:
    """A new token; its value is returned once and never stored."""
    ident = secrets.token_hex(4)
    token = f"pot_{ident}_{secrets.token_urlsafe(32)}"
    at = now()
    with transaction() as conn:
        conn.execute(insert(api_tokens).values(
            id=ident, name=name or f"{role.label}-{ident}", role=role.label,
            token_sha256=digest(token), created_at=at, created_by=created_by))
        row = conn.execute(select(api_tokens).where(api_tokens.c.id == ident)).one()
    info = _info(row)
    audit.record("token create", "ok", actor=created_by, role=role.label,
                 detail=f"token {info.id} {info.name!r} with role {info.role}")
    return token, info


def list_tokens() -> list[TokenInfo]:
    with transaction() as conn:
        rows = conn.execute(select(api_tokens).order_by(api_tokens.c.created_at)).all()
    return [_info(row) for row in rows]


def revoke(ident: str, revoked_by: str | None) -> TokenInfo:
    """Revoke a token by its id (or a unique prefix); revoking twice is harmless."""
    with transaction() as conn:
        rows = conn.execute(select(api_tokens).where(
            api_tokens.c.id.startswith(ident, autoescape=True)).limit(2)).all()
        if len(rows) != 1:
            raise JobNotFound(f"no token {ident}" if not rows else
                              f"{ident} matches several tokens; give more of the id")
        conn.execute(update(api_tokens).where((api_tokens.c.id == rows[0].id)
                                              & api_tokens.c.revoked_at.is_(None))
                     .values(revoked_at=now()))
        row = conn.execute(select(api_tokens).where(api_tokens.c.id == rows[0].id)).one()
    info = _info(row)
    audit.record("token revoke", "ok", actor=revoked_by, role=info.role,
                 detail=f"token {info.id} {info.name!r}")
    return info
