"""What a job file or a swapped file can make the pipeline read (issue 13), in process: a real
watcher and share on the embedded default with no worker, and the validate step run directly.
Stories: given, when, then."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import threading
import uuid
from pathlib import Path

import pytest

from orchestrator.errors import DataError
from orchestrator.intake.watcher import Watcher
from orchestrator.jobs.canvas import Orchestrator
from orchestrator.jobs.jobspec import make_params
from orchestrator.steps import run
from orchestrator.store import jobs as store
from orchestrator.store.states import JobState

S = JobState
TOKEN = f"SECRET-{uuid.uuid4().hex}"


@pytest.fixture
def watcher(env, monkeypatch: pytest.MonkeyPatch) -> Watcher:
    """A watcher whose two looks may come back to back and that runs identical drops."""
    from orchestrator.celery import create_app
    from orchestrator.settings import reset_settings

    for key in ("PIPELINE_SETTLE_SECONDS", "PIPELINE_JOB_FILE_WAIT", "PIPELINE_DEDUPE_WINDOW"):
        monkeypatch.setenv(key, "0")
    reset_settings()
    return Watcher(Orchestrator(env.settings, app=create_app(env.settings)))


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A file outside the share, written like /etc/shadow."""
    path = tmp_path / "outside" / "shadow"
    path.parent.mkdir()
    path.write_text(f"root:{TOKEN}:19000:0:99999:7:::\n")
    path.chmod(0o640)
    return path


def price_csv(tickers: int = 12, days: int = 40) -> str:
    lines = ["date," + ",".join(f"T{t:02d}" for t in range(tickers))]
    lines += [f"2024-{1 + d // 28:02d}-{1 + d % 28:02d}," +
              ",".join(f"{100 + t + d * 0.1:.4f}" for t in range(tickers)) for d in range(days)]
    return "\n".join(lines) + "\n"


def job_file(env, name: str, spec: dict[str, object]) -> Path:
    path = env.share / "input" / name
    path.write_text(json.dumps(spec))
    return path


def taken(watcher: Watcher) -> dict[str, store.Job]:
    """Scan twice (a first look, then the files held still): the jobs made, by input name."""
    watcher.scan_once()
    watcher.scan_once()
    return {j.input_name: j for j in store.list_jobs(limit=1000)}


def test_input_file_paths_out_of_the_share_or_into_other_jobs_are_refused_or_copied(
        env, watcher: Watcher, secret: Path) -> None:
    # given a job already claimed (its input in processing/), a private CSV elsewhere in the
    # share, and a folder of the share that is a link to a folder outside it
    other = env.share / "processing" / uuid.uuid4().hex / "input"
    other.mkdir(parents=True)
    (other / "prices.csv").write_text(price_csv())
    (env.share / "stage").mkdir()
    (env.share / "stage" / "mine.csv").write_text(price_csv())
    (env.share / "stage" / "mine.csv").chmod(0o600)
    (env.share / "linked").symlink_to(secret.parent, target_is_directory=True)
    # when job files name them: by ``..`` climbing out, by an absolute path, by ``..`` into
    # another job's folder, through the linked folder, and by ``..`` to a CSV of the share
    job_file(env, "climb.json", {"input_file": f"../../{secret.parent.name}/shadow"})
    job_file(env, "absolute.json", {"input_file": str(secret)})
    job_file(env, "steal.json", {"input_file": f"../processing/{other.parent.name}/input/"
                                               "prices.csv", "portfolio_size": 10})
    job_file(env, "through_link.json", {"input_file": "../linked/shadow"})
    job_file(env, "fine.json", {"input_file": "../stage/mine.csv", "portfolio_size": 10})
    jobs = taken(watcher)
    # then another job's input is copied, never taken from it
    assert jobs["steal.json"].state is S.QUEUED
    assert (other / "prices.csv").read_text() == price_csv()
    # and the CSV of the share is copied with its own permission bits, not made readable
    assert jobs["fine.json"].state is S.QUEUED
    copy = env.share / "processing" / jobs["fine.json"].id / "input" / "mine.csv"
    assert stat.S_IMODE(os.stat(copy).st_mode) == 0o600
    assert (env.share / "stage" / "mine.csv").exists()
    # and the escapes are refused, each saying why
    assert "is a path outside the share" in jobs["climb.json"].error["message"]
    assert "must be a path relative to the job file" in jobs["absolute.json"].error["message"]
    assert "goes through the symbolic link 'linked'" in \
        jobs["through_link.json"].error["message"]
    # and nothing of the secret was copied, nor quoted in any error
    assert not any(TOKEN.encode() in p.read_bytes() for p in env.share.rglob("*")
                   if p.is_file() and not p.is_symlink())
    assert not any(TOKEN in json.dumps(j.error) for j in jobs.values())


