"""deploy/: the compose file, the systemd units and the example environment file.

No Docker engine runs here (and this docker client has no compose plugin), so the compose
file is checked against the Compose Specification's JSON schema, vendored from the
docker-compose 1.29.2 wheel (Apache-2.0; tests/data/README.md), plus what the schema cannot
know: every role is there, health checks and commands are ones our CLI accepts, secrets are
files. The units go through ``systemd-analyze verify`` where it exists.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import jsonschema
import pytest
import yaml

from celeryconfig import QUEUE_NAMES
from cli.main import pipeline
from orchestrator import envexample
from orchestrator.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SCHEMA = ROOT / "tests" / "data" / "compose_spec.json"
ROLES = {"worker", "beat", "watcher", "flower"}


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def schema_errors(document: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft201909Validator(json.loads(SCHEMA.read_text()))
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(document)]


def pipeline_services() -> dict[str, dict[str, Any]]:
    """The services that run our image (the servers run theirs)."""
    return {name: svc for name, svc in compose()["services"].items()
            if "pipeline" in str(svc.get("image", ""))}


def check_cli(args: list[str]) -> None:
    """``pipeline …`` arguments our click group accepts (parsed, not run)."""
    assert args[0] == "pipeline", args
    command: click.Command = pipeline
    name, words = "pipeline", list(args[1:])
    while isinstance(command, click.Group):  # our groups take no options of their own
        name, words = words[0], words[1:]
        found = command.get_command(click.Context(command), name)
        assert found is not None, f"no command {name!r} in {args}"
        command = found
    command.make_context(name, words)  # raises click.UsageError on a bad option


def check_celery(args: list[str]) -> None:
    assert args[:3] == ["celery", "-A", "orchestrator"], args
    if "-Q" in args:
        queues = args[args.index("-Q") + 1].split(",")
        assert set(queues) <= set(QUEUE_NAMES), queues


# ----------------------------------------------------------------------------- compose


def test_the_compose_file_follows_the_compose_specification() -> None:
    # given deploy/compose.yaml, when it is checked against the Compose Specification schema
    errors = schema_errors(compose())
    # then nothing is out of place
    assert errors == []


def test_the_schema_check_does_catch_a_mistake() -> None:
    # given the compose file with a misspelt health check key and a bad restart policy
    document = compose()
    document["services"]["beat"]["healthcheck"]["intervall"] = "10s"
    document["services"]["redis"]["depends_on"] = {"postgres": {"condition": "up"}}
    # when it is checked, then both are reported
    errors = "\n".join(schema_errors(document))
    assert "intervall" in errors and "'up'" in errors


def test_every_role_has_its_service_and_the_workers_cover_every_queue() -> None:
    # given the services that run the pipeline's image
    services = pipeline_services()
    commands = {name: svc["command"] for name, svc in services.items()}
    # then there is a worker per queue group covering every queue, one beat, a watcher, Flower
    queues = {q for c in commands.values() if "worker" in c for q in c[c.index("-Q") + 1]
              .split(",")}
    assert queues == set(QUEUE_NAMES)
    assert [n for n, c in commands.items() if "beat" in c] == ["beat"]
    assert services["beat"]["deploy"]["replicas"] == 1
    assert commands["watcher"] == ["pipeline", "watch"]
    assert commands["flower"][:2] == ["pipeline", "flower"]
    # and the schema upgrade runs first: every long-running role waits for it to complete
    for name, svc in services.items():
        if name != "migrate":
            assert svc["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
            assert svc["restart"] == "always"


def test_every_command_and_health_check_is_one_our_cli_accepts() -> None:
    for name, svc in pipeline_services().items():
        command = svc["command"]
        (check_celery if command[0] == "celery" else check_cli)(command)
        if "healthcheck" in svc:
            test = svc["healthcheck"]["test"]
            assert test[0] == "CMD" and test[1] == "pipeline", name
            check_cli(test[1:])


def test_the_servers_are_durable_and_healthy() -> None:
    services = compose()["services"]
    redis = services["redis"]["command"]
    assert redis[redis.index("--appendonly") + 1] == "yes"
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"]
    assert services["rabbitmq"]["profiles"] == ["rabbitmq"]


def test_secrets_are_files_and_every_role_shares_the_share() -> None:
    document = compose()
    declared = set(document["secrets"])
    for name, svc in pipeline_services().items():
        environment = svc["environment"]
        # no URL with a password, no password, in the environment: only *_FILE paths
        for key, value in environment.items():
            assert not re.search(r"://[^/@]*:[^@]*@", str(value)), key
            assert "PASSWORD" not in key or key.endswith("_FILE"), key
        assert environment["PIPELINE_DATABASE_URL_FILE"].startswith("/run/secrets/")
        assert set(svc["secrets"]) <= declared, name
        assert "share:/share" in svc["volumes"], name
        key = environment.get("PIPELINE_SECURITY_KEY")
        if key is not None:  # signing: the role's own key is one of its secrets
            assert key.removeprefix("/run/secrets/") in svc["secrets"], name
    assert all("file" in spec for spec in document["secrets"].values())


# ----------------------------------------------------------------------------- systemd

UNITS = sorted((DEPLOY / "systemd").glob("*.service"))


def unit_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines()
            if line.strip() and not line.startswith("#")]


def test_a_unit_for_every_role_restarting_always_from_the_shared_environment_file() -> None:
    names = {p.stem for p in UNITS}
    assert {"pipeline-worker@", "pipeline-beat", "pipeline-watch", "pipeline-flower",
            "pipeline-migrate"} <= names
    for unit in UNITS:
        lines = unit_lines(unit)
        assert "EnvironmentFile=/etc/pipeline/pipeline.env" in lines, unit.name
        if "Type=oneshot" not in lines:
            assert "Restart=always" in lines, unit.name
        # secrets are credentials, never Environment= values
        for line in lines:
            if line.startswith("Environment=") and "PASSWORD" in line:
                assert "_FILE=%d/" in line, line
        start = next(line for line in lines if line.startswith("ExecStart="))
        start = start.replace("${WORKER_QUEUES}", "validate,archive")
        args = shlex.split(start.removeprefix("ExecStart=").replace("${WORKER_CONCURRENCY}", "4"))
        args[0] = Path(args[0]).name
        (check_celery if args[0] == "celery" else check_cli)(args)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_analyze_verifies_every_unit(tmp_path: Path) -> None:
    # given the units, with the install path pointed at this machine's virtual environment
    venv_bin = Path(sys.executable).parent
    if not (venv_bin / "pipeline").exists():
        pytest.skip(f"no pipeline script beside {sys.executable}")
    copies = []
    for unit in UNITS:
        name = unit.name.replace("@.service", "@steps.service")
        text = unit.read_text().replace("/opt/pipeline/venv/bin/", f"{venv_bin}/")
        (tmp_path / name).write_text(text)
        copies.append(str(tmp_path / name))
    # when systemd checks them, then it finds nothing wrong
    done = subprocess.run(["systemd-analyze", "verify", "--man=no", *copies],
                          capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "error" not in done.stderr.lower(), done.stderr


# ----------------------------------------------------------------------------- the env file

EXAMPLE = DEPLOY / "pipeline.env.example"


def test_every_setting_is_in_the_example_environment_file() -> None:
    text = EXAMPLE.read_text()
    missing = [name for name in Settings.model_fields
               if not re.search(rf"^#?PIPELINE_{name.upper()}=", text, re.MULTILINE)]
    assert missing == [], ("regenerate: python -m orchestrator.envexample > "
                           f"deploy/pipeline.env.example (missing {missing})")


def test_every_setting_says_what_it_means() -> None:
    bare = [name for name, field in Settings.model_fields.items()
            if not envexample.describe(name, field)]
    assert bare == [], ("give these a Field(description=...) in orchestrator/settings.py "
                        f"(or a note in orchestrator/envexample.py): {bare}")


def test_the_example_file_is_exactly_what_the_generator_writes() -> None:
    assert EXAMPLE.read_text() == envexample.render(), (
        "regenerate: python -m orchestrator.envexample > deploy/pipeline.env.example")


def test_the_example_file_loads_as_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           ) -> None:
    # given the active lines of the example (as systemd's EnvironmentFile= reads them)
    for line in EXAMPLE.read_text().splitlines():
        if line and not line.startswith("#"):
            key, value = line.split("=", 1)
            monkeypatch.setenv(key, value)
    # when settings load, then they are valid
    settings = Settings()
    assert settings.share_dir == Path("/srv/pipeline/share")


def test_the_settings_reference_is_exactly_what_the_generator_writes() -> None:
    # the README once documented PIPELINE_STEP_SOFT_TIME_LIMIT, which never existed: the
    # reference is generated from the settings, and this fails when it was not regenerated
    reference = DEPLOY.parent / "docs" / "reference.md"
    assert reference.read_text() == envexample.render_markdown(), (
        "regenerate: python -m orchestrator.envexample --markdown > docs/reference.md")
