"""A job's message lost by the broker: stuck-job recovery publishes it again, once.

Issue 13 item 4: a job recorded queued just before Redis went down was in no queue and not
unacked after the restart, and stayed queued for good (recovery looked at the embedded
broker only). Real Redis of the test's own (no persistence: a restart empties it), real
PostgreSQL, real worker; recovery runs in this process, as beat's task would.
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import redis as redis_client

from orchestrator.celery import create_app
from orchestrator.jobs.canvas import Orchestrator
from orchestrator.reconciler.runs import reconcile_runs
from orchestrator.settings import reset_settings
from orchestrator.store import jobs as store
from orchestrator.store.states import JobState
from tests.conftest import Env
from tests.fault.conftest import check_outcome, reference_weights, wait_all_final, wait_for
from tests.own_servers import free_port, start_redis

pytestmark = [pytest.mark.slow, pytest.mark.fault, pytest.mark.redis, pytest.mark.postgres]
PARAMS = {"portfolio_size": 12}


@pytest.fixture
def own_redis(servers_env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """servers_env with a redis-server of the test's own as broker and result backend."""
    port = free_port()
    server = start_redis(tmp_path / "redis", port)
    url = f"redis://127.0.0.1:{port}/0"
    for key, value in {"PIPELINE_BROKER_URL": url, "PIPELINE_RESULT_BACKEND": url,
                       "PIPELINE_REQUEUE_LOST_AFTER": "1"}.items():
        servers_env.variables[key] = value
        monkeypatch.setenv(key, value)
    reset_settings()
    yield servers_env, server, port
    server.stop()


def _republish_all(orch: Orchestrator, count: int) -> int:
    """Run recovery until it has republished ``count`` jobs (they must first be 1 s old)."""
    done = 0

    def step() -> bool:
        nonlocal done
        done += reconcile_runs(orch)["republished"]
        return done >= count

    wait_for(step, 30, f"{count} job(s) republished")
    return done


def test_jobs_lost_in_a_redis_restart_are_published_again(own_redis, worker, sample_csv,
                                                          record, tmp_path: Path) -> None:
    env, server, port = own_redis
    # Given jobs queued on Redis while no worker runs
    orch = Orchestrator(env.settings, app=create_app(env.settings))
    ids = [orch.submit(sample_csv, PARAMS) for _ in range(3)]
    # When Redis restarts without its data (the messages are lost) and a worker starts
    server.stop()
    restarted = start_redis(tmp_path / "redis", port)
    try:
        worker(env, concurrency=2)
        # Then recovery publishes each job again, once, and each completes once
        assert _republish_all(orch, len(ids)) == len(ids)
        wait_all_final(ids, timeout=120)
        outcome = check_outcome(env, ids, reference_weights(sample_csv, PARAMS))
        assert outcome.completed == len(ids)
        # and a later pass finds nothing more to do
        assert reconcile_runs(orch) == {"requeued": 0, "failed": 0, "republished": 0}
    finally:
        restarted.stop()
    record("Redis restarted without its data: lost messages republished", outcome)


def test_a_late_original_after_a_republish_is_refused(own_redis, worker, sample_csv,
                                                      tmp_path: Path) -> None:
    env, _server, port = own_redis
    client = redis_client.Redis(port=port)
    # Given a queued job whose message is in flight: in no queue and not unacked
    orch = Orchestrator(env.settings, app=create_app(env.settings))
    job_id = orch.submit(sample_csv, PARAMS)
    original = client.rpop("validate")
    assert json.loads(original)["headers"]["id"] == f"{job_id}.validate.0"
    # When recovery republishes it, and the original then turns up after all, first in line
    # (kombu pushes on the left and pops on the right)
    assert _republish_all(orch, 1) == 1
    client.rpush("validate", original)
    assert {json.loads(m)["headers"]["id"] for m in client.lrange("validate", 0, -1)} == {
        f"{job_id}.validate.0", f"{job_id}.validate.1"}
    # and a worker takes both
    running = worker(env, concurrency=2)
    # Then the job ran once, by the republished run; the original was refused
    job = wait_all_final([job_id], timeout=120)[0]
    assert (job.state, job.task_id) == (JobState.COMPLETED, f"{job_id}.archive.1")
    wait_for(lambda: f"not run by {job_id}.validate.0" in running.output(), 30,
             "the original refused")
    began = [e for e in store.history(job_id) if e.to_state == "processing"]
    assert [e.step for e in began] == ["validate", "optimize", "archive"]
    check_outcome(env, [job_id], reference_weights(sample_csv, PARAMS))
    client.close()


def test_a_message_of_another_run_is_refused_while_the_job_waits(env) -> None:
    """The rule the worker applies, at the job record: a queued job runs only its own run."""
    from orchestrator.jobs import lifecycle

    job_id = uuid.uuid4().hex
    store.create_jobs([store.NewJob(id=job_id, input_name="p.csv", input_sha256="0" * 64,
                                    input_size=1, params=PARAMS)])
    # Given a job queued for run 1 (republished by recovery, or retried after a lost lease)
    store.transition(job_id, JobState.QUEUED, sources={JobState.QUEUED},
                     task_id=f"{job_id}.validate.1")
    # When the late original (run 0) arrives, then it is refused and the job still waits
    assert lifecycle.begin_step(job_id, "validate", f"{job_id}.validate.0", 60) is None
    assert lifecycle.begin_step(job_id, "optimize", f"{job_id}.optimize.0", 60) is None
    assert store.get_job(job_id).state is JobState.QUEUED
    # and its own run's message is taken, and the next step of that run only
    assert lifecycle.begin_step(job_id, "validate", f"{job_id}.validate.1", 60) is not None
    assert lifecycle.begin_step(job_id, "optimize", f"{job_id}.optimize.0", 60) is None
    assert lifecycle.begin_step(job_id, "optimize", f"{job_id}.optimize.1", 60) is not None


@pytest.mark.rabbitmq
def test_on_rabbitmq_a_lost_message_is_published_again_once(servers_env, worker, sample_csv,
                                                            monkeypatch) -> None:
    from tests.conftest import server_url

    # Given RabbitMQ as the broker and a job queued while no worker runs
    for key, value in {"PIPELINE_BROKER_URL": server_url("rabbitmq"),
                       "PIPELINE_REQUEUE_LOST_AFTER": "1"}.items():
        servers_env.variables[key] = value
        monkeypatch.setenv(key, value)
    reset_settings()
    app = create_app(servers_env.settings)
    app.control.purge()
    orch = Orchestrator(servers_env.settings, app=app)
    job_id = orch.submit(sample_csv, PARAMS)
    # When its message is lost (purged: RabbitMQ's queues cannot be read, only emptied)
    assert app.control.purge() == 1
    # Then recovery publishes it again, once: a later pass leaves it to the new message
    assert _republish_all(orch, 1) == 1
    wait_for(lambda: store.get_job(job_id).updated_at < store.now() - timedelta(seconds=1.5), 10,
             "the job older than requeue_lost_after again")
    assert reconcile_runs(orch)["republished"] == 0
    # and a worker completes it, by the republished run
    worker(servers_env)
    job = wait_all_final([job_id], timeout=120)[0]
    assert (job.state, job.task_id) == (JobState.COMPLETED, f"{job_id}.archive.1")
