"""Unit tests of orchestrator.settings: each test is a short story (given, when, then)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.errors import ConfigError
from orchestrator.settings import get_settings, reset_settings


def config_error(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> str:
    monkeypatch.setenv(name, value)
    reset_settings()
    with pytest.raises(ConfigError) as raised:
        get_settings()
    return str(raised.value)


# ----------------------------------------------------------------------------- defaults


def test_without_variables_everything_is_embedded_under_var(clean: Path) -> None:
    # given no PIPELINE_* variable, when the settings are read
    settings = get_settings()
    # then broker, results and database are local files under ./var
    assert settings.var_dir == clean / "var"
    assert settings.share_dir == clean / "share"
    assert settings.broker.startswith("atomicfs://")
    assert settings.embedded_broker
    assert settings.broker_folder == clean / "var" / "broker"
    assert settings.results == f"atomicfile://{clean}/var/results"
    assert settings.database == f"sqlite:///{clean}/var/pipeline.db"


def test_explicit_urls_replace_the_embedded_defaults(clean: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # given servers named in the environment
    monkeypatch.setenv("PIPELINE_BROKER_URL", "redis://h:6379/0")
    monkeypatch.setenv("PIPELINE_RESULT_BACKEND", "redis://h:6379/1")
    monkeypatch.setenv("PIPELINE_DATABASE_URL", "postgresql://u@h/db")
    reset_settings()
    # when the settings are read
    settings = get_settings()
    # then they are used as given and the broker is no longer the embedded one
    assert (settings.broker, settings.results, settings.database) == (
        "redis://h:6379/0", "redis://h:6379/1", "postgresql://u@h/db")
    assert not settings.embedded_broker


def test_relative_share_dir_is_made_absolute(clean: Path, monkeypatch: pytest.MonkeyPatch,
                                             ) -> None:
    monkeypatch.setenv("PIPELINE_SHARE_DIR", "drop/here")
    reset_settings()
    assert get_settings().share_dir == clean / "drop" / "here"


def test_settings_are_read_once_until_reset(clean: Path, monkeypatch: pytest.MonkeyPatch,
                                            ) -> None:
    # given settings already read
    first = get_settings()
    # when the environment changes without a reset, then the cached object stays
    monkeypatch.setenv("PIPELINE_PORTFOLIO_SIZE", "30")
    assert get_settings() is first
    # and after a reset the new value is read
    reset_settings()
    assert get_settings().portfolio_size == 30


# ----------------------------------------------------------------------------- bad values


def test_portfolio_size_out_of_range_names_the_variable_and_the_limit(
        clean: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    message = config_error(monkeypatch, "PIPELINE_PORTFOLIO_SIZE", "500")
    assert "PIPELINE_PORTFOLIO_SIZE='500'" in message
    assert "less than or equal to 100" in message


def test_negative_scan_interval_names_the_variable_and_the_reason(
        clean: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    message = config_error(monkeypatch, "PIPELINE_SCAN_INTERVAL", "-1")
    assert "PIPELINE_SCAN_INTERVAL='-1'" in message
    assert "greater than 0" in message


def test_every_bad_value_is_reported_at_once(clean: Path, monkeypatch: pytest.MonkeyPatch,
                                             ) -> None:
    monkeypatch.setenv("PIPELINE_WORKER_CONCURRENCY", "many")
    message = config_error(monkeypatch, "PIPELINE_OBJECTIVE", "max_profit")
    assert "PIPELINE_WORKER_CONCURRENCY='many'" in message
    assert "PIPELINE_OBJECTIVE='max_profit'" in message
    assert "valid integer" in message
    assert "'min_volatility', 'max_sharpe'" in message and "or 'risk_parity'" in message


# ----------------------------------------------------------------------------- display


def test_public_dict_masks_the_database_password(clean: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # given a database URL with a password
    monkeypatch.setenv("PIPELINE_DATABASE_URL", "postgresql://u:secret@h/db")
    reset_settings()
    # when the settings are shown
    shown = get_settings().public_dict()
    # then the password is masked, the rest of the URL kept, and paths are plain strings
    assert "secret" not in repr(shown)
    assert shown["database_url"] == "postgresql://u:***@h/db"
    assert shown["var_dir"] == str(clean / "var")


def test_public_dict_masks_the_broker_password(clean: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_BROKER_URL", "amqp://guest:secret@rabbit:5672//")
    reset_settings()
    shown = get_settings().public_dict()
    assert "secret" not in repr(shown)
    assert shown["broker_url"] == "amqp://guest:***@rabbit:5672//"


def test_public_dict_masks_the_result_backend_password(
        clean: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # given a Redis result backend with a password (the servers setup uses one URL for both)
    monkeypatch.setenv("PIPELINE_RESULT_BACKEND", "redis://:secret@redis:6379/0")
    reset_settings()
    # when the settings are shown, then the password does not appear
    assert "secret" not in repr(get_settings().public_dict())


@pytest.mark.parametrize("url", [
    "amqp://u:secret@rabbit1//;amqp://u:secret@rabbit2//",
    "sentinel://:secret@s1:26379;sentinel://:secret@s2:26379",
])
def test_public_dict_masks_every_password_of_a_failover_broker_url(
        clean: Path, monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("PIPELINE_BROKER_URL", url)
    reset_settings()
    assert "secret" not in repr(get_settings().public_dict())


# ----------------------------------------------------------------------------- unknown names


def test_a_misspelt_variable_is_reported_not_ignored_in_silence(
        clean: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # given a variable the README once documented but no setting reads, and a real one
    monkeypatch.setenv("PIPELINE_STEP_SOFT_TIME_LIMIT", "5")
    monkeypatch.setenv("PIPELINE_VALIDATE_SOFT_TIME_LIMIT", "5")
    monkeypatch.setenv("PIPELINE_TOKEN", "pot_x")  # read by the CLI, not a setting
    # when the settings are read
    with caplog.at_level("WARNING", logger="orchestrator.settings"):
        settings = get_settings()
    # then the unknown one is named in a warning, the real one applies, the token is no typo
    assert settings.validate_soft_time_limit == 5
    warned = [r.getMessage() for r in caplog.records]
    assert any("PIPELINE_STEP_SOFT_TIME_LIMIT is not a setting" in m for m in warned), warned
    assert not any("PIPELINE_VALIDATE_SOFT_TIME_LIMIT" in m or "PIPELINE_TOKEN" in m
                   for m in warned)
