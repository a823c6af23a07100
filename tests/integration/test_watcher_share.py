"""The share watcher as operators run it: real ``pipeline watch`` processes on a real share,
files written by this test the way users and copy tools write them. Stories: given, when, then.

Most stories need no worker: a submitted job stays queued, its first step waits as a message
in the embedded broker's folder. The crash and batch stories run a real worker to the end.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.paths import Share
from orchestrator.store import jobs as store
from orchestrator.store.states import FINAL, JobState
from tests.conftest import Env, Process
from tests.support import wait_final

pytestmark = pytest.mark.slow
S = JobState
WATCH = [sys.executable, "-m", "cli.main", "watch"]


def price_csv(index: int, tickers: int = 24, days: int = 60) -> str:
    """A valid price file, different for every index (a random walk per ticker)."""
    rng = random.Random(index)
    prices = [100.0 + t for t in range(tickers)]
    lines = ["date," + ",".join(f"T{t:02d}" for t in range(tickers))]
    for day in range(days):
        prices = [p * (1 + rng.gauss(0.0005, 0.01)) for p in prices]
        lines.append(f"2024-{1 + day // 28:02d}-{1 + day % 28:02d}," +
                     ",".join(f"{p:.4f}" for p in prices))
    return "\n".join(lines) + "\n"


def watcher(spawn: Callable[..., Process], env: Env, name: str = "watch",
            **settings: object) -> Process:
    """``pipeline watch`` with these PIPELINE_* settings, started and watching."""
    env.variables.update({"PIPELINE_SETTLE_SECONDS": "0.3",
                          **{f"PIPELINE_{k.upper()}": str(v) for k, v in settings.items()}})
    process = spawn(WATCH, env, name)
    process.wait_for("watching", timeout=30)
    return process


def drop(env: Env, name: str, text: str) -> Path:
    aside = env.share / f".{name}.incoming"
    aside.write_text(text)
    target = env.share / "input" / name
    os.rename(aside, target)
    return target


def by_name() -> dict[str, store.Job]:
    return {j.input_name: j for j in store.list_jobs(limit=100_000)}


def wait_until(condition: Callable[[], object], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"not true after {timeout} s")


def settled(*names: str) -> Callable[[], bool]:
    def check() -> bool:
        found = by_name()
        return all(n in found and found[n].state is not S.PENDING for n in names)
    return check


def test_two_watchers_on_one_folder_submit_each_of_500_files_once(env, spawn, tmp_path):
    # given two watcher processes on the same share (as on two machines)
    first, second = watcher(spawn, env, "w1"), watcher(spawn, env, "w2")
    staging = tmp_path / "staging"
    staging.mkdir()
    for i in range(500):
        (staging / f"p{i:03d}.csv").write_text(price_csv(i, tickers=12, days=35))
    # when 500 files are dropped at once
    for name in sorted(os.listdir(staging)):
        os.rename(staging / name, env.share / "input" / name)
    # then each became exactly one queued job, with one claimed folder and one message
    wait_until(lambda: len(store.list_jobs(limit=1000)) >= 500
               and not os.listdir(env.share / "input"), timeout=60)
    time.sleep(0.5)
    jobs = store.list_jobs(limit=1000)
    assert len(jobs) == 500
    assert sorted(j.input_name for j in jobs) == sorted(f"p{i:03d}.csv" for i in range(500))
    assert {j.state for j in jobs} == {S.QUEUED}
    claimed = [p for p in (env.share / "processing").iterdir() if p.is_dir()]
    assert len(claimed) == 500
    assert all(len(os.listdir(p / "input")) == 1 for p in claimed)
    assert len(list((env.settings.broker_folder / "queue").glob("*.validate.msg"))) == 500
    # and neither watcher crashed or logged an error
    for process in (first, second):
        assert process.proc.poll() is None
        assert "Traceback" not in process.output() and " ERROR " not in process.output()


def test_a_file_written_slowly_is_not_taken_until_complete(env, spawn):
    # given a watcher wanting files to hold still for 1 s
    watcher(spawn, env, settle_seconds=1.0)
    text = price_csv(1)
    chunks = [text[i:i + len(text) // 6 + 1] for i in range(0, len(text), len(text) // 6 + 1)]
    path = env.share / "input" / "slow.csv"
    # when a file is written in place over 3 s, in chunks with pauses
    for chunk in chunks:
        with path.open("a") as handle:
            handle.write(chunk)
        time.sleep(0.5)
        # then it is never taken while it is being written
        assert by_name() == {}
    # and once it held still, it is taken whole
    wait_until(settled("slow.csv"), timeout=10)
    job = by_name()["slow.csv"]
    assert job.input_size == len(text.encode())
    assert (env.share / "processing" / job.id / "input" / "slow.csv").read_text() == text


def test_a_job_file_that_arrives_before_its_csv_waits_for_it(env, spawn):
    # given a watcher, and a job file whose CSV is not there yet
    watcher(spawn, env)
    drop(env, "job.json", json.dumps({"input_file": "prices.csv", "portfolio_size": 12,
                                      "objective": "max_sharpe"}))
    time.sleep(1.0)
    assert by_name() == {}
    # when the CSV arrives
    drop(env, "prices.csv", price_csv(2))
    # then one job is made of both, with the job file's parameters
    wait_until(settled("job.json"))
    job = by_name()["job.json"]
    assert list(by_name()) == ["job.json"]
    assert (job.params["portfolio_size"], job.params["objective"]) == (12, "max_sharpe")
    assert sorted(os.listdir(env.share / "processing" / job.id / "input")) == [
        "job.json", "prices.csv"]


def test_a_re_drop_of_the_same_content_is_not_run_again(env, spawn):
    # given a file that became a job
    process = watcher(spawn, env)
    drop(env, "prices.csv", price_csv(3))
    wait_until(settled("prices.csv"))
    original = by_name()["prices.csv"]
    # when the same content is dropped again
    drop(env, "prices (copy).csv", price_csv(3))
    wait_until(settled("prices (copy).csv"))
    # then it is set aside in duplicates/ with a note naming the original job
    again = by_name()["prices (copy).csv"]
    assert again.state is S.CANCELLED
    note = json.loads((env.share / "duplicates" / again.id / "duplicate.json").read_text())
    assert note["original_job"] == original.id
    assert f"same content and parameters as job {original.id}" in note["message"]
    assert "not run" in process.output()
    assert len(list((env.settings.broker_folder / "queue").glob("*.validate.msg"))) == 1


@pytest.mark.parametrize("fault", ["after_claim", "after_record"])
def test_a_watcher_killed_between_claim_and_publish_loses_nothing_and_runs_once(
        env, spawn, worker, sample_csv, fault):
    # given a worker, and a watcher that dies (as by SIGKILL) at a point of its intake
    worker(env)
    env.variables["PIPELINE_FAULTS"] = f"exit:intake.{fault}"
    crashing = watcher(spawn, env, "crashing")
    drop(env, "prices.csv", sample_csv.read_text())
    assert crashing.proc.wait(20) == 137
    assert os.listdir(env.share / "input") == []  # claimed, then the crash
    # when a watcher starts again
    del env.variables["PIPELINE_FAULTS"]
    restarted = watcher(spawn, env, "restarted")
    # then the file becomes exactly one job, which runs once to the end
    wait_until(lambda: len(store.list_jobs()) == 1 and store.list_jobs()[0].state in FINAL,
               timeout=90)
    (job,) = store.list_jobs()
    assert job.state is S.COMPLETED, job.error
    events = [e.to_state for e in store.history(job.id)]
    assert events.count("completed") == 1
    assert events.count("processing") == 3  # validate, optimize, archive: once each
    assert os.listdir(env.share / "input") == []
    assert [p.name for p in (env.share / "processing").iterdir()] == []
    assert os.listdir(env.share / "completed") == [job.id]
    assert "repair after a crash" in restarted.output()


def test_the_share_removed_and_recreated_while_running(env, spawn):
    # given a watcher on a share that works
    process = watcher(spawn, env)
    drop(env, "before.csv", price_csv(4))
    wait_until(settled("before.csv"))
    # when the whole share disappears for a while (unmounted, deleted)
    shutil.rmtree(env.share)
    time.sleep(2.0)
    # then the watcher is still running, and said so once, without flooding the log
    assert process.proc.poll() is None
    assert process.output().count("the share unavailable") == 1
    # when the share comes back
    Share(env.share).ensure()
    drop(env, "after.csv", price_csv(5))
    # then the watcher resumes: the new file becomes a job, and it says the share is back
    wait_until(settled("after.csv"), timeout=30)
    assert "the share available again" in process.output()
    assert process.output().count("Traceback") == 0


def test_a_symlink_and_a_path_out_of_the_share_in_job_files_are_refused(env, spawn, tmp_path):
    # given a watcher, a file outside the share, and a link to it inside input/
    watcher(spawn, env)
    secret = tmp_path / "secret.csv"
    secret.write_text(price_csv(6))
    os.symlink(secret, env.share / "input" / "link.csv")
    # when job files name the link, and a path climbing out of the share
    drop(env, "via_link.json", json.dumps({"input_file": "link.csv"}))
    drop(env, "climb.json", json.dumps({"input_file": f"../../{tmp_path.name}/secret.csv"}))
    # then both fail saying why, and the file outside the share was neither moved nor copied
    wait_until(settled("via_link.json", "climb.json", "link.csv"))
    jobs = by_name()
    assert "symbolic link" in jobs["via_link.json"].error["message"]
    assert "outside the share" in jobs["climb.json"].error["message"]
    assert "symbolic link" in jobs["link.csv"].error["message"]
    assert secret.read_text() == price_csv(6)
    assert list(env.share.rglob("secret.csv")) == []


def test_polling_mode_forced_by_setting(env, spawn):
    # given a watcher told to poll (as it does by itself on cifs, nfs, 9p...)
    process = watcher(spawn, env, watch_mode="polling")
    assert "polling mode (PIPELINE_WATCH_MODE=polling)" in process.output()
    # when a file is dropped, then a scan finds it and it becomes a job
    drop(env, "prices.csv", price_csv(7))
    wait_until(settled("prices.csv"))
    # and SIGTERM stops it cleanly
    assert process.stop() == 0
    assert "watcher stopped" in process.output()


def test_a_folder_with_ready_becomes_a_batch_with_a_summary(env, spawn, worker):
    # given a worker and a watcher
    worker(env)
    watcher(spawn, env)
    # when a folder of two price files and a READY marker is dropped (assembled aside)
    aside = env.share / ".assembling"
    aside.mkdir()
    for i in range(2):
        (aside / f"p{i}.csv").write_text(price_csv(10 + i))
    (aside / "READY").touch()
    os.rename(aside, env.share / "input" / "march")
    # then it is one batch, both jobs run, and its summary lands in completed/batches/
    wait_until(lambda: len(store.list_jobs()) == 2, timeout=30)
    jobs = wait_final([j.id for j in store.list_jobs()], timeout=90)
    (batch_id,) = {j.batch_id for j in jobs}
    summary_path = env.share / "completed" / "batches" / batch_id / "summary.json"
    wait_until(summary_path.exists, timeout=30)
    summary = json.loads(summary_path.read_text())
    assert summary["jobs"] == 2
    assert sorted(m["input"] for m in summary["members"]) == ["p0.csv", "p1.csv"]
    assert os.listdir(env.share / "input") == []


def test_pipeline_submit_sets_a_repeat_aside_unless_forced(env, tmp_path):
    # given a price file submitted once from the command line
    path = tmp_path / "prices.csv"
    path.write_text(price_csv(8))

    def submit(*extra: str) -> str:
        done = subprocess.run([sys.executable, "-m", "cli.main", "submit", str(path), *extra],
                              env=env.environ(), cwd=env.root, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    first = submit()
    assert first.startswith("submitted job ")
    # when it is submitted again, then it is not run, and the user is told why and how
    again = submit()
    assert "not run: same content and parameters as job" in again
    assert "--force" in again
    # and with --force it runs
    assert submit("--force").startswith("submitted job ")
    states = sorted(j.state.value for j in store.list_jobs())
    assert states == ["cancelled", "queued", "queued"]
