"""Tokens and roles: who may change state.

Roles, each allowing what the ones before it allow: ``viewer`` (read) < ``submitter`` (submit
jobs) < ``operator`` (retry, cancel, rotate, restore, run services) < ``admin`` (tokens, schema).

A token is ``pot_<id>_<secret>``: 8 hex digits of public id (shown in lists and logs) and 256
random bits from :mod:`secrets`. Only its sha256 is stored. A slow password hash (bcrypt,
argon2) exists to make guessing low-entropy passwords expensive; a 256-bit random secret
cannot be guessed, so one sha256 is as safe here and keeps every command's check at
microseconds. The lookup is by that hash, so no comparison leaks timing about the secret.

Whether auth is in force. Until a first active token exists, the settings decide
(``PIPELINE_AUTH``: ``auto``, the default, and ``off`` leave everything open, as on a fresh
laptop; ``on`` refuses everything but creating that first token, which must be an admin token:
the bootstrap rule). Once a token exists, the **stored policy** decides (table
``auth_policy``: enforce on/off, whether reading needs a token), changed only by an admin
(``pipeline auth set``, audited) and never by the caller's environment: anything a caller's
environment can set is no control over that caller. Creating the first token stores the
policy: enforced, reading as ``PIPELINE_AUTH_VIEWERS`` says then.

What tokens protect: the commands and the HTTP API, for everyone who does not hold the
database credentials. Whoever holds those (the settings' database URL) can change any row
directly, tokens and policy included: they are full power (docs/security.md).

:func:`caller` answers "who is this caller, and is auth in force" (for the CLI and the HTTP
API); :func:`authorize` adds the role check that every guarded action makes.
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

from orchestrator.access import audit
from orchestrator.errors import ConfigError, Forbidden, JobNotFound, Unauthorized
from orchestrator.settings import Settings, get_settings
from orchestrator.store.db import transaction
from orchestrator.store.jobs import _utc, now
from orchestrator.store.tables import api_tokens, auth_policy

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
    bootstrap: bool = False  # no active token exists: the first (admin) one may be created
    viewers_open: bool = False  # reading needs no token


@dataclass(frozen=True)
class Policy:
    """Whether tokens are checked. ``stored``: from the database (a token exists), not from
    the settings."""

    enforce: bool
    viewers: str  # "open" | "token"
    stored: bool

    def to_dict(self) -> dict[str, object]:
        return {"enforce": self.enforce, "viewers": self.viewers, "stored": self.stored}


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _info(row: object) -> TokenInfo:
    data = dict(row._mapping)  # type: ignore[attr-defined]
    data.pop("token_sha256", None)
    data["created_at"], data["revoked_at"] = _utc(data["created_at"]), _utc(data["revoked_at"])
    return TokenInfo(**data)


def _any_active(conn: Connection) -> bool:
    return bool(conn.execute(select(exists().where(api_tokens.c.revoked_at.is_(None)))).scalar())


#: Tokens made before the policy was stored: checked, reading too, until an admin opens it.
CLOSED = Policy(enforce=True, viewers="token", stored=True)


def policy(settings: Settings, conn: Connection | None = None) -> Policy:
    """The policy in force: the stored one once an active token exists, else the settings'."""
    if conn is None:
        with transaction() as own:
            return policy(settings, own)
    if not _any_active(conn):
        return Policy(settings.auth == "on", settings.auth_viewers, stored=False)
    row = conn.execute(select(auth_policy).where(auth_policy.c.id == 1)).first()
    return CLOSED if row is None else Policy(bool(row.enforce), row.viewers, stored=True)


def in_force(settings: Settings) -> bool:
    return policy(settings).enforce


