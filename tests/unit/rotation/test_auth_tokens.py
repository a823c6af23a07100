"""Tokens and roles: open until the first token, then every state-changing command checked."""

from __future__ import annotations

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select

from cli.main import pipeline
from orchestrator.access import audit
from orchestrator.access.auth import Role, authorize, create_token
from orchestrator.errors import Forbidden, Unauthorized
from orchestrator.rotation import runner
from orchestrator.settings import reset_settings
from orchestrator.store.db import transaction
from orchestrator.store.tables import api_tokens
from tests.rotation_support import days_ago, make_jobs


def cli(*args: str, token: str | None = None) -> Result:
    env = {"PIPELINE_TOKEN": token} if token else {}
    return CliRunner().invoke(pipeline, list(args), env=env)


@pytest.fixture
def tokens(share, monkeypatch):  # type: ignore[no-untyped-def]
    """An admin made the bootstrap way, then a token of every role."""
    monkeypatch.setattr(runner, "_celery_dispatch", runner.run_here)  # no worker needed
    created = cli("token", "create", "--role", "admin", "--name", "root")
    assert created.exit_code == 0, created.output
    admin = created.stdout.strip().splitlines()[0]
    made = {"admin": admin, "root": share.root}
    for role in ("viewer", "submitter", "operator"):
        made[role] = cli("token", "create", "--role", role, "--name", role,
                         token=admin).stdout.strip().splitlines()[0]
    return made


def test_everything_is_open_until_the_first_token_exists(share):
    # A fresh installation: no token anywhere, commands run as before
    assert authorize(Role.ADMIN, None, "rotate", share.settings).enforced is False
    assert cli("rotate", "--dry-run").exit_code == 0
    # The first token must be an admin token (else nobody could create the others)
    refused = cli("token", "create", "--role", "operator")
    assert refused.exit_code == 10 and "first token must be an admin" in refused.output


def test_a_token_is_shown_once_and_stored_hashed(share):
    value, info = create_token(Role.OPERATOR, "ci", created_by="test")
    assert value.startswith(f"pot_{info.id}_") and len(value) > 40
    with transaction() as conn:
        stored = conn.execute(select(api_tokens)).one()
    assert value not in repr(tuple(stored)) and len(stored.token_sha256) == 64


def test_missing_unknown_and_revoked_tokens_are_refused_with_exit_9(tokens):
    assert cli("rotate", "--dry-run").exit_code == 9
    unknown = cli("rotate", "--dry-run", token="pot_00000000_" + "x" * 43)
    assert unknown.exit_code == 9 and "unknown or revoked" in unknown.output
    operator_id = tokens["operator"].split("_")[1]
    assert cli("token", "revoke", operator_id, token=tokens["admin"]).exit_code == 0
    assert cli("rotate", "--dry-run", token=tokens["operator"]).exit_code == 9


def test_weaker_roles_are_refused_with_exit_10_and_the_refusal_is_logged(tokens):
    # A viewer may not rotate, restore, retry or cancel; a submitter may not either
    for role in ("viewer", "submitter"):
        for args in (["rotate", "--dry-run"], ["restore", "abc"], ["retry", "abc"],
                     ["cancel", "abc"]):
            result = cli(*args, token=tokens[role])
            assert result.exit_code == 10, (role, args, result.output)
            assert f"has role {role}" in result.output
    # Nor may a viewer submit, nor an operator create tokens
    prices = tokens["root"] / "prices.csv"
    prices.write_text("date,A\n")
    assert cli("submit", str(prices), token=tokens["viewer"]).exit_code == 10
    assert cli("token", "create", "--role", "admin", token=tokens["operator"]).exit_code == 10
    # Every refusal is in the audit log, by token name, never with the token itself
    refused = [e for e in audit.recent(100) if e["outcome"] == "refused"]
    assert {e["actor"] for e in refused} >= {"viewer", "submitter", "operator"}
    assert not any(tokens[r] in repr(refused) for r in ("viewer", "submitter", "operator"))


def test_an_operator_may_rotate_and_the_run_records_who(share, tokens):
    make_jobs(share.share, 3, finished_at=days_ago(40))
    result = cli("rotate", "--json", token=tokens["operator"])
    assert result.exit_code == 0, result.output
    assert '"actor": "operator"' in result.stdout and '"jobs_done": 3' in result.stdout
    assert any(e["action"] == "rotate" and e["actor"] == "operator" for e in audit.recent())


def test_the_audit_log_is_for_admins(tokens):
    cli("rotate", "--dry-run")  # refused: recorded
    shown = cli("audit", "--json", token=tokens["admin"])
    assert shown.exit_code == 0 and '"outcome": "refused"' in shown.stdout
    assert cli("audit", token=tokens["operator"]).exit_code == 10


def test_read_commands_stay_open_unless_the_stored_policy_closes_them(tokens, monkeypatch):
    assert cli("list").exit_code == 0
    monkeypatch.setenv("PIPELINE_AUTH_VIEWERS", "token")  # the caller's environment: ignored
    reset_settings()
    assert cli("list").exit_code == 0
    assert cli("auth", "set", "--viewers", "token", token=tokens["admin"]).exit_code == 0
    assert cli("list").exit_code == 9
    assert cli("list", token=tokens["viewer"]).exit_code == 0


def test_auth_on_refuses_even_before_any_token_except_the_first_admin(share, monkeypatch):
    monkeypatch.setenv("PIPELINE_AUTH", "on")
    reset_settings()
    with pytest.raises(Unauthorized):
        authorize(Role.OPERATOR, None, "rotate", share.settings)
    assert cli("token", "create", "--role", "admin").exit_code == 0


def test_auth_off_opens_only_until_a_token_exists(share, monkeypatch):
    monkeypatch.setenv("PIPELINE_AUTH", "off")
    reset_settings()
    assert authorize(Role.ADMIN, None, "rotate", share.settings).enforced is False
    # once a token exists the stored policy decides, not the caller's environment
    create_token(Role.VIEWER, "v", created_by="test")
    with pytest.raises(Unauthorized, match="PIPELINE_AUTH=off is ignored"):
        authorize(Role.ADMIN, None, "rotate", share.settings)


def test_forbidden_is_not_unauthorized(share):
    value, _ = create_token(Role.VIEWER, "v", created_by="test")
    with pytest.raises(Forbidden):
        authorize(Role.OPERATOR, value, "rotate", share.settings)
