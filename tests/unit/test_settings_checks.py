"""Settings refuse what would fail later with a long traceback, or leak a secret when shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.errors import ConfigError
from orchestrator.settings import get_settings, mask_passwords, reset_settings

SECRETS = ["s3c;retPW", "pass word", "p@ss", "a/b?c#d", "x:y@z;w"]


@pytest.mark.parametrize("secret", SECRETS)
@pytest.mark.parametrize("template", [
    "redis://:{}@redis.example:6379/0",
    "amqp://pipeline:{}@rabbit.example:5672/prod",
    "postgresql+psycopg://pipeline:{}@db.example:5432/pipeline",
    "amqp://u:{}@rabbit1.example//;amqp://u:{}@rabbit2.example//",
])
def test_passwords_with_separators_are_masked_whole(template: str, secret: str) -> None:
    # given a URL whose password holds ; a space, a raw @, / ? # or :
    url = template.format(secret, secret)
    shown = mask_passwords(url)
    # then no part of the password is shown, while scheme, user and host still are
    pieces = secret.replace(";", " ").replace("@", " ").replace("/", " ").replace("?", " ")
    pieces = pieces.replace("#", " ").replace(":", " ")
    for part in {secret, *(p for p in pieces.split() if len(p) >= 3)}:
        assert part not in shown, (url, shown)
    assert "***" in shown and url.split("://")[0] + "://" in shown
    assert ".example" in shown


def test_config_shows_no_part_of_such_passwords(clean: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_BROKER_URL", "redis://:s3c;retPW@redis.example:6379/0")
    monkeypatch.setenv("PIPELINE_RESULT_BACKEND", "redis://:pass word@redis.example:6379/1")
    monkeypatch.setenv("PIPELINE_DATABASE_URL", "postgresql://u:p@ss@db.example/pipeline")
    reset_settings()
    shown = repr(get_settings().public_dict())
    for leaked in ("s3c", "retPW", "pass word", "word@", "p@ss", "ss@db"):
        assert leaked not in shown, shown


def test_min_weight_above_max_weight_is_refused_naming_both(
        clean: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_MIN_WEIGHT", "0.3")
    monkeypatch.setenv("PIPELINE_MAX_WEIGHT", "0.2")
    reset_settings()
    with pytest.raises(ConfigError) as refused:
        get_settings()
    text = str(refused.value)
    assert "PIPELINE_MIN_WEIGHT (0.3)" in text and "PIPELINE_MAX_WEIGHT (0.2)" in text


def test_redis_holds_a_rotation_batchs_message_as_long_as_the_batch_may_run() -> None:
    # a rotation batch (acks late) may run PIPELINE_ROTATION_TIME_LIMIT: a visibility timeout
    # derived from the steps' limits alone (780 s) had Redis deliver it again mid-run
    import celeryconfig
    from orchestrator.settings import Settings

    settings = Settings(broker_url="redis://127.0.0.1:6379/0", rotation_time_limit=3600)
    timeout = celeryconfig.build(settings)["broker_transport_options"]["visibility_timeout"]
    assert timeout > 3600
    assert settings.longest_step_limit == 360  # the optimize step's: a stopping worker's wait
