"""The same pipeline on the machine's real servers: Redis or RabbitMQ, and PostgreSQL."""

from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import create_engine, func, select

from orchestrator.celery import create_app
from orchestrator.jobs.canvas import Orchestrator
from orchestrator.store import jobs as store
from orchestrator.store.db import normalize_url
from orchestrator.store.states import JobState
from orchestrator.store.tables import job_events
from tests.support import wait_final

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]


def test_jobs_and_a_batch_run_on_redis_and_postgresql(servers_env, worker, sample_csv,
                                                      tmp_path):
    # Given a worker on Redis with the status store in PostgreSQL
    worker(servers_env)
    orch = Orchestrator(servers_env.settings, app=create_app(servers_env.settings))
    # When five jobs and a batch of three are submitted
    ids = [orch.submit(sample_csv, {"portfolio_size": 10 + i}) for i in range(5)]
    folder = tmp_path / "batch"
    folder.mkdir()
    for i in range(3):
        (folder / f"b{i}.csv").write_bytes(sample_csv.read_bytes())
    batch_id = orch.submit_batch(sorted(folder.iterdir()))
    # Then all complete, with exactly the holdings asked for
    jobs = wait_final(ids)
    assert all(j.state is JobState.COMPLETED for j in jobs), [j.error for j in jobs]
    assert [j.result["holdings"] for j in jobs] == [10, 11, 12, 13, 14]
    summary = servers_env.share / "completed" / "batches" / batch_id / "summary.json"
    deadline = time.monotonic() + 60
    while not summary.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert json.loads(summary.read_text())["by_state"] == {"completed": 3}
    # And the history lives in PostgreSQL: six events per job
    engine = create_engine(normalize_url(servers_env.settings.database))
    with engine.connect() as conn:
        count = conn.execute(select(func.count()).select_from(job_events)
                             .where(job_events.c.job_id.in_(ids))).scalar_one()
    engine.dispose()
    assert engine.dialect.name == "postgresql" and count == 6 * 5


@pytest.mark.rabbitmq
def test_jobs_run_with_rabbitmq_as_the_broker(servers_env, worker, sample_csv, monkeypatch):
    from orchestrator.settings import reset_settings
    from tests.conftest import server_url

    # Given RabbitMQ as the broker (Redis keeps the chord results, PostgreSQL the history)
    servers_env.variables["PIPELINE_BROKER_URL"] = server_url("rabbitmq")
    monkeypatch.setenv("PIPELINE_BROKER_URL", server_url("rabbitmq"))
    reset_settings()
    app = create_app(servers_env.settings)
    app.control.purge()
    worker(servers_env)
    orch = Orchestrator(servers_env.settings, app=app)
    # When three jobs are submitted
    ids = [orch.submit(sample_csv, {"objective": "max_sharpe"}) for _ in range(3)]
    # Then they complete
    jobs = wait_final(ids)
    assert all(j.state is JobState.COMPLETED for j in jobs), [j.error for j in jobs]
    assert all(store.history(j)[-1].to_state == "completed" for j in ids)
