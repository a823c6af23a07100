"""The CLI's guard, ``@requires(Role.X)``: one decorator on every command that needs a role.

It adds ``--token`` (or ``PIPELINE_TOKEN``) to the command and, before the command runs, asks
:func:`orchestrator.auth.authorize`, which refuses (exit 9 without a valid token, 10 with a
weaker one) and records the refusal in the audit log. Also here: ``pipeline token`` and
``pipeline audit``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

from cli import render
from cli.exit_codes import epilog
from orchestrator.auth import Principal, Role

F = TypeVar("F", bound=Callable[..., Any])


def requires(role: Role, *, bootstrap: bool = False) -> Callable[[F], F]:
    """Guard a command: it runs only for a token of ``role`` or higher (when auth is in force).

    ``bootstrap``: also allowed while no token exists at all (creating the first token).
    The principal is left in ``click.get_current_context().meta["principal"]``.
    """

    def decorate(command: F) -> F:
        @functools.wraps(command)
        def guarded(*args: Any, token: str | None = None, **kwargs: Any) -> Any:
            ctx = click.get_current_context()
            ctx.meta["principal"] = check(role, token, _action(ctx), bootstrap=bootstrap)
            return command(*args, **kwargs)

        option = click.option("--token", envvar="PIPELINE_TOKEN", metavar="TOKEN",
                              help=f"A token with role {role.label} or higher "
                                   "(default: PIPELINE_TOKEN).")
        return option(guarded)  # type: ignore[return-value]

    return decorate


def check(role: Role, token: str | None, action: str, *, bootstrap: bool = False) -> Principal:
    from orchestrator.auth import authorize, open_without_lookup
    from orchestrator.settings import get_settings

    settings = get_settings()
    if not open_without_lookup(role, settings):
        from cli.main import orchestrator

        orchestrator()  # the schema (tokens table) is current before the lookup
    return authorize(role, token, action, settings, bootstrap=bootstrap)


def principal() -> Principal:
    return click.get_current_context().meta.get("principal") or Principal(
        "anonymous", None, enforced=False)


def actor() -> str:
    """The name recorded for this command's actions: the token's name, or the OS user."""
    from orchestrator.audit import origin

    found = principal()
    return found.name if found.enforced else f"anonymous ({origin()})"


def _action(ctx: click.Context) -> str:
    return " ".join(ctx.command_path.split()[1:]) or ctx.info_name or "?"


# -- pipeline token ------------------------------------------------------------------------

@click.group("token")
def token() -> None:
    """Create, list and revoke API tokens (admin; the first token needs none)."""


@token.command("create", epilog=epilog())
@click.option("--role", "role_name", required=True,
              type=click.Choice([r.label for r in Role]), help="What the token may do.")
@click.option("--name", help="A name to recognize it by (default: role-id).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@requires(Role.ADMIN, bootstrap=True)
def create(role_name: str, name: str | None, as_json: bool) -> None:
    """Create a token and print it, once (only its sha256 is kept).

    The token goes to stdout and the explanation to stderr, so that
    TOKEN=$(pipeline token create --role operator) works.
    Example: pipeline token create --role admin --name alice
    """
    from orchestrator.auth import refuse
    from orchestrator.errors import Forbidden

    role = Role.parse(role_name)
    if principal().bootstrap and role is not Role.ADMIN:
        refuse(Forbidden, "token create", actor(), "the first token must be an admin token "
               "(pipeline token create --role admin), so that someone can create the others")
    from orchestrator.auth import create_token

    value, info = create_token(role, name, created_by=actor())
    if as_json:
        render.emit_json({**info.to_dict(), "token": value})
        return
    click.echo(value)
    click.echo(f"token {info.id} {info.name!r} with role {info.role} created. This is the only "
               "time it is shown: keep it; pass it with --token or PIPELINE_TOKEN.", err=True)


@token.command("list", epilog=epilog())
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@requires(Role.ADMIN)
def list_(as_json: bool) -> None:
    """Every token: id, name, role, when created and by whom, revoked or not (never values)."""
    from rich.table import Table

    from orchestrator.auth import list_tokens

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
@requires(Role.ADMIN)
def revoke(token_id: str) -> None:
    """Revoke a token by its id (the 8 hex digits after pot_).

    Example: pipeline token revoke 1a2b3c4d
    """
    from orchestrator.auth import revoke as revoke_token

    info = revoke_token(token_id, revoked_by=actor())
    click.echo(f"token {info.id} {info.name!r} revoked")


@click.command("audit", epilog=epilog())
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@requires(Role.ADMIN)
def audit(limit: int, as_json: bool) -> None:
    """The audit log, newest first: refusals, tokens, rotations, restores."""
    from rich.table import Table

    from orchestrator.audit import recent

    entries = recent(limit)
    if as_json:
        render.emit_json(entries)
        return
    table = Table("time (UTC)", "action", "outcome", "actor", "role", "detail")
    for e in entries:
        table.add_row(e["at"][:19], e["action"], e["outcome"], e["actor"] or "", e["role"] or "",
                      e["detail"] or "")
    render.console.print(table)
