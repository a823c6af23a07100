"""`pipeline health`'s beat check: a beat that just started is ok until its first tick is due,
then it must tick (heartbeat rows written as beat writes them, then aged in the database)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import update

from orchestrator.monitoring import heartbeat
from orchestrator.monitoring.health import Unhealthy, check_beat
from orchestrator.store.db import transaction
from orchestrator.store.tables import heartbeats

NEW = re.compile(r"started \d+ s ago \(pid \d+ on .+\), first tick due within 60 s")


def age(name: str, seconds: float) -> None:
    seen = heartbeat.last(name)
    assert seen is not None
    with transaction() as conn:
        conn.execute(update(heartbeats).where(heartbeats.c.name == name)
                     .values(at=seen[0] - timedelta(seconds=seconds)))


def test_a_new_beat_is_ok_until_its_first_tick_is_due(env):
    settings = env.settings  # recovery every 60 s: first tick due 60 s after start, limit 150 s
    with pytest.raises(Unhealthy, match="never ticked"):
        check_beat(None, settings)
    heartbeat.beat_started()
    assert NEW.match(check_beat(None, settings))
    age(heartbeat.BEAT_START, 1000)
    with pytest.raises(Unhealthy, match=r"started 10\d\d s ago and no tick since"):
        check_beat(None, settings)
    # a tick after the start is what counts from then on
    heartbeat.record(heartbeat.BEAT, "sent pipeline.recover_stuck")
    assert check_beat(None, settings).startswith("last tick ")
    # an old tick from before a restart does not fail the new beat
    age(heartbeat.BEAT, 3600)
    heartbeat.beat_started()
    assert NEW.match(check_beat(None, settings))
