"""What an attacker or a careless operator tried from the command line (issue 13), as they ran
it: each command in a real ``pipeline`` process, on the embedded default."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass

import pytest


@dataclass
class Ran:
    returncode: int | None  # None: still running when the test gave up on it (then killed)
    stdout: str
    stderr: str


def run(env, *args: str, timeout: float = 60, **extra: str) -> Ran:  # type: ignore[no-untyped-def]
    """``pipeline ARGS`` in its own session; on timeout the whole session (e.g. a Flower child)
    is killed, so a command that should have been refused leaves nothing running."""
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", *args],
                            env={**env.environ(), **extra}, cwd=env.root, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        return Ran(proc.returncode, out, err)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return Ran(None, out, err)


@pytest.mark.parametrize("passed", [
    ["--address=0.0.0.0"], ["-address=0.0.0.0"], ["--address", "0.0.0.0"],
    ["unrelated", "--address=0.0.0.0"], ["--port=5601"], ["--conf=/tmp/other.py"],
    ["--basic-auth=ops:pw"]])
def test_flower_refuses_pass_through_of_what_it_checks(env, passed: list[str]) -> None:
    # given no Flower credentials, when the address (or port, conf, a password) is passed
    # through to Flower after `--`, where it would override the checked one
    result = run(env, "flower", "--port", "5600", "--", *passed, timeout=30)
    # then pipeline flower refuses before starting Flower, naming the option and what to use
    assert result.returncode == 2, (result.stdout, result.stderr[-2000:])
    assert "cannot be passed through to Flower" in result.stderr
    assert "Flower runs without authentication" not in result.stderr


# -- whether auth is in force: stored with the tokens, not the caller's environment ----------


def admin_token(env) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """The first (admin) token, made the bootstrap way: its value and its public id."""
    made = run(env, "token", "create", "--role", "admin", "--name", "alice")
    assert made.returncode == 0, made.stderr
    value = made.stdout.strip()
    return value, value.split("_")[1]


def active_tokens(env, admin: str) -> list[str]:  # type: ignore[no-untyped-def]
    import json

    shown = run(env, "token", "list", "--json", PIPELINE_TOKEN=admin)
    assert shown.returncode == 0, shown.stderr
    return [t["id"] for t in json.loads(shown.stdout) if not t["revoked_at"]]


def audit_entries(env, admin: str) -> list[dict[str, str]]:  # type: ignore[no-untyped-def]
    import json

    shown = run(env, "audit", "--json", PIPELINE_TOKEN=admin)
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


def test_the_callers_environment_does_not_switch_auth_off(env) -> None:  # type: ignore[no-untyped-def]
    # given an admin token in force
    admin, ident = admin_token(env)
    # when a caller without a token sets PIPELINE_AUTH=off and revokes it, cancels a job,
    # or makes itself an admin token
    for args in (["token", "revoke", ident], ["cancel", "0123abcd"],
                 ["token", "create", "--role", "admin"]):
        result = run(env, *args, PIPELINE_AUTH="off")
        # then each is refused (exit 9), saying the variable no longer decides
        assert result.returncode == 9, (args, result.stdout, result.stderr)
        assert "PIPELINE_AUTH=off is ignored once tokens exist" in result.stderr
    # and the admin token is still active, the only one
    assert active_tokens(env, admin) == [ident]


def test_only_an_admin_turns_auth_off_and_on_and_it_is_audited(env) -> None:  # type: ignore[no-untyped-def]
    admin, _ = admin_token(env)
    operator = run(env, "token", "create", "--role", "operator",
                   PIPELINE_TOKEN=admin).stdout.strip()
    # an operator, or nobody, may not change the stored policy
    assert run(env, "auth", "set", "--enforce", "off").returncode == 9
    assert run(env, "auth", "set", "--enforce", "off", PIPELINE_TOKEN=operator).returncode == 10
    # an admin may: then commands run without a token
    off = run(env, "auth", "set", "--enforce", "off", PIPELINE_TOKEN=admin)
    assert off.returncode == 0, off.stderr
    assert run(env, "rotate", "--dry-run").returncode == 0
    # but tokens are still an admin's alone: none minted or revoked while enforcement is off
    assert run(env, "token", "create", "--role", "admin").returncode == 9
    # and turning it on again still needs an admin, though auth is off meanwhile
    assert run(env, "auth", "set", "--enforce", "on").returncode == 9
    assert run(env, "auth", "set", "--enforce", "on", PIPELINE_TOKEN=admin).returncode == 0
    assert run(env, "rotate", "--dry-run").returncode == 9
    shown = run(env, "auth", "show", "--json", PIPELINE_TOKEN=admin)
    assert '"enforce": true' in shown.stdout and '"stored": true' in shown.stdout
    # each change is in the audit log, by the admin's token name
    changes = [e for e in audit_entries(env, admin) if e["action"] == "auth set"]
    assert [(e["outcome"], e["actor"]) for e in changes if e["outcome"] == "ok"] == [
        ("ok", "alice"), ("ok", "alice")]


def test_read_commands_are_closed_by_the_stored_policy_not_the_environment(env) -> None:  # type: ignore[no-untyped-def]
    admin, _ = admin_token(env)
    assert run(env, "list").returncode == 0  # open for reading by default
    assert run(env, "auth", "set", "--viewers", "token", PIPELINE_TOKEN=admin).returncode == 0
    assert run(env, "list").returncode == 9
    assert run(env, "list", PIPELINE_AUTH_VIEWERS="open").returncode == 9
    assert run(env, "list", PIPELINE_TOKEN=admin).returncode == 0


def test_a_wrong_secret_for_a_real_token_id_is_audited_as_unknown(env) -> None:  # type: ignore[no-untyped-def]
    # given an admin token, when someone presents its id with a wrong secret
    admin, ident = admin_token(env)
    forged = f"pot_{ident}_" + "x" * 43
    assert run(env, "rotate", "--dry-run", PIPELINE_TOKEN=forged).returncode == 9
    # then the refusal is not attributed to the token's owner
    refused = [e for e in audit_entries(env, admin) if e["outcome"] == "refused"]
    assert refused and refused[0]["actor"] == "unknown"
    assert f"presented token id {ident}" in refused[0]["detail"]
    assert "alice" not in refused[0]["detail"]


# -- bad settings: one clear line and exit 3, not a traceback ---------------------------------


@pytest.mark.parametrize(("variable", "value", "reason"), [
    ("PIPELINE_VAR_DIR", "/proc/pipeline-var", "cannot be created"),
    ("PIPELINE_SHARE_DIR", "/proc/pipeline-share", "cannot be created"),
    ("PIPELINE_VAR_DIR", "{file}", "is a file, not a folder"),
    ("PIPELINE_SHARE_DIR", "{file}", "is a file, not a folder"),
    ("PIPELINE_VAR_DIR", "{file}/var", "cannot be created"),
    ("PIPELINE_DATABASE_URL", "postgresql://u:pw@db.example:notaport/pipeline",
     "not a database URL"),
    ("PIPELINE_DATABASE_URL", "not a url", "not a database URL"),
])
def test_a_bad_folder_or_database_url_is_one_line_and_exit_3(  # type: ignore[no-untyped-def]
        env, variable: str, value: str, reason: str) -> None:
    plain = env.root / "plain-file"
    plain.write_text("not a folder\n")
    result = run(env, "list", **{variable: value.format(file=plain)})
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 3, result.stderr[-3000:]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and variable in lines[0] and reason in lines[0]
    assert "pw@" not in lines[0]  # a URL in the message stays masked


def test_a_token_can_come_from_a_file_and_help_says_why(env) -> None:  # type: ignore[no-untyped-def]
    # given an admin token kept in a file (not on the command line, where ps shows it)
    admin, _ = admin_token(env)
    kept = env.root / "admin.token"
    kept.write_text(admin + "\n")
    kept.chmod(0o600)
    # then commands accept it from the file, and from PIPELINE_TOKEN_FILE
    assert run(env, "rotate", "--dry-run", "--token-file", str(kept)).returncode == 0
    assert run(env, "rotate", "--dry-run", PIPELINE_TOKEN_FILE=str(kept)).returncode == 0
    # and a missing file is one clear line naming it
    gone = run(env, "rotate", "--dry-run", "--token-file", str(env.root / "nope"))
    assert gone.returncode == 3 and "nope: cannot read it" in gone.stderr
    # and --help steers people away from --token
    shown = run(env, "rotate", "--help").stdout
    assert "--token-file" in shown and "/proc/<pid>/cmdline" in shown
