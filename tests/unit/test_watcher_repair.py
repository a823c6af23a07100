"""What a crash between claim and publish leaves behind, and how the watcher's repair mends it;
and the duplicate check of submissions. Real share, real SQLite store, the embedded broker (no
worker). Stories: given, when, then."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from orchestrator.celery import create_app
from orchestrator.errors import TransientError
from orchestrator.intake.submission import Intake
from orchestrator.intake.watch.claim import HOST, Claim, Owner
from orchestrator.jobs.canvas import Orchestrator
from orchestrator.reconciler import claims
from orchestrator.store import intake as records
from orchestrator.store import jobs as store
from orchestrator.store.states import JobState

S = JobState


@pytest.fixture
def orch(env) -> Orchestrator:
    return Orchestrator(env.settings, app=create_app(env.settings))


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def dropped(env, name: str = "prices.csv", text: str = "date,A\n2024-01-02,1\n") -> Path:
    path = env.share / "input" / name
    path.write_text(text)
    return path


def messages(env) -> list[Path]:
    return sorted((env.settings.broker_folder / "queue").glob("*.validate.msg"))


def claim_by(env, source: Path, owner: Owner, at: float | None = None) -> Claim:
    """A claim as a watcher makes it, by ``owner``, and nothing after it (the crash)."""
    claim = Claim(env.share / "processing" / uuid.uuid4().hex, owner=owner,
                  at=at if at is not None else time.time())
    claim.take(source, claim.job_dir / "input" / source.name, move=True)
    return claim


def test_a_claim_whose_watcher_died_goes_back_to_input(env, orch: Orchestrator) -> None:
    # given a file claimed by a watcher of this host that died before recording the job
    source = dropped(env)
    claim = claim_by(env, source, Owner(HOST, dead_pid(), None))
    assert not source.exists()
    # when a watcher repairs on start
    done = claims.reconcile_claims(orch)
    # then the file is back in input/, to be picked up as a new drop; no job was made
    assert done.returned == [source]
    assert source.read_text() == "date,A\n2024-01-02,1\n"
    assert not claim.job_dir.exists()
    assert store.list_jobs() == []


def test_a_claim_of_a_live_watcher_is_left_alone(env, orch: Orchestrator) -> None:
    # given a claim in progress by a live process of this host (our parent)
    parent = os.getppid()
    from orchestrator.intake.watch.claim import _start_ticks

    claim = claim_by(env, dropped(env), Owner(HOST, parent, _start_ticks(parent)))
    # when another watcher repairs, then the claim is untouched
    assert not claims.reconcile_claims(orch)
    assert (claim.job_dir / "input" / "prices.csv").is_file()


def test_another_host_s_claim_is_taken_over_only_after_the_grace_time(env,
                                                                     orch: Orchestrator) -> None:
    # given a claim by a watcher on another machine, which cannot be checked from here
    young = claim_by(env, dropped(env, "young.csv"), Owner("elsewhere", 1, None))
    old = claim_by(env, dropped(env, "old.csv"), Owner("elsewhere", 2, None),
                   at=time.time() - claims.GRACE - 1)
    # when a watcher repairs, then only the one older than the grace time is undone
    done = claims.reconcile_claims(orch)
    assert [p.name for p in done.returned] == ["old.csv"]
    assert young.job_dir.exists() and not old.job_dir.exists()


def test_a_job_recorded_but_never_published_is_published_on_repair(env, orch: Orchestrator,
                                                                   monkeypatch) -> None:
    # given a watcher that crashed right after recording a job: queued, its marker still there
    monkeypatch.setattr(Intake, "_publish", lambda *a, **k: None)
    job_id = orch.submit(dropped(env))
    assert store.get_job(job_id).state is S.QUEUED
    assert (env.share / "processing" / job_id / ".claim.json").is_file()
    assert messages(env) == []
    # when a watcher repairs
    done = claims.reconcile_claims(orch)
    # then the job is published once, under new task ids, and its history says why
    assert done.published == [job_id]
    (message,) = messages(env)
    assert json.loads(message.read_text())["headers"]["id"] == f"{job_id}.validate.1"
    assert "repaired" in store.history(job_id)[-1].detail
    assert not (env.share / "processing" / job_id / ".claim.json").exists()
    # and a second repair finds nothing to do
    assert not claims.reconcile_claims(orch)


def test_a_job_that_started_is_not_published_again(env, orch: Orchestrator,
                                                   monkeypatch) -> None:
    # given a crash after the publish, before the marker went; a worker started the job
    monkeypatch.setattr(Intake, "_publish", lambda *a, **k: None)
    job_id = orch.submit(dropped(env))
    store.transition(job_id, S.PROCESSING, sources={S.QUEUED}, step="validate")
    # when a watcher repairs, then only the marker goes
    assert not claims.reconcile_claims(orch)
    assert messages(env) == []
    assert not (env.share / "processing" / job_id / ".claim.json").exists()


def test_a_pending_job_whose_input_vanished_fails_saying_so(env, orch: Orchestrator,
                                                            monkeypatch) -> None:
    monkeypatch.setattr(Intake, "_publish", lambda *a, **k: None)
    job_id = orch.submit(dropped(env))
    (env.share / "processing" / job_id / "input" / "prices.csv").unlink()
    done = claims.reconcile_claims(orch)
    assert done.failed == [job_id]
    job = store.get_job(job_id)
    assert job.state is S.FAILED
    assert "input vanished from processing" in job.error["message"]
    assert messages(env) == []


def test_a_batch_folder_claimed_but_never_recorded_goes_back_whole(env,
                                                                   orch: Orchestrator) -> None:
    # given a folder renamed into processing/ as a batch, one file claimed, then a crash
    folder = env.share / "input" / "march"
    folder.mkdir()
    for name in ("a.csv", "b.csv", "READY"):
        (folder / name).write_text(name)
    staging = env.share / "processing" / f"{claims.BATCH_PREFIX}{uuid.uuid4().hex}"
    claims.write_batch_marker(staging, "march")
    os.rename(folder, staging)
    gone = Owner(HOST, dead_pid(), None)
    claim_by(env, staging / "a.csv", gone)
    marker = claims.batch_marker(staging)
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "owner": gone.__dict__}))
    # when a watcher repairs
    claims.reconcile_claims(orch)
    # then the folder is back in input/ with all its files, and processing/ is clean
    assert sorted(os.listdir(folder)) == ["READY", "a.csv", "b.csv"]
    assert os.listdir(env.share / "processing") == []


def test_when_the_store_refuses_the_claim_is_undone(env, orch: Orchestrator,
                                                    monkeypatch) -> None:
    # given a status store that is down
    def down(*args, **kwargs):
        raise ConnectionError("database is unreachable")

    monkeypatch.setattr(records, "record", down)
    source = dropped(env)
    # when the file is submitted, then it is an outage, and the file is back where it was
    with pytest.raises(TransientError, match="could not record"):
        Intake(orch).submit([source], {}, lost_ok=True)
    assert source.is_file()
    assert os.listdir(env.share / "processing") == []


def test_submit_with_dedupe_sets_a_repeat_aside_and_force_runs_it(env, orch: Orchestrator,
                                                                  sample_csv: Path) -> None:
    # given a job made from the sample
    first = orch.submit(sample_csv, dedupe=True)
    # when the same file is submitted again with the duplicate check (pipeline submit)
    again = orch.submit(sample_csv, dedupe=True)
    # then it is recorded as a cancelled duplicate naming the first, in duplicates/
    job = store.get_job(again)
    assert (job.state, job.error["original_job"]) == (S.CANCELLED, first)
    assert (env.share / "duplicates" / again / "duplicate.json").is_file()
    # and without the check (--force), or with other parameters, it runs
    assert store.get_job(orch.submit(sample_csv, dedupe=False)).state is S.QUEUED
    other = orch.submit(sample_csv, {"portfolio_size": 30}, dedupe=True)
    assert store.get_job(other).state is S.QUEUED


def test_a_failed_job_s_input_may_be_dropped_again(env, orch: Orchestrator,
                                                   sample_csv: Path) -> None:
    # given a job that failed
    first = orch.submit(sample_csv, dedupe=True)
    store.transition(first, S.FAILED, detail="a test failure")
    # when the same content is submitted again, then it runs: that is how users retry
    assert store.get_job(orch.submit(sample_csv, dedupe=True)).state is S.QUEUED


def test_a_zero_window_turns_the_duplicate_check_off(env, orch: Orchestrator,
                                                     sample_csv: Path, monkeypatch) -> None:
    monkeypatch.setattr(orch.settings, "dedupe_window", 0.0)
    orch.submit(sample_csv, dedupe=True)
    assert store.get_job(orch.submit(sample_csv, dedupe=True)).state is S.QUEUED


def test_back_pressure_counts_pending_and_queued_jobs(env, orch: Orchestrator,
                                                      sample_csv: Path) -> None:
    ids = [orch.submit(sample_csv, {"portfolio_size": 10 + i}) for i in range(3)]
    store.transition(ids[0], S.PROCESSING, sources={S.QUEUED}, step="validate")
    assert records.count_waiting() == 2
