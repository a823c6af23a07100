"""Secrets in settings: read from files (``PIPELINE_*_FILE``), never shown.

Each test is a short story: given an environment, when settings load (or are shown), then
what an operator would check.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import pipeline
from orchestrator.errors import ConfigError
from orchestrator.settings import Settings, get_settings, reset_settings

SECRET = "s3cr3t-Pa55word"


def secret_file(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_urls_and_passwords_come_from_files(clean: Path, monkeypatch: pytest.MonkeyPatch,
                                            ) -> None:
    # given container secrets: each a file, the way editors and `echo` write them (newline)
    files = {
        "BROKER_URL": f"redis://:{SECRET}@redis:6379/0\n",
        "RESULT_BACKEND": f"redis://:{SECRET}@redis:6379/1\n",
        "DATABASE_URL": f"postgresql://pipeline:{SECRET}@db/pipeline\r\n",
        "FLOWER_PASSWORD": f"{SECRET}\n",
    }
    for name, text in files.items():
        monkeypatch.setenv(f"PIPELINE_{name}_FILE", str(secret_file(clean, name, text)))
    # when settings load
    settings = get_settings()
    # then each value is the file's content without the trailing newline
    assert settings.broker_url == f"redis://:{SECRET}@redis:6379/0"
    assert settings.result_backend == f"redis://:{SECRET}@redis:6379/1"
    assert settings.database_url == f"postgresql://pipeline:{SECRET}@db/pipeline"
    assert settings.flower_password == SECRET


def test_a_missing_secret_file_stops_the_start_naming_the_variable(
        clean: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_DATABASE_URL_FILE", str(clean / "nowhere"))
    with pytest.raises(ConfigError) as raised:
        get_settings()
    assert "PIPELINE_DATABASE_URL_FILE" in str(raised.value)
    assert f"no such file: {clean / 'nowhere'}" in str(raised.value)


def test_an_empty_secret_file_or_a_secret_given_twice_is_refused(
        clean: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_BROKER_URL_FILE", str(secret_file(clean, "b", "\n")))
    with pytest.raises(ConfigError, match="empty"):
        get_settings()
    reset_settings()
    monkeypatch.setenv("PIPELINE_BROKER_URL_FILE", str(secret_file(clean, "b", "redis://x")))
    monkeypatch.setenv("PIPELINE_BROKER_URL", f"redis://:{SECRET}@elsewhere/0")
    with pytest.raises(ConfigError) as raised:
        get_settings()
    # and the message names both variables but shows neither value
    assert "PIPELINE_BROKER_URL and PIPELINE_BROKER_URL_FILE are both set" in str(raised.value)
    assert SECRET not in str(raised.value)


def test_signing_needs_key_certificate_and_store_together(
        clean: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_SECURITY_KEY", str(secret_file(clean, "k", "x")))
    with pytest.raises(ConfigError, match="PIPELINE_SECURITY_CERT_STORE"):
        get_settings()


def test_settings_repr_str_and_errors_never_show_a_password(
        clean: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # given URLs and passwords with a secret in them
    monkeypatch.setenv("PIPELINE_BROKER_URL", f"amqp://pipeline:{SECRET}@rabbit//")
    monkeypatch.setenv("PIPELINE_DATABASE_URL", f"postgresql://u:{SECRET}@db/p")
    monkeypatch.setenv("PIPELINE_FLOWER_PASSWORD", SECRET)
    monkeypatch.setenv("PIPELINE_SMTP_PASSWORD", SECRET)
    settings = get_settings()
    # when settings are printed the ways logs and tracebacks print them
    shown = [repr(settings), str(settings), str(settings.public_dict())]
    # then the secret is in none of them, but the rest of the URL is
    for text in shown:
        assert SECRET not in text
    assert "amqp://pipeline:***@rabbit//" in repr(settings)
    # and a bad value elsewhere (a rule across settings) does not dump every setting
    monkeypatch.setenv("PIPELINE_VALIDATE_SOFT_TIME_LIMIT", "999")
    reset_settings()
    with pytest.raises(ConfigError) as raised:
        get_settings()
    assert "PIPELINE_VALIDATE_SOFT_TIME_LIMIT (999)" in str(raised.value)
    assert SECRET not in str(raised.value)


def test_a_bad_secret_value_is_named_but_not_shown(clean: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_FLOWER_PASSWORD", "short,1")  # too short, has a comma
    with pytest.raises(ConfigError) as raised:
        get_settings()
    assert "PIPELINE_FLOWER_PASSWORD=***" in str(raised.value)
    assert "short,1" not in str(raised.value)


def test_pipeline_config_masks_every_secret(clean: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # given secrets in URLs and in files
    monkeypatch.setenv("PIPELINE_BROKER_URL", f"redis://:{SECRET}@127.0.0.1:1/0")
    monkeypatch.setenv("PIPELINE_RESULT_BACKEND", f"redis://user:{SECRET}@127.0.0.1:1/1")
    monkeypatch.setenv("PIPELINE_DATABASE_URL_FILE",
                       str(secret_file(clean, "db", f"sqlite:///{clean}/x.db?password={SECRET}")))
    monkeypatch.setenv("PIPELINE_FLOWER_PASSWORD_FILE",
                       str(secret_file(clean, "flower", SECRET)))
    # when `pipeline config` shows the settings, as text and as JSON
    runner = CliRunner()
    for args in (["config"], ["config", "--json"]):
        result = runner.invoke(pipeline, args, catch_exceptions=False)
        # then the secret never appears
        assert result.exit_code == 0, result.output
        assert "PIPELINE_BROKER_URL" in result.output or "broker_url" in result.output
        assert SECRET not in result.output, result.output


def test_a_query_string_password_is_masked_too(clean: Path) -> None:
    # given a database URL whose password is a query parameter (libpq allows it)
    settings = Settings(database_url=f"postgresql://db/p?user=u&password={SECRET}")
    # then it is masked as well
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings.public_dict())
