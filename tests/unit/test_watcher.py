"""Unit tests of orchestrator.intake.watcher: stories (given, when, then) on a real share.

A real Orchestrator publishes to the embedded broker with no worker running, so a submitted
job stays queued and its first step waits as a message file in var/broker/queue/.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.intake.watcher import Watcher
from orchestrator.jobs.canvas import Orchestrator
from orchestrator.store import jobs as store
from orchestrator.store.states import JobState


@pytest.fixture
def watcher(env, monkeypatch: pytest.MonkeyPatch) -> Watcher:
    """A watcher whose two looks may come back to back, that never waits for a job file's
    CSV, and that runs identical drops (these stories are about the scan itself)."""
    from orchestrator.celery import create_app
    from orchestrator.settings import reset_settings

    for key in ("PIPELINE_SETTLE_SECONDS", "PIPELINE_JOB_FILE_WAIT", "PIPELINE_DEDUPE_WINDOW"):
        monkeypatch.setenv(key, "0")
    reset_settings()
    return Watcher(Orchestrator(env.settings, app=create_app(env.settings)))


def input_names(env) -> list[str]:
    return sorted(p.name for p in (env.share / "input").iterdir())


def step_messages(env, step: str = "validate") -> list[Path]:
    return sorted((env.settings.broker_folder / "queue").glob(f"*.{step}.msg"))


def test_a_dropped_csv_is_submitted_on_the_second_scan(env, watcher: Watcher,
                                                       sample_csv: Path) -> None:
    # given a CSV dropped in input/
    env.drop(sample_csv, "prices.csv")
    # when the watcher first sees it, then it waits: the file may still be growing
    assert watcher.scan_once() == []
    assert input_names(env) == ["prices.csv"]
    # when it sees it unchanged a second time, then it submits it as one queued job
    (job_id,) = watcher.scan_once()
    job = store.get_job(job_id)
    assert (job.state, job.input_name, job.input_size) == (JobState.QUEUED, "prices.csv",
                                                           sample_csv.stat().st_size)
    # and the file moved into the job's folder, leaving input/ empty
    assert input_names(env) == []
    claimed = env.share / "processing" / job_id / "input" / "prices.csv"
    assert claimed.read_bytes() == sample_csv.read_bytes()
    # and the first step waits on the broker
    assert len(step_messages(env)) == 1
    # and a further scan submits nothing more
    assert watcher.scan_once() == []


def test_temporary_names_are_never_submitted(env, watcher: Watcher, sample_csv: Path) -> None:
    # given files still being written or owned by an editor, and other kinds of file
    names = [".prices.csv", "~$prices.csv", "prices.csv.part", "prices.tmp", "notes.txt"]
    for name in names:
        (env.share / "input" / name).write_bytes(sample_csv.read_bytes())
    # when the watcher scans three times, then none is submitted and all stay in place
    assert [watcher.scan_once() for _ in range(3)] == [[], [], []]
    assert input_names(env) == sorted(names)
    assert store.list_jobs() == []


def test_a_growing_file_waits_until_it_holds_still(env, watcher: Watcher) -> None:
    # given a CSV being written
    path = env.share / "input" / "prices.csv"
    path.write_text("date,A\n")
    assert watcher.scan_once() == []
    # when it grew between two scans, then it is not submitted
    with path.open("a") as handle:
        handle.write("2024-01-02,1\n")
    assert watcher.scan_once() == []
    assert input_names(env) == ["prices.csv"]
    # and once it held still between two scans, it is
    assert len(watcher.scan_once()) == 1
    assert input_names(env) == []


def test_a_job_file_and_its_csv_make_one_job(env, watcher: Watcher, sample_csv: Path) -> None:
    # given a CSV and a job file naming it with a parameter
    env.drop(sample_csv, "prices.csv")
    (env.share / "input" / "job.json").write_text(
        json.dumps({"input_file": "prices.csv", "portfolio_size": 15}))
    # when the watcher scans twice
    submitted = watcher.scan_once() + watcher.scan_once()
    # then one job is made, the job file's, with its parameter
    assert len(submitted) == 1
    assert [j.id for j in store.list_jobs()] == submitted
    job = store.get_job(submitted[0])
    assert job.input_name == "job.json"
    assert job.params["portfolio_size"] == 15
    # and its folder holds both files, and input/ is empty
    folder = env.share / "processing" / job.id / "input"
    assert sorted(p.name for p in folder.iterdir()) == ["job.json", "prices.csv"]
    assert input_names(env) == []
    assert len(step_messages(env)) == 1
    assert watcher.scan_once() == []


def test_a_job_file_waits_for_its_csv_to_hold_still(env, watcher: Watcher) -> None:
    # given a job file and the CSV it names, both seen once
    (env.share / "input" / "job.json").write_text(json.dumps({"input_file": "prices.csv"}))
    csv = env.share / "input" / "prices.csv"
    csv.write_text("date,A\n")
    assert watcher.scan_once() == []
    # when the CSV is still being written at the next scan
    with csv.open("a") as handle:
        handle.write("2024-01-02,1\n")
    # then nothing is submitted yet: the job's input is not complete
    assert watcher.scan_once() == []
    assert input_names(env) == ["job.json", "prices.csv"]


def test_a_bad_job_file_becomes_a_failed_job(env, watcher: Watcher) -> None:
    # given a job file naming a CSV that does not exist
    (env.share / "input" / "job.json").write_text(json.dumps({"input_file": "missing.csv"}))
    # when it is submitted
    watcher.scan_once()
    (job_id,) = watcher.scan_once()
    # then the job failed at once, its folder in failed/ says why, and nothing was published
    job = store.get_job(job_id)
    assert job.state is JobState.FAILED
    error = json.loads((env.share / "failed" / job_id / "error.json").read_text())
    assert "input_file 'missing.csv' does not exist in the share" in error["message"]
    assert (env.share / "failed" / job_id / "input" / "job.json").is_file()
    assert step_messages(env) == []


def test_two_csvs_make_two_jobs(env, watcher: Watcher, sample_csv: Path) -> None:
    env.drop(sample_csv, "a.csv")
    env.drop(sample_csv, "b.csv")
    watcher.scan_once()
    submitted = watcher.scan_once()
    assert sorted(store.get_job(j).input_name for j in submitted) == ["a.csv", "b.csv"]
    assert len(step_messages(env)) == 2
