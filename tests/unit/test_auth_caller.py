"""orchestrator.access.auth.caller: "who is this caller, and is auth in force", as the HTTP API
asks."""

from __future__ import annotations

import pytest

from orchestrator.access import audit
from orchestrator.access.auth import Role, caller, create_token, policy, set_policy
from orchestrator.errors import Unauthorized
from orchestrator.monitoring.flower import other_authentication, refused_passthrough
from orchestrator.settings import reset_settings


def test_a_fresh_installation_is_open_and_bootstrapping(env) -> None:  # type: ignore[no-untyped-def]
    who = caller(None, "GET /jobs", env.settings)
    assert (who.name, who.role, who.enforced, who.bootstrap) == ("anonymous", None, False, True)
    assert not policy(env.settings).stored


def test_once_a_token_exists_the_stored_policy_decides(env, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    value, _ = create_token(Role.OPERATOR, "ops", created_by="test", settings=env.settings)
    # the caller's environment says off: ignored
    monkeypatch.setenv("PIPELINE_AUTH", "off")
    reset_settings()
    anonymous = caller(None, "GET /jobs", env.settings)
    assert anonymous.enforced and anonymous.role is None and not anonymous.bootstrap
    known = caller(value, "POST /jobs", env.settings)
    assert (known.name, known.role, known.enforced) == ("ops", Role.OPERATOR, True)
    # an admin's stored change does switch it off, and is audited
    set_policy(env.settings, "alice", enforce=False)
    assert caller(None, "GET /jobs", env.settings).enforced is False
    assert audit.recent(1)[0]["action"] == "auth set"


def test_an_unknown_token_is_refused_and_audited_as_unknown(env) -> None:  # type: ignore[no-untyped-def]
    _, info = create_token(Role.ADMIN, "alice", created_by="test", settings=env.settings)
    with pytest.raises(Unauthorized, match=f"presented token id {info.id}"):
        caller(f"pot_{info.id}_" + "y" * 43, "DELETE /tokens", env.settings)
    entry = audit.recent(1)[0]
    assert (entry["outcome"], entry["actor"]) == ("refused", "unknown")


def test_flower_pass_through_helpers() -> None:
    assert refused_passthrough(["--persistent=False", "--max_tasks=100"]) == []
    assert len(refused_passthrough(["--Address=0.0.0.0", "--basic_auth=a:b"])) == 2
    assert other_authentication(["--auth=.*@example\\.com"], {})
    assert not other_authentication(["--auth="], {})
    assert other_authentication([], {"FLOWER_BASIC_AUTH": "ops:pw"})
