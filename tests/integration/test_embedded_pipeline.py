"""Jobs end to end on the embedded default, with a real ``celery worker`` process."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest

from orchestrator.celery import create_app
from orchestrator.jobs.canvas import Orchestrator
from orchestrator.store import jobs as store
from orchestrator.store.states import JobState
from tests.support import wait_final

pytestmark = pytest.mark.slow


def orchestrator_for(env) -> Orchestrator:
    return Orchestrator(env.settings, app=create_app(env.settings))


def test_a_csv_becomes_a_completed_job_with_results_and_full_history(env, worker, sample_csv):
    # Given a worker on the embedded default
    worker(env)
    orch = orchestrator_for(env)
    # When a price file is submitted
    job_id = orch.submit(sample_csv, {"portfolio_size": 12, "objective": "max_sharpe"})
    (job,) = wait_final([job_id])
    # Then the job completed, its folder holds the results, and every transition is recorded
    assert job.state is JobState.COMPLETED, job.error
    folder = env.share / "completed" / job_id
    with open(folder / "weights.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 12
    assert abs(sum(float(r["weight"]) for r in rows) - 1) < 1e-6
    report = json.loads((folder / "report.json").read_text())
    assert report["params"]["objective"] == "max_sharpe"
    assert report["quality"]["tickers_read"] == 60
    path = [(e.from_state, e.to_state, e.step) for e in store.history(job_id)]
    assert path == [(None, "pending", None), ("pending", "queued", None),
                    ("queued", "processing", "validate"),
                    ("processing", "processing", "optimize"),
                    ("processing", "processing", "archive"),
                    ("processing", "completed", "archive")]
    assert not (env.share / "processing" / job_id).exists()


def test_bad_data_fails_its_job_with_the_row_and_column_and_others_still_run(
        env, worker, sample_csv, tmp_path):
    # Given a worker and a file with a non-numeric cell on line 11 in column AMD
    worker(env)
    orch = orchestrator_for(env)
    lines = sample_csv.read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[10].split(",")
    cells[header.index("AMD")] = "n/a?"
    lines[10] = ",".join(cells)
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    # When it is submitted between two good files
    ids = [orch.submit(sample_csv), orch.submit(bad), orch.submit(sample_csv)]
    jobs = wait_final(ids)
    # Then only the bad job failed, with a precise reason in the store and in error.json
    assert [j.state for j in jobs] == [JobState.COMPLETED, JobState.FAILED, JobState.COMPLETED]
    error = json.loads((env.share / "failed" / ids[1] / "error.json").read_text())
    assert error["step"] == "validate"
    assert "row 11" in error["message"] and "AMD" in error["message"], error
    assert "bad.csv" in error["message"]
    assert store.history(ids[1])[-1].to_state == "failed"


def test_a_batch_ends_with_a_summary_even_when_one_file_fails(env, worker, sample_csv, tmp_path):
    # Given a worker and a folder of three good files and one empty one
    worker(env)
    orch = orchestrator_for(env)
    folder = tmp_path / "batch"
    folder.mkdir()
    for i in range(3):
        (folder / f"p{i}.csv").write_bytes(sample_csv.read_bytes())
    (folder / "empty.csv").write_bytes(b"")
    # When the folder is submitted as a batch
    batch_id = orch.submit_batch(sorted(folder.iterdir()), {"portfolio_size": 10})
    # Then the chord's summary lands in completed/batches with the true counts
    summary_path = env.share / "completed" / "batches" / batch_id / "summary.json"
    deadline = time.monotonic() + 90
    while not summary_path.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    summary = json.loads(summary_path.read_text())
    assert summary["jobs"] == 4
    assert summary["by_state"] == {"completed": 3, "failed": 1}
    failed = [m for m in summary["members"] if m["state"] == "failed"]
    assert failed[0]["input"] == "empty.csv" and "empty" in failed[0]["error"]


def test_a_failed_job_can_be_retried_and_a_queued_one_cancelled(env, worker, sample_csv,
                                                               tmp_path):
    # Given a job that fails because its portfolio is larger than the usable tickers
    orch = orchestrator_for(env)
    job_id = orch.submit(sample_csv, {"portfolio_size": 60, "max_weight": 0.5})
    # And a job queued while no worker runs
    queued_id = orch.submit(sample_csv)
    # When the queued one is cancelled before any worker starts
    orch.cancel(queued_id)
    worker(env)
    (failed,) = wait_final([job_id])
    assert failed.state is JobState.FAILED
    assert "usable tickers" in failed.error["message"]
    # Then the cancelled one never ran and its files are in failed/
    assert store.get_job(queued_id).state is JobState.CANCELLED
    assert (env.share / "failed" / queued_id / "input" / sample_csv.name).exists()
    # When the failed job is retried (same input: it fails the same way, as a new attempt)
    orch.retry(job_id)
    (again,) = wait_final([job_id])
    events = store.history(job_id)
    assert again.state is JobState.FAILED and again.attempts == 2
    assert [e.to_state for e in events].count("failed") == 2
    assert any(e.detail == "retry from validate" for e in events)


def test_watch_picks_up_a_dropped_file(env, worker, spawn, sample_csv):
    # Given a worker and `pipeline watch`
    import sys

    worker(env)
    watcher = spawn([sys.executable, "-m", "cli.main", "watch"], env, "watch")
    # When a CSV is dropped into input/
    started = time.monotonic()
    env.drop(sample_csv, "dropped.csv")
    # Then within seconds a completed job holds its results
    deadline = started + 30
    while time.monotonic() < deadline:
        done = list((env.share / "completed").glob("*/weights.csv"))
        if done:
            break
        time.sleep(0.1)
    assert done, watcher.output()
    assert not any((env.share / "input").iterdir())
    assert (done[0].parent / "report.json").exists()


def test_pipeline_up_runs_everything_and_ctrl_c_stops_every_child(env, spawn, sample_csv):
    import os
    import signal
    import sys

    # Given `pipeline up`
    up = spawn([sys.executable, "-m", "cli.main", "up", "--concurrency", "1"], env, "up")
    up.wait_for("pipeline up:")
    up.wait_for("ready.", timeout=60)
    # When a CSV is dropped
    env.drop(sample_csv)
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline and not list((env.share / "completed").glob("*/report.json")):
        time.sleep(0.1)
    # Then it completes, and Ctrl-C (SIGINT to the group) stops up and its children
    assert list((env.share / "completed").glob("*/report.json")), up.output()[-3000:]
    children = _children(up.proc.pid)
    assert len(children) >= 2
    os.killpg(up.proc.pid, signal.SIGINT)
    assert up.proc.wait(40) == 0
    time.sleep(0.5)
    assert not [p for p in children if Path(f"/proc/{p}").exists()
                and "zombie" not in Path(f"/proc/{p}/status").read_text()]


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry.name))
    return out
