"""Rotation runs in one process (no Celery): what rotates, what stays, and what a dry run does."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from click.testing import CliRunner

from cli.main import pipeline
from orchestrator.rotation import journal, runner
from orchestrator.rotation.packing import manifest_path
from orchestrator.settings import reset_settings
from orchestrator.store import jobs as store
from orchestrator.store.jobs import now
from tests.rotation_support import check_consistent, days_ago, make_jobs, rows, run_rotation, tree


def test_a_run_over_1000_old_jobs_archives_exactly_those_past_retention(share):
    # Given 1,000 jobs finished 31-33 days ago (completed, failed and cancelled), and recent
    # ones that finished 29 days ago and yesterday (retention: 30 days)
    old_start = days_ago(33)
    old = (make_jobs(share.share, 900, finished_at=old_start, spacing=timedelta(minutes=4))
           + make_jobs(share.share, 60, finished_at=old_start, state="failed")
           + make_jobs(share.share, 40, finished_at=old_start, state="cancelled"))
    recent = (make_jobs(share.share, 30, finished_at=now() - timedelta(days=29))
              + make_jobs(share.share, 20, finished_at=now() - timedelta(days=1), state="failed"))
    events_before = {j: len(store.history(j)) for j in old[:5]}
    # When a run goes over them
    run = run_rotation(share.settings)
    # Then exactly the 1,000 old ones are archived, the others untouched
    assert run.status == "completed" and run.jobs_done == 1000 and run.planned_jobs == 1000
    assert check_consistent(share.share) == {"archived": 1000, "completed": 30, "failed": 20}
    assert {j for j in old if store.get_job(j).state == "archived"} == set(old)
    assert all(store.get_job(j).state != "archived" for j in recent)
    # And the history is kept, with one more event saying where each job went
    for job_id, count in events_before.items():
        events = store.history(job_id)
        assert len(events) == count + 1
        assert events[-1].to_state == "archived" and "archive/" in events[-1].detail
    # And each archive folder is the day the jobs finished, batches at most 500 jobs
    job = store.get_job(old[0])
    assert job.archive_path.startswith(f"archive/{job.finished_at:%Y/%m/%d}/rot-{run.id}-")
    manifests = list((share.share / "archive").rglob("*.manifest.json"))
    sizes = [len(json.loads(m.read_text())["jobs"]) for m in manifests]
    assert sum(sizes) == 1000 and max(sizes) <= 500 and len(manifests) == run.planned_batches


def test_retention_is_set_per_state(share, monkeypatch):
    # Given completed and failed jobs that finished 10 days ago, failed kept 7 days
    monkeypatch.setenv("PIPELINE_RETENTION_DAYS_FAILED", "7")
    reset_settings()
    ten_days = now() - timedelta(days=10)
    completed = make_jobs(share.share, 5, finished_at=ten_days)
    failed = make_jobs(share.share, 5, finished_at=ten_days, state="failed")
    # When a run goes over them
    run_rotation(share.settings)
    # Then only the failed ones rotate
    assert {store.get_job(j).state for j in failed} == {"archived"}
    assert {store.get_job(j).state for j in completed} == {"completed"}


def test_limit_and_older_than_take_the_oldest_first(share):
    # Given 20 jobs that finished 5 days ago, one minute apart
    ids = make_jobs(share.share, 20, finished_at=now() - timedelta(days=5),
                    spacing=timedelta(minutes=1))
    # When a run takes jobs older than 2 days, at most 7
    run = run_rotation(share.settings, older_than=timedelta(days=2), limit=7)
    # Then the 7 oldest are archived
    assert run.jobs_done == 7
    assert [store.get_job(j).state.value for j in ids] == ["archived"] * 7 + ["completed"] * 13


def test_a_second_run_finds_nothing_left_to_do(share):
    # Given a run that archived everything old
    make_jobs(share.share, 50, finished_at=days_ago(40))
    first = run_rotation(share.settings)
    snapshot = tree(share.share)
    # When it runs again
    second = run_rotation(share.settings)
    # Then it plans nothing and changes no file
    assert first.jobs_done == 50
    assert (second.status, second.planned_jobs, second.planned_batches) == ("completed", 0, 0)
    assert tree(share.share) == snapshot


def test_dry_run_lists_what_would_move_and_changes_nothing(share):
    # Given old and recent jobs
    old = make_jobs(share.share, 12, finished_at=days_ago(45))
    make_jobs(share.share, 3, finished_at=now() - timedelta(days=2))
    files_before, rows_before = tree(share.share), list(rows())
    runs_before = len(journal.list_runs())
    # When an operator asks for a dry run, as JSON and as text
    cli = CliRunner()
    as_json = cli.invoke(pipeline, ["rotate", "--dry-run", "--json"])
    as_text = cli.invoke(pipeline, ["rotate", "--dry-run"])
    # Then it lists exactly the old jobs with their bytes
    assert as_json.exit_code == 0, as_json.output
    listed = json.loads(as_json.stdout)
    assert sorted(j["id"] for j in listed["jobs"]) == sorted(old)
    on_disk = sum(f.stat().st_size for j in old for f in (share.share / "completed" / j).rglob("*")
                  if f.is_file())
    assert listed["total_bytes"] == on_disk and listed["total_jobs"] == 12
    assert "would archive 12 jobs" in as_text.stdout and "nothing was changed" in as_text.stdout
    # And no file, job row, event or run record changed
    assert tree(share.share) == files_before
    assert list(rows()) == rows_before
    assert len(journal.list_runs()) == runs_before


def test_every_run_records_the_settings_it_ran_with_without_passwords(share, monkeypatch):
    # Given a result backend URL with a password in the environment
    monkeypatch.setenv("PIPELINE_RESULT_BACKEND", "redis://:hunter2@localhost:6379/1")
    reset_settings()
    # When a run starts
    run = run_rotation(share.settings)
    # Then its record holds the settings, the password masked
    assert run.settings["rotation_batch_size"] == 500
    assert "hunter2" not in json.dumps(run.settings)


def test_manifest_beside_the_archive_lists_every_file_with_its_sha256(share):
    ids = make_jobs(share.share, 3, finished_at=days_ago(40))
    run_rotation(share.settings)
    job = store.get_job(ids[0])
    manifest = json.loads(manifest_path(share.share / job.archive_path).read_text())
    assert manifest["sha256"] == job.archive_sha256
    entry = next(j for j in manifest["jobs"] if j["id"] == ids[0])
    assert sorted(f["path"] for f in entry["files"]) == ["input/prices.csv", "report.json",
                                                          "weights.csv"]
    assert all(len(f["sha256"]) == 64 for f in entry["files"])


def test_a_run_that_cannot_be_dispatched_ends_failed_saying_why(share):
    # Given old jobs and a broker that refuses the batches
    make_jobs(share.share, 5, finished_at=days_ago(40))

    def broker_down(*args: object) -> None:
        raise ConnectionError("broker down")

    # When a run starts, then the error reaches the caller
    with pytest.raises(ConnectionError):
        runner.start_run(share.settings, trigger="test", dispatch=broker_down)
    # And the run's record ends failed with the reason; no job changed
    run = journal.list_runs(1)[0]
    assert run.status == "failed" and "broker down" in run.error["messages"][0]
    assert check_consistent(share.share) == {"completed": 5}


def test_the_second_retention_prunes_old_history_of_archived_jobs_only_when_asked(share,
                                                                                monkeypatch):
    # Given archived jobs whose history is 100 days old, and a recent job's old-looking history
    archived = make_jobs(share.share, 3, finished_at=days_ago(100))
    kept = make_jobs(share.share, 1, finished_at=now() - timedelta(days=5))
    run_rotation(share.settings)
    assert [e.to_state for e in store.history(archived[0])] == ["completed", "archived"]
    # When a run goes with PIPELINE_HISTORY_RETENTION_DAYS=60
    monkeypatch.setenv("PIPELINE_HISTORY_RETENTION_DAYS", "60")
    reset_settings()
    run_rotation(share.settings)
    # Then the archived jobs keep only their move to archived; the other job keeps everything
    assert [e.to_state for e in store.history(archived[0])] == ["archived"]
    assert [e.to_state for e in store.history(kept[0])] == ["completed"]
