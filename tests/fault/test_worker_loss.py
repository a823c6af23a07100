"""Workers killed with SIGKILL mid-step, and a chaos loop: every job still ends once."""

from __future__ import annotations

import os
import random
import time

import pytest

from orchestrator.celery import create_app
from orchestrator.jobs.canvas import Orchestrator
from orchestrator.store import jobs as store
from orchestrator.store.states import FINAL, JobState
from tests.fault.conftest import (
    check_outcome,
    kill_group,
    reference_weights,
    wait_all_final,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.fault]
PARAMS = {"portfolio_size": 12}


def _at_step(job_ids: list[str], step: str) -> bool:
    return any((j := store.get_job(i)).state is JobState.PROCESSING and j.step == step
               for i in job_ids)


def _kill_mid_step(env, worker, beat, sample_csv, record, step: str, label: str) -> None:
    # Given a worker whose <step> takes 3 s, and beat running recovery
    env.variables["PIPELINE_FAULTS"] = f"sleep:step.{step}:3"
    first = worker(env, concurrency=2)
    del env.variables["PIPELINE_FAULTS"]
    beat(env)
    orch = Orchestrator(env.settings, app=create_app(env.settings))
    ids = [orch.submit(sample_csv, PARAMS) for _ in range(4)]
    # When the worker is SIGKILLed while a job is in <step>, and a new worker starts
    wait_for(lambda: _at_step(ids, step), 60, f"a job in {step}")
    kill_group(first)
    worker(env, concurrency=2)
    # Then every job completes once, with the same weights as a clean run
    wait_all_final(ids, timeout=120)
    outcome = check_outcome(env, ids, reference_weights(sample_csv, PARAMS))
    record(label, outcome)
    assert outcome.completed == len(ids)
    assert any("redelivered" in (e.detail or "") or "recovered" in (e.detail or "")
               for i in ids for e in store.history(i))


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.parametrize("step", ["validate", "optimize", "archive"])
def test_worker_killed_in_each_step_on_redis(fault_env, worker, beat, sample_csv, record, step):
    _kill_mid_step(fault_env, worker, beat, sample_csv, record, step,
                   f"SIGKILL worker in {step} (Redis + PostgreSQL)")


@pytest.mark.parametrize("step", ["validate", "optimize"])
def test_worker_killed_in_a_step_on_the_embedded_default(embedded_fault_env, worker, beat,
                                                         sample_csv, record, step):
    # The embedded broker loses fetched messages: the status store and recovery bring them back
    _kill_mid_step(embedded_fault_env, worker, beat, sample_csv, record, step,
                   f"SIGKILL worker in {step} (embedded default)")


@pytest.mark.redis
@pytest.mark.postgres
def test_chaos_loop_kills_a_random_worker_every_two_seconds(fault_env, worker, beat, sample_csv,
                                                            record):
    # Given two workers, beat, and N jobs (200 for docs/reliability.md; fewer in CI)
    count = int(os.environ.get("PIPELINE_FAULT_JOBS", "40"))
    fault_env.variables["PIPELINE_FAULTS"] = "sleep:step.optimize:0.3"  # so kills land mid-work
    workers = [worker(fault_env, concurrency=1) for _ in range(2)]
    beat(fault_env)
    orch = Orchestrator(fault_env.settings, app=create_app(fault_env.settings))
    ids = [orch.submit(sample_csv, PARAMS) for _ in range(count)]
    # When a random worker is SIGKILLed every 2 s and restarted, until the jobs are done
    kills, rng = 0, random.Random(7)
    deadline = time.monotonic() + 60 + count * 2
    while time.monotonic() < deadline and not all(
            store.get_job(i).state in FINAL for i in ids):
        time.sleep(2)
        victim = rng.randrange(len(workers))
        kill_group(workers[victim])
        kills += 1
        workers[victim] = worker(fault_env, concurrency=1)
    # Then, once the killing stops, every job ends, once, with a clean run's weights
    wait_all_final(ids, timeout=180)
    outcome = check_outcome(fault_env, ids, reference_weights(sample_csv, PARAMS))
    record(f"chaos: SIGKILL a random worker every 2 s ({kills} kills)", outcome)
    assert outcome.completed == count
