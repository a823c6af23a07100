"""Rotation's settings, schedule, throttle and command line, without a worker."""

from __future__ import annotations

import pytest
from celery.schedules import crontab
from click.testing import CliRunner

import celeryconfig
from cli.main import pipeline
from orchestrator.errors import ConfigError
from orchestrator.rotation import runner
from orchestrator.rotation.dispatch import canvas, lanes_for
from orchestrator.rotation.plan import BatchSpec
from orchestrator.rotation.throttle import Throttle
from orchestrator.settings import Settings, get_settings, reset_settings
from tests.rotation_support import days_ago, make_jobs


def test_beat_runs_rotation_nightly_by_default_and_can_be_switched_off(monkeypatch):
    entry = celeryconfig.build(Settings())["beat_schedule"]["rotate-storage"]
    assert entry["task"] == "pipeline.rotate"
    assert entry["schedule"] == crontab(minute="0", hour="3")
    off = celeryconfig.build(Settings(rotation_schedule="off"))["beat_schedule"]
    assert "rotate-storage" not in off


@pytest.mark.parametrize(("name", "value", "says"), [
    ("ROTATION_SCHEDULE", "0 25 * * *", "PIPELINE_ROTATION_SCHEDULE"),
    ("ROTATION_SCHEDULE", "nightly", "5 fields"),
    ("ROTATION_BATCH_SIZE", "0", "PIPELINE_ROTATION_BATCH_SIZE"),
    ("ROTATION_TASK_RATE_LIMIT", "fast", "PIPELINE_ROTATION_TASK_RATE_LIMIT"),
    ("RETENTION_DAYS_FAILED", "-1", "PIPELINE_RETENTION_DAYS_FAILED"),
    ("AUTH", "maybe", "PIPELINE_AUTH"),
])
def test_bad_rotation_settings_stop_with_the_variable_named(monkeypatch, name, value, says):
    monkeypatch.setenv(f"PIPELINE_{name}", value)
    reset_settings()
    with pytest.raises(ConfigError, match=says):
        get_settings()
    reset_settings()


def test_the_throttle_keeps_to_its_budget_over_time():
    clock = [0.0]

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    throttle = Throttle(100_000, clock=lambda: clock[0], sleep=sleep, burst=0)
    for _ in range(100):
        throttle.spend(10_000)  # 1 MB read as fast as the budget lets it
    assert clock[0] == pytest.approx(10.0, abs=0.25)
    assert Throttle(0).rate is None


def test_batches_are_dealt_to_lanes_and_the_budget_shared():
    settings = Settings(rotation_concurrency=3, rotation_bytes_per_second=9_000_000)
    specs = [BatchSpec(i, "2020-01-01", ("a", "b"), ("c", "d"), 1, 1) for i in range(7)]
    assert lanes_for(settings, 7) == 3 and lanes_for(settings, 2) == 2
    from orchestrator.celery import app

    group = canvas(app, "run1", {}, specs, settings)
    lanes = list(group.tasks)
    assert len(lanes) == 3
    assert [len(getattr(lane, "tasks", [lane])) for lane in lanes] == [3, 2, 2]
    first = lanes[0].tasks[0]
    assert first.options["task_id"] == "rotation.run1-00000" and first.immutable
    assert first.kwargs["rate"] == 9_000_000  # the run's budget, booked together


def test_the_cli_shows_a_summary_when_the_run_ends(share, monkeypatch):
    monkeypatch.setattr(runner, "_celery_dispatch", runner.run_here)
    make_jobs(share.share, 25, finished_at=days_ago(40))
    result = CliRunner().invoke(pipeline, ["rotate", "--older-than", "31d"])
    assert result.exit_code == 0, result.output
    assert "completed" in result.stdout and "25 of 25" in result.stdout
    assert "jobs/s" in result.stdout
    bad = CliRunner().invoke(pipeline, ["rotate", "--older-than", "soon"])
    assert bad.exit_code == 2 and "--older-than" in bad.output
