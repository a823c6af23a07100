"""Redis (broker and result backend) away for longer than a step's time limits.

Reproduces issue 13 item 3: with Redis shut down for longer than the soft limit, the worker
hung with no pool children (``Unrecoverable error: UnpicklingError``), jobs stayed queued, and
a job whose step had finished ended failed with TimeLimitExceeded. The worker here runs under
a supervisor that restarts it when it exits (as systemd's ``Restart=always`` does); a worker
that hangs instead is a failure.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from orchestrator.celery import create_app
from orchestrator.jobs.canvas import Orchestrator
from orchestrator.settings import reset_settings
from orchestrator.store import jobs as store
from orchestrator.store.states import JobState
from tests.conftest import Env
from tests.fault.conftest import (
    check_outcome,
    free_port,
    reference_weights,
    start_redis,
    wait_all_final,
)

pytestmark = [pytest.mark.slow, pytest.mark.fault, pytest.mark.redis, pytest.mark.postgres]
PARAMS = {"portfolio_size": 12}
SOFT, HARD = 5, 8
STEPS = ("VALIDATE", "OPTIMIZE", "ARCHIVE")


def _configure(env: Env, monkeypatch: pytest.MonkeyPatch, **variables: str) -> None:
    for key, value in variables.items():
        env.variables[key] = value
        monkeypatch.setenv(key, value)
    reset_settings()


@pytest.mark.parametrize("times_soft", [2, 10])
def test_redis_away_longer_than_the_soft_limit(servers_env, supervised, beat, sample_csv,
                                               record, tmp_path: Path, monkeypatch,
                                               times_soft: int) -> None:
    # Given a Redis of the test's own (AOF on) as broker and result backend, steps with a
    # small soft limit, and 40 jobs submitted
    port = free_port()
    redis = start_redis(tmp_path, port)
    url = f"redis://127.0.0.1:{port}/0"
    _configure(servers_env, monkeypatch, PIPELINE_BROKER_URL=url, PIPELINE_RESULT_BACKEND=url,
               PIPELINE_FAULTS="sleep:step.validate:0.2", PIPELINE_RECOVERY_INTERVAL="2",
               PIPELINE_REQUEUE_LOST_AFTER="10", PIPELINE_LEASE_GRACE_SECONDS="2",
               PIPELINE_VISIBILITY_TIMEOUT="30",
               **{f"PIPELINE_{s}_SOFT_TIME_LIMIT": str(SOFT) for s in STEPS},
               **{f"PIPELINE_{s}_TIME_LIMIT": str(HARD) for s in STEPS})
    workers = supervised(servers_env)
    beat(servers_env)
    orch = Orchestrator(servers_env.settings, app=create_app(servers_env.settings))
    ids = [orch.submit(sample_csv, PARAMS) for _ in range(40)]
    try:
        # When Redis is shut down 1 s in and comes back after times_soft × the soft limit
        time.sleep(1.0)
        redis.terminate()
        redis.wait(10)
        time.sleep(times_soft * SOFT)
        redis = start_redis(tmp_path, port)
        # Then every job ends, completed, none by a time limit, and nothing stays queued
        jobs = wait_all_final(ids, timeout=300)
        outcome = check_outcome(servers_env, ids, reference_weights(sample_csv, PARAMS))
        errors = [j.error for j in jobs if j.state is not JobState.COMPLETED]
        assert outcome.completed == len(ids), errors
        # And the worker goes on (the one running now completes a new job); it never hangs
        again = orch.submit(sample_csv, PARAMS)
        assert wait_all_final([again], timeout=120)[0].state is JobState.COMPLETED
        # And a worker that could not go on exited non-zero (so its supervisor restarted it)
        assert all(code != 0 for code, _ in workers.exits), workers.exits
    finally:
        workers.stop()
        redis.terminate()
        redis.wait(10)
    record(f"Redis away {times_soft}× the soft limit ({times_soft * SOFT} s)", outcome)
    assert not [e for i in ids for e in store.history(i)
                if "TimeLimitExceeded" in (e.detail or "")]
