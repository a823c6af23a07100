"""Watching a scripted workload from the terminal: stats, live status, progress, logs.

One workload on the embedded default serves every story here (a worker start is the slow
part): 3 jobs that complete, 2 that fail validation and a batch of 2 (one of each), submitted
while no worker runs (so the queues hold them), then worked off by a real worker that logs JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from orchestrator.celery import create_app
from orchestrator.jobs.canvas import Orchestrator
from orchestrator.settings import reset_settings
from orchestrator.store import db
from orchestrator.store import jobs as store
from orchestrator.store.states import JobState
from tests.conftest import SAMPLE, Env, Process
from tests.support import wait_final

pytestmark = pytest.mark.slow
GOOD, BAD = 3, 2
SHORT_CSV = "date,AAA,BBB\n2020-01-01,1,2\n2020-01-02,1.1,2.1\n"


@dataclass
class Workload:
    env: Env
    good: list[str]
    bad: list[str]
    batch_id: str
    batch: list[str]
    before_worker: dict
    worker_log: Path
    after_worker: dict = field(default_factory=dict)

    def pipeline(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cli.main", *args], env=self.env.environ(),
                              cwd=self.env.root, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def workload(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workload]:
    root = tmp_path_factory.mktemp("workload")
    env = Env(root, {"PIPELINE_SHARE_DIR": str(root / "share"),
                     "PIPELINE_VAR_DIR": str(root / "var"), "PIPELINE_LOG_FORMAT": "json"})
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.variables.items():
            patch.setenv(key, value)
        reset_settings()
        db._forget_after_fork()
        db.migrate()
        yield _run(env, root)
    reset_settings()
    db._forget_after_fork()


def _run(env: Env, root: Path) -> Workload:
    short = root / "short.csv"
    short.write_text(SHORT_CSV)
    batch_dir = root / "batch"
    batch_dir.mkdir()
    (batch_dir / "a.csv").write_bytes(SAMPLE.read_bytes())
    (batch_dir / "b.csv").write_text(SHORT_CSV)
    orch = Orchestrator(env.settings, app=create_app(env.settings))
    # Given jobs submitted while no worker runs
    good = [orch.submit(SAMPLE, {"portfolio_size": 10 + i}) for i in range(GOOD)]
    bad = [orch.submit(short, {}) for _ in range(BAD)]
    batch_id = orch.submit_batch(sorted(batch_dir.iterdir()))
    batch = [j.id for j in store.list_jobs(batch_id=batch_id)]
    before = json.loads(Workload(env, [], [], "", [], {}, root).pipeline(
        "stats", "--json").stdout)
    # When a worker works them off
    log = root / "worker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "orchestrator", "worker", "-Q",
             "validate,optimize,archive,maintenance", "-c", "2", "-n", "wl@%h", "--loglevel",
             "INFO", "--without-gossip", "--without-mingle"],
            env=env.environ(), cwd=root, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
    worker = Process(proc, log)
    try:
        wait_final(good + bad + batch, timeout=120)
        loaded = Workload(env, good, bad, batch_id, batch, before, log)
        loaded.after_worker = json.loads(loaded.pipeline("stats", "--json").stdout)
    finally:
        worker.stop()
    return loaded


def test_stats_count_the_queued_work_before_a_worker_runs(workload):
    # Given the workload submitted with no worker running
    before = workload.before_worker
    # Then the broker's validate queue holds one message per job, the rest are empty
    assert before["queues"] == {"validate": GOOD + BAD + 2, "optimize": 0, "archive": 0,
                                "maintenance": 0}
    assert before["jobs_by_state"]["queued"] == GOOD + BAD + 2
    assert before["oldest_queued_seconds"] > 0
    assert before["workers"] == [] and before["finished"]["total"] == 0


def test_stats_match_the_scripted_workload(workload):
    # When `pipeline stats --json` runs after the worker finished the workload
    figures = workload.after_worker
    completed, failed = GOOD + 1, BAD + 1
    # Then the counts, rates and durations are the workload's
    assert figures["finished"] == {"completed": completed, "failed": failed, "cancelled": 0,
                                   "total": completed + failed}
    assert figures["jobs_by_state"]["completed"] == completed
    assert figures["jobs_by_state"]["failed"] == failed
    assert figures["failure_rate"] == round(failed / (completed + failed), 4)
    assert figures["throughput_per_minute"] == round((completed + failed) / 60, 4)
    durations = figures["durations"]
    assert durations["validate"]["count"] == completed + failed
    assert durations["optimize"]["count"] == durations["archive"]["count"] == completed
    assert durations["end_to_end"]["count"] == completed
    assert 0 < durations["validate"]["p50"] <= durations["validate"]["p95"]
    assert durations["end_to_end"]["p95"] >= durations["optimize"]["p95"]
    # And the worker answered the ping, the queues are empty, nothing waits
    assert len(figures["workers"]) == 1 and figures["workers"][0].startswith("wl@")
    assert set(figures["queues"].values()) == {0}
    assert figures["oldest_queued_seconds"] is None and figures["errors"] == {}


def test_status_follow_exits_with_the_jobs_outcome(workload):
    # When a completed, a failed and a mixed batch are followed
    done = workload.pipeline("status", workload.good[0][:10], "--follow")
    failed = workload.pipeline("status", workload.bad[0], "--follow")
    batch = workload.pipeline("status", workload.batch_id[:10], "--follow")
    # Then each exits with its outcome, showing the bars (and a total for the batch)
    assert done.returncode == 0, done.stderr
    assert "100.0%" in done.stdout and "completed" in done.stdout
    assert failed.returncode == 7 and "failed" in failed.stdout
    assert batch.returncode == 7 and "total (2 jobs)" in batch.stdout
    assert "2/2 ended, 1 failed" in batch.stdout


def test_batch_status_shows_each_job_and_the_total(workload):
    shown = workload.pipeline("status", workload.batch_id, "--json")
    table = workload.pipeline("status", workload.batch_id)
    assert shown.returncode == 0, shown.stderr
    states = sorted(j["state"] for j in json.loads(shown.stdout)["jobs"])
    assert states == ["completed", "failed"]
    assert f"batch {workload.batch_id}: 2 jobs, 2 ended, 100% done" in table.stdout


def test_steps_leave_their_progress_in_the_task_state_meta(workload):
    app = create_app(workload.env.settings)
    job = workload.good[0]
    # Then each step's task reads SUCCESS with the job, the step and the job's percentage
    validate = app.AsyncResult(f"{job}.validate.0")
    optimize = app.AsyncResult(f"{job}.optimize.0")
    assert validate.state == "SUCCESS"
    assert validate.info == {"job_id": job, "step": "validate", "step_progress": 1.0,
                             "progress": 30.0, "outcome": "ok"}
    assert optimize.info["progress"] == 90.0
    # And the job row says 100 %
    assert store.get_job(job).progress == 100.0


def test_worker_log_lines_carry_the_job_and_step(workload):
    lines = [json.loads(line) for line in workload.worker_log.read_text().splitlines()
             if line.startswith("{")]
    bad = workload.bad[0]
    # Then the step's own line about the failure names the job and the step
    failure = [r for r in lines if r["job_id"] == bad and "failed in validate" in r["message"]]
    assert failure and failure[0]["step"] == "validate" and failure[0]["logger"] == "tasks.base"
    # And Celery's lines about each of a job's tasks do too
    good = workload.good[0]
    steps = {r["step"] for r in lines if r["job_id"] == good}
    assert steps == {"validate", "optimize", "archive"}
    assert all(r["job_id"] is None for r in lines if "ready." in r["message"])
    assert store.get_job(good).state == JobState.COMPLETED
