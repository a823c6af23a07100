"""Storage rotation through real ``celery worker`` processes: the batches as a Celery group on
the maintenance queue, progress as task state, the CLI with tokens, the beat task."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import timedelta

import pytest

from orchestrator.celery import create_app
from orchestrator.rotation import journal, runner
from orchestrator.rotation.dispatch import dispatch_group, task_id
from orchestrator.settings import reset_settings
from orchestrator.store import jobs as store
from orchestrator.store.jobs import now
from tests.rotation_support import check_consistent, days_ago, make_jobs

pytestmark = pytest.mark.slow


def configure(env, monkeypatch, **values: str) -> None:  # type: ignore[no-untyped-def]
    """Rotation settings for this process and for the processes it starts."""
    for key, value in values.items():
        env.variables[f"PIPELINE_{key}"] = value
        monkeypatch.setenv(f"PIPELINE_{key}", value)
    reset_settings()


def cli(env, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    extra = {"PIPELINE_TOKEN": token} if token else {}
    return subprocess.run([sys.executable, "-m", "cli.main", *args],
                          env={**env.environ(), **extra}, cwd=env.root, capture_output=True,
                          text=True, timeout=180)


def wait_run(run_id: str, timeout: float = 120) -> journal.Run:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = journal.get_run(run_id)
        if run.finished:
            return run
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} not finished: {journal.get_run(run_id)}")


def test_an_operator_rotates_through_the_workers_and_others_are_refused(env, worker,
                                                                        monkeypatch):
    # Given 600 old jobs over two days and 20 recent ones, batches of 100 in two lanes
    configure(env, monkeypatch, ROTATION_BATCH_SIZE="100", ROTATION_CONCURRENCY="2")
    (env.share / "archive").mkdir(parents=True, exist_ok=True)
    old = make_jobs(env.share, 600, finished_at=days_ago(41),
                    spacing=timedelta(minutes=4))
    make_jobs(env.share, 20, finished_at=now() - timedelta(days=3))
    worker(env, queues="maintenance")
    # And tokens: the first (admin) made without one, then an operator and a viewer
    admin = cli(env, "token", "create", "--role", "admin").stdout.strip()
    operator = cli(env, "token", "create", "--role", "operator", token=admin).stdout.strip()
    viewer = cli(env, "token", "create", "--role", "viewer", token=admin).stdout.strip()
    # When someone without a token, or with a viewer's, asks for a rotation: refused
    nobody = cli(env, "rotate")
    assert nobody.returncode == 9 and "needs a token with role operator" in nobody.stderr
    assert cli(env, "rotate", token=viewer).returncode == 10
    # When the operator runs it
    done = cli(env, "rotate", token=operator)
    # Then it ends with a summary, every old job archived, the recent ones untouched
    assert done.returncode == 0, done.stdout + done.stderr
    assert "600 of 600" in done.stdout and "completed" in done.stdout
    assert "with settings" in done.stderr and "rotation_batch_size" in done.stderr
    assert check_consistent(env.share) == {"archived": 600, "completed": 20}
    # And each batch ran as a Celery task whose result is kept under a known id
    run = journal.list_runs(1)[0]
    assert run.actor.startswith("operator-") and run.planned_batches >= 6
    app = create_app(env.settings)
    outcome = app.AsyncResult(task_id(run.id, 0)).get(timeout=10)
    assert outcome["status"] == "archived" and outcome["jobs"] == 100
    assert store.get_job(old[0]).archive_path == outcome["archive"]


def test_progress_shows_as_task_state_while_a_throttled_batch_runs(env, worker, monkeypatch):
    # Given 300 old jobs (about 600 kB) and a budget of 150 kB/s: one batch of ~4 s
    configure(env, monkeypatch, ROTATION_BYTES_PER_SECOND="150000")
    make_jobs(env.share, 300, finished_at=days_ago(40))
    worker(env, queues="maintenance")
    app = create_app(env.settings)
    # When a run is dispatched as a Celery group
    started = time.monotonic()
    run = runner.start_run(env.settings, trigger="test", dispatch=lambda *a: dispatch_group(
        *a, app=app))
    # Then while it runs its task shows PROGRESS with how far it got
    seen = []
    while not journal.get_run(run.id).finished and time.monotonic() - started < 60:
        result = app.AsyncResult(task_id(run.id, 0))
        if result.state == "PROGRESS":
            seen.append(result.info)
        time.sleep(0.2)
    assert seen, "no PROGRESS state seen"
    assert {"jobs_done", "jobs_total", "bytes_done", "phase"} <= set(seen[-1])
    assert seen[-1]["jobs_total"] == 300
    # And the budget held: ~600 kB took at least 600/150 s
    final = wait_run(run.id)
    elapsed = (final.finished_at - final.dispatched_at).total_seconds()
    assert final.status == "completed" and final.bytes_done / elapsed <= 150_000 * 1.05


def test_the_beat_task_starts_one_run_per_schedule_window(env, worker, monkeypatch):
    # Given old jobs and a worker
    make_jobs(env.share, 40, finished_at=days_ago(40))
    worker(env, queues="maintenance")
    app = create_app(env.settings)
    # When beat's task arrives twice in the same minute (two beats: celery issue 2856)
    app.send_task("pipeline.rotate", kwargs={"trigger": "beat"})
    app.send_task("pipeline.rotate", kwargs={"trigger": "beat"})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(r.finished for r in journal.list_runs()):
        time.sleep(0.2)
    time.sleep(1.0)  # the second delivery has had its chance
    # Then one run did the work
    runs = journal.list_runs()
    assert len(runs) == 1 and runs[0].trigger == "beat", runs
    assert wait_run(runs[0].id).jobs_done == 40


@pytest.mark.redis
@pytest.mark.postgres
def test_rotation_on_redis_and_postgresql(servers_env, worker, monkeypatch):
    # Given Redis as broker and PostgreSQL as the status store, three days of old jobs
    configure(servers_env, monkeypatch, ROTATION_BATCH_SIZE="80", ROTATION_CONCURRENCY="2")
    ids = []
    for days in (40, 41, 42):
        ids += make_jobs(servers_env.share, 100, finished_at=days_ago(days),
                         spacing=timedelta(seconds=30),
                         state="failed" if days == 41 else "completed")
    worker(servers_env, queues="maintenance")
    app = create_app(servers_env.settings)
    # When a run goes through the workers
    run = runner.start_run(servers_env.settings, trigger="test",
                           dispatch=lambda *a: dispatch_group(*a, app=app))
    # Then all 300 are archived (the database may hold other tests' recent jobs: untouched)
    final = wait_run(run.id)
    assert final.status == "completed" and final.jobs_done == 300, final
    assert check_consistent(servers_env.share, only=ids) == {"archived": 300}
    # And a job restores
    restored = cli(servers_env, "restore", ids[150], "--json")
    assert restored.returncode == 0, restored.stderr
    assert json.loads(restored.stdout)["files"] == 3
