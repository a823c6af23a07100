"""The CLI's guard, ``@requires(Role.X)``: one decorator on every command that needs a role.

It adds ``--token`` (or ``PIPELINE_TOKEN``) and ``--token-file`` (or
``PIPELINE_TOKEN_FILE``; preferred: a value on the command line shows in ps) to the command
and, before the command runs, asks
:func:`orchestrator.access.auth.authorize`, which refuses (exit 9 without a valid token, 10 with a
weaker one) and records the refusal in the audit log. Also here: ``pipeline token`` and
``pipeline audit`` and ``pipeline auth`` (the stored policy: whether tokens are checked).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from cli import render
from cli.exit_codes import epilog
from orchestrator.access.auth import Principal, Role

F = TypeVar("F", bound=Callable[..., Any])


TOKEN_HELP = ("A token with role {role} or higher. Prefer PIPELINE_TOKEN or --token-file: "
              "a value given with --token is visible to every user of this machine in ps and "
              "/proc/<pid>/cmdline.")


def requires(role: Role, *, bootstrap: bool = False, strict: bool = False) -> Callable[[F], F]:
    """Guard a command: it runs only for a token of ``role`` or higher (when auth is in force).

    ``bootstrap``: also allowed while no token exists at all (creating the first token).
    ``strict``: checked even while an admin has turned enforcement off (the policy itself).
    The principal is left in ``click.get_current_context().meta["principal"]``.
    """

    def decorate(command: F) -> F:
        @functools.wraps(command)
        def guarded(*args: Any, token: str | None = None, token_file: Path | None = None,
                    **kwargs: Any) -> Any:
            ctx = click.get_current_context()
            given = token or (read_token_file(token_file) if token_file else None)
            ctx.meta["principal"] = check(role, given, _action(ctx), bootstrap=bootstrap,
                                          strict=strict)
            return command(*args, **kwargs)

        with_file = click.option(
            "--token-file", envvar="PIPELINE_TOKEN_FILE", metavar="PATH",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Read the token from this file (default: PIPELINE_TOKEN_FILE).")
        with_token = click.option("--token", envvar="PIPELINE_TOKEN", metavar="TOKEN",
                                  help=TOKEN_HELP.format(role=role.label))
        return with_token(with_file(guarded))  # type: ignore[return-value]

    return decorate


def read_token_file(path: Path) -> str:
    """The token in ``path`` (its first line), or one clear error naming the file."""
    from orchestrator.errors import ConfigError

    try:
        value = path.read_text().strip().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"--token-file {path}: cannot read it: "
                          f"{getattr(error, 'strerror', None) or error}") from None
    if not value:
        raise ConfigError(f"--token-file {path}: the file is empty")
    return value[0].strip()


def check(role: Role, token: str | None, action: str, *, bootstrap: bool = False,
          strict: bool = False) -> Principal:
    from orchestrator.access.auth import authorize
    from orchestrator.settings import get_settings

    _schema_current()  # tokens and policy tables exist before the lookup
    return authorize(role, token, action, get_settings(), bootstrap=bootstrap, strict=strict)


def _schema_current() -> None:
    """Migrate the database (idempotent); not the share (``health`` reports a missing
    share rather than making it)."""
    from orchestrator.store.db import migrate

    migrate()


def principal() -> Principal:
    return click.get_current_context().meta.get("principal") or Principal(
        "anonymous", None, enforced=False)


def actor() -> str:
    """The name recorded for this command's actions: the token's name, or the OS user."""
    from orchestrator.access.audit import origin

    found = principal()
    return found.name if found.enforced else f"anonymous ({origin()})"


def _action(ctx: click.Context) -> str:
    """The command as typed after ``pipeline`` (also when run as ``python -m cli.main``)."""
    names = [c.info_name for c in _lineage(ctx)[1:] if c.info_name]
    return " ".join(names) or ctx.info_name or "?"


def _lineage(ctx: click.Context) -> list[click.Context]:
    chain: list[click.Context] = []
    current: click.Context | None = ctx
    while current is not None:
        chain.insert(0, current)
        current = current.parent
    return chain


# -- pipeline token ------------------------------------------------------------------------

@click.group("token")
def token() -> None:
    """Create, list and revoke API tokens (admin; the first token needs none)."""


@token.command("create", epilog=epilog())
@click.option("--role", "role_name", required=True,
              type=click.Choice([r.label for r in Role]), help="What the token may do.")
@click.option("--name", help="A name to recognize it by (default: role-id).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@requires(Role.ADMIN, bootstrap=True, strict=True)  # strict: no tokens minted while off
def create(role_name: str, name: str | None, as_json: bool) -> None:
    """Create a token and print it, once (only its sha256 is kept).

    The token goes to stdout and the explanation to stderr, so that
    TOKEN=$(pipeline token create --role operator) works.
    Example: pipeline token create --role admin --name alice
    """
    from orchestrator.access.auth import refuse
    from orchestrator.errors import Forbidden

    role = Role.parse(role_name)
    if principal().bootstrap and role is not Role.ADMIN:
        refuse(Forbidden, "token create", actor(), "the first token must be an admin token "
               "(pipeline token create --role admin), so that someone can create the others")
    from orchestrator.access.auth import create_token

    value, info = create_token(role, name, created_by=actor())
    if as_json:
        render.emit_json({**info.to_dict(), "token": value})
        return
    click.echo(value)
    click.echo(f"token {info.id} {info.name!r} with role {info.role} created. This is the only "
               "time it is shown: keep it; pass it with --token or PIPELINE_TOKEN.", err=True)


@token.command("list", epilog=epilog())
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@requires(Role.ADMIN, strict=True)
def list_(as_json: bool) -> None:
    """Every token: id, name, role, when created and by whom, revoked or not (never values)."""
    from rich.table import Table

    from orchestrator.access.auth import list_tokens

    found = list_tokens()
    if as_json:
        render.emit_json([t.to_dict() for t in found])
        return
    table = Table("id", "name", "role", "created (UTC)", "by", "revoked")
    for t in found:
        table.add_row(t.id, t.name, t.role, t.created_at.strftime("%Y-%m-%d %H:%M"),
                      t.created_by or "", t.revoked_at.strftime("%Y-%m-%d %H:%M")
                      if t.revoked_at else "")
    render.console.print(table)


@token.command("revoke", epilog=epilog())
@click.argument("token_id")
@requires(Role.ADMIN, strict=True)
def revoke(token_id: str) -> None:
    """Revoke a token by its id (the 8 hex digits after pot_).

    Example: pipeline token revoke 1a2b3c4d
    """
    from orchestrator.access.auth import revoke as revoke_token

    info = revoke_token(token_id, revoked_by=actor())
    click.echo(f"token {info.id} {info.name!r} revoked")


@click.command("audit", epilog=epilog())
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@requires(Role.ADMIN)
def audit(limit: int, as_json: bool) -> None:
    """The audit log, newest first: refusals, tokens, rotations, restores."""
    from rich.table import Table

    from orchestrator.access.audit import recent

    entries = recent(limit)
    if as_json:
        render.emit_json(entries)
        return
    table = Table("time (UTC)", "action", "outcome", "actor", "role", "detail")
    for e in entries:
        table.add_row(e["at"][:19], e["action"], e["outcome"], e["actor"] or "", e["role"] or "",
                      e["detail"] or "")
    render.console.print(table)


# -- pipeline auth -------------------------------------------------------------------------

@click.group("auth")
def auth() -> None:
    """Whether tokens are checked: the policy stored with the tokens (admin only).

    Once a token exists, this policy decides, not PIPELINE_AUTH or PIPELINE_AUTH_VIEWERS in
    the caller's environment. Tokens guard the commands and the HTTP API; whoever holds the
    database credentials can change any row, so keep those to the services (docs/security.md).
    """


@auth.command("show", epilog=epilog())
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@requires(Role.ADMIN)
def show(as_json: bool) -> None:
    """The policy in force, and whether it is stored (a token exists) or from the settings."""
    from orchestrator.access.auth import policy
    from orchestrator.settings import get_settings

    current = policy(get_settings())
    if as_json:
        render.emit_json(current.to_dict())
        return
    source = "stored (changed with `pipeline auth set`)" if current.stored else \
        "from the settings: no token exists yet"
    click.echo(f"enforce: {'on' if current.enforce else 'off'}\nviewers: {current.viewers}\n"
               f"source: {source}")


@auth.command("set", epilog=epilog())
@click.option("--enforce", type=click.Choice(["on", "off"]), help="Check tokens, or not.")
@click.option("--viewers", type=click.Choice(["open", "token"]),
              help="Read commands: open to all, or a viewer token needed.")
@requires(Role.ADMIN, strict=True)
def set_(enforce: str | None, viewers: str | None) -> None:
    """Change the stored policy (audited). Needs an admin token even while enforcement is off.

    Example: pipeline auth set --viewers token
    """
    from orchestrator.access.auth import set_policy
    from orchestrator.settings import get_settings

    if enforce is None and viewers is None:
        raise click.UsageError("nothing to change: give --enforce and/or --viewers")
    new = set_policy(get_settings(), actor(), enforce=None if enforce is None else
                     enforce == "on", viewers=viewers)
    click.echo(f"auth policy: enforce {'on' if new.enforce else 'off'}, viewers {new.viewers}")
