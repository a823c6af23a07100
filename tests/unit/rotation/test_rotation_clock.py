"""The rotation tests' old jobs cut into the same batches at any hour the suite runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from orchestrator.rotation.plan import Candidate, plan_batches
from tests.rotation_support import days_ago

HOURS = ["00:00:01", "09:00:00", "17:30:00", "23:59:59"]


@pytest.mark.parametrize("clock", HOURS)
def test_the_operators_600_jobs_cut_into_the_same_batches_at_any_hour(clock):
    # Given the clock at this hour (injected), and the operator test's layout: 600 jobs four
    # minutes apart from days_ago(41) (tests/integration/test_rotation_worker.py)
    now = datetime.fromisoformat(f"2026-11-30T{clock}+00:00")
    start = days_ago(41, now)
    found = [Candidate(f"j{i:03d}", "completed", start + i * timedelta(minutes=4), None, 0)
             for i in range(600)]
    # When rotation plans batches of 100 (one UTC day each)
    batches = list(plan_batches(found, 100))
    # Then the batches are the same at every hour: batch 0 holds 100 jobs
    assert [b.jobs for b in batches] == [100, 100, 100, 60, 100, 100, 40]
    # And the jobs are 41-42 days old: past the 30-day retention at that hour
    assert timedelta(days=41) <= now - start < timedelta(days=42)


def test_days_ago_is_midnight_utc_whatever_the_time_zone_of_now():
    # Given 20:30 on 30 November in New York (01:30 UTC on 1 December)
    new_york = datetime(2026, 11, 30, 20, 30, tzinfo=timezone(timedelta(hours=-5)))
    # Then two days ago is 29 November, midnight UTC
    assert days_ago(2, new_york) == datetime(2026, 11, 29, tzinfo=UTC)