def caller(token: str | None, action: str, settings: Settings, *, checked: bool = False,
           ) -> Principal:
    """Who is this caller, and is auth in force: the one question for the CLI and the HTTP API.

    No token: ``anonymous`` (``role`` None). A token given while auth is in force must be an
    active one, else :class:`Unauthorized` is raised (and the refusal audited); while auth is
    not in force a token is not looked at. ``enforced`` and ``viewers_open`` come from
    :func:`policy`, never from the caller's environment once a token exists. ``checked``:
    in force whenever a token exists, even if the policy says not (changing the policy).
    """
    with transaction() as conn:
        current = policy(settings, conn)
        bootstrap = not current.stored
    open_reads = current.viewers == "open"
    enforced = current.enforce or (checked and current.stored)
    if not enforced or not token:
        return Principal("anonymous", None, enforced, bootstrap, open_reads)
    found = identify(token)
    if found is None:
        shape = TOKEN_SHAPE.match(token)
        presented = f"presented token id {shape[1]}" if shape else "a malformed token"
        refuse(Unauthorized, action, "unknown",
               f"`{action}`: the token is unknown or revoked ({presented})")
    return Principal(found.name, Role.parse(found.role), True, bootstrap, open_reads)


#: How a caller without a token is told to present one: the CLI's way, or the API's.
CLI_HOW = "set PIPELINE_TOKEN or pass --token-file"
HTTP_HOW = "send the header `Authorization: Bearer <token>`"


def authorize(required: Role, token: str | None, action: str, settings: Settings, *,
              bootstrap: bool = False, strict: bool = False, how: str = CLI_HOW) -> Principal:
    """The one check every guarded command makes. Raises Unauthorized or Forbidden, after
    recording the refusal in the audit log. ``bootstrap``: allowed while no token exists.
    ``strict``: checked even while an admin has turned enforcement off (changing the policy
    itself), whenever a token exists."""
    who = caller(token, action, settings, checked=strict)
    if not who.enforced or (who.bootstrap and bootstrap) or (
            required is Role.VIEWER and who.viewers_open):
        return who
    if who.role is None:
        hint = (" (PIPELINE_AUTH=off is ignored once tokens exist: an admin decides, with "
                "`pipeline auth set`)" if settings.auth == "off" and not who.bootstrap else "")
        refuse(Unauthorized, action, None, f"`{action}` needs a token with role "
               f"{required.label} or higher: {how}{hint}")
    if who.role < required:
        refuse(Forbidden, action, who.name, f"`{action}` needs role {required.label} or "
               f"higher; token {who.name!r} has role {who.role.label}", who.role.label)
    return who


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


def set_policy(settings: Settings, by: str, *, enforce: bool | None = None,
               viewers: str | None = None) -> Policy:
    """Change the stored policy (the caller has been authorized as an admin); audited."""
    with transaction() as conn:
        current = policy(settings, conn)
        if not current.stored:
            raise ConfigError("no token exists yet, so the settings decide (PIPELINE_AUTH, "
                              "PIPELINE_AUTH_VIEWERS): create the first admin token first")
        new = Policy(current.enforce if enforce is None else enforce,
                     viewers or current.viewers, stored=True)
        _store_policy(conn, new, by)
    audit.record("auth set", "ok", actor=by, role=Role.ADMIN.label,
                 detail=f"enforce {'on' if new.enforce else 'off'}, viewers {new.viewers} "
                        f"(was enforce {'on' if current.enforce else 'off'}, "
                        f"viewers {current.viewers})")
    return new


def _store_policy(conn: Connection, new: Policy, by: str | None) -> None:
    values = {"enforce": new.enforce, "viewers": new.viewers, "updated_at": now(),
              "updated_by": by}
    if conn.execute(update(auth_policy).where(auth_policy.c.id == 1).values(**values)).rowcount:
        return
    conn.execute(insert(auth_policy).values(id=1, **values))


def create_token(role: Role, name: str | None, created_by: str | None,
                 settings: Settings | None = None) -> tuple[str, TokenInfo]:
    """A new token; its value is returned once and never stored. The first active token
    also stores the policy: enforced, reading open or not as ``PIPELINE_AUTH_VIEWERS`` says."""
    ident = secrets.token_hex(4)
    token = f"pot_{ident}_{secrets.token_urlsafe(32)}"
    at = now()
    with transaction() as conn:
        if not _any_active(conn):  # the first token: from now on the stored policy decides
            viewers = (settings or get_settings()).auth_viewers
            _store_policy(conn, Policy(True, viewers, stored=True), created_by)
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