def test_the_reason_for_a_refused_file_is_no_more_readable_than_the_file(env, watcher):
    # given a private job file (mode 0600) that cannot serve
    path = job_file(env, "private.json", {"input_file": "missing.csv"})
    path.chmod(0o600)
    # when the watcher sets it aside
    job = taken(watcher)["private.json"]
    assert job.state is S.FAILED
    # then its error.json in failed/ is private too
    error_json = env.share / "failed" / job.id / "error.json"
    assert stat.S_IMODE(os.stat(error_json).st_mode) == 0o600


def step_context(env, job_id: str, **params: object) -> run.StepContext:
    return run.StepContext(job_id=job_id, folder=env.share / "processing" / job_id,
                           params=make_params(env.settings, {"portfolio_size": 10, **params}),
                           settings=env.settings, progress=lambda _: None)


def test_validate_does_not_read_a_link_swapped_in_after_the_claim(env, secret: Path) -> None:
    # given a claimed job whose input a share user replaced by a link to a secret
    job_id = uuid.uuid4().hex
    folder = env.share / "processing" / job_id / "input"
    folder.mkdir(parents=True)
    (folder / "prices.csv").symlink_to(secret)
    # when the validate step runs, then it refuses the link, quoting nothing of the secret
    with pytest.raises(DataError) as raised:
        run.run_validate(step_context(env, job_id))
    assert "symbolic link" in str(raised.value) and TOKEN not in str(raised.value)


def test_a_reference_file_hard_linked_to_a_secret_is_not_read(env, secret: Path) -> None:
    # given a claimed job, and a reference file in the share that is a hard link to a secret
    job_id = uuid.uuid4().hex
    folder = env.share / "processing" / job_id / "input"
    folder.mkdir(parents=True)
    (folder / "prices.csv").write_text(price_csv())
    os.link(secret, env.share / "tickers.txt")
    # when validate reads the reference the job asks for, then it refuses it, saying why
    with pytest.raises(DataError) as raised:
        run.run_validate(step_context(env, job_id, reference_file="tickers.txt"))
    assert "hard links" in str(raised.value) and TOKEN not in str(raised.value)


def test_a_fifo_planted_as_a_claim_marker_does_not_stop_the_watcher(env, watcher: Watcher):
    # given FIFOs where the watcher's repair reads its claim markers, in processing/
    planted = env.share / "processing" / uuid.uuid4().hex
    planted.mkdir(parents=True)
    os.mkfifo(planted / ".claim.json")
    staging = env.share / "processing" / f".batch-{uuid.uuid4().hex}"
    staging.mkdir()
    os.mkfifo(staging.with_name(staging.name + ".json"))
    # when a price file is dropped and the watcher scans (repair runs first)
    (env.share / "input" / "prices.csv").write_text(price_csv())
    made: list[dict[str, store.Job]] = []
    scanning = threading.Thread(target=lambda: made.append(taken(watcher)), daemon=True)
    scanning.start()
    scanning.join(60)  # a blocking open() of a FIFO would wait for a writer for ever
    stuck = scanning.is_alive()
    for fifo in (planted / ".claim.json",
                 staging.with_name(staging.name + ".json")):
        with contextlib.suppress(OSError):  # free a stuck reader (ENXIO: none) before failing
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    scanning.join(10)
    # then the scan finished and took the price file
    assert not stuck, "the watcher's repair blocked opening a FIFO"
    assert made[0]["prices.csv"].state is S.QUEUED
