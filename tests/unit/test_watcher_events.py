"""The watcher running in a thread on a real share, with real filesystem events, publishing to
the embedded broker (no worker: a submitted job stays queued). Stories: given, when, then."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from orchestrator.celery import create_app
from orchestrator.intake.watcher import Watcher
from orchestrator.jobs.canvas import Orchestrator
from orchestrator.settings import get_settings, reset_settings
from orchestrator.store import jobs as store
from orchestrator.store.states import JobState

S = JobState


def small_csv(index: int = 0) -> str:
    """A valid price file (12 tickers, 40 dates), different for every index."""
    lines = ["date," + ",".join(f"T{t:02d}" for t in range(12))]
    for day in range(40):
        lines.append(f"2024-{1 + day // 28:02d}-{1 + day % 28:02d}," + ",".join(
            f"{100 + t + day * 0.1 + index * 1e-4:.4f}" for t in range(12)))
    return "\n".join(lines) + "\n"


def wait_for(condition: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError(f"not true after {timeout} s")


def jobs() -> dict[str, store.Job]:
    return {j.input_name: j for j in store.list_jobs(limit=1000)}


def made(*names: str) -> Callable[[], bool]:
    """A condition: a job exists for each name and is past pending (recorded and published,
    or set aside)."""
    def check() -> bool:
        found = jobs()
        return all(n in found and found[n].state is not S.PENDING for n in names)
    return check


@pytest.fixture
def watch(env, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Watcher]]:
    """Start a watcher thread with these settings (PIPELINE_<NAME>); stopped at the end."""
    running: list[tuple[threading.Event, threading.Thread]] = []

    def start(**settings: object) -> Watcher:
        for key, value in {"settle_seconds": 0.3, **settings}.items():
            monkeypatch.setenv(f"PIPELINE_{key.upper()}", str(value))
        reset_settings()
        current = get_settings()
        watcher = Watcher(Orchestrator(current, app=create_app(current)))
        stop = threading.Event()
        thread = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
        thread.start()
        running.append((stop, thread))
        assert watcher.started.wait(10)
        return watcher

    yield start
    for stop, thread in running:
        stop.set()
        thread.join(10)


def drop(env, name: str, text: str) -> Path:
    """Write beside input/, then rename in: a complete file arrives at once."""
    aside = env.share / f".{name}.incoming"
    aside.write_text(text)
    target = env.share / "input" / name
    os.rename(aside, target)
    return target


def test_a_file_renamed_into_input_is_queued_at_once(env, watch) -> None:
    # given a watcher in event mode with a long settle time
    watcher = watch(settle_seconds=30)
    assert watcher.mode == "events"
    # when a complete file is renamed into input/
    started = time.monotonic()
    drop(env, "prices.csv", small_csv())
    # then its job is queued well before any settle time, and input/ is empty
    wait_for(lambda: jobs().get("prices.csv") and jobs()["prices.csv"].state is S.QUEUED)
    assert time.monotonic() - started < 2
    assert os.listdir(env.share / "input") == []


def test_a_file_written_in_place_waits_for_the_settle_time(env, watch) -> None:
    # given a watcher that wants files to hold still for 1 s
    watch(settle_seconds=1.0)
    # when a file is written in place, in three parts
    path = env.share / "input" / "prices.csv"
    text = small_csv()
    started = time.monotonic()
    for part in (text[:300], text[300:600], text[600:]):
        with path.open("a") as handle:
            handle.write(part)
        time.sleep(0.2)
    # then nothing is claimed before it held still for 1 s, and then it is, whole
    time.sleep(0.5)
    assert jobs() == {}
    wait_for(made("prices.csv"))
    assert time.monotonic() - started >= 1.0
    assert jobs()["prices.csv"].input_size == len(text)


def test_a_job_file_waits_for_its_csv_then_takes_it(env, watch) -> None:
    # given a job file naming a CSV that has not arrived
    watch()
    drop(env, "job.json", json.dumps({"input_file": "prices.csv", "portfolio_size": 12}))
    time.sleep(0.8)
    assert jobs() == {}
    # when the CSV arrives
    drop(env, "prices.csv", small_csv())
    # then one job is made from both, with the job file's parameter
    wait_for(made("job.json"))
    job = jobs()["job.json"]
    assert job.params["portfolio_size"] == 12
    assert sorted(os.listdir(env.share / "processing" / job.id / "input")) == [
        "job.json", "prices.csv"]
    assert list(jobs()) == ["job.json"]


def test_a_job_file_waits_for_its_growing_csv_to_hold_still(env, watch) -> None:
    # given a job file and the CSV it names, the CSV still being written
    watch(settle_seconds=0.6)
    csv = env.share / "input" / "prices.csv"
    csv.write_text(small_csv()[:200])
    drop(env, "job.json", json.dumps({"input_file": "prices.csv"}))
    # when the writer goes on for a while
    for _ in range(4):
        time.sleep(0.3)
        with csv.open("a") as handle:
            handle.write("2025-01-01," + ",".join(["1"] * 12) + "\n")
        assert jobs() == {}
    # then the job is made only once the CSV held still, with all of it
    wait_for(made("job.json"))
    job = jobs()["job.json"]
    claimed = env.share / "processing" / job.id / "input" / "prices.csv"
    assert claimed.read_text().count("2025-01-01") == 4
    assert job.input_size == claimed.stat().st_size


def test_a_job_file_whose_csv_never_comes_fails_after_the_wait(env, watch) -> None:
    # given a watcher that waits 1 s for a job file's CSV
    watch(job_file_wait=1.0)
    # when a job file names a CSV that never arrives
    drop(env, "job.json", json.dumps({"input_file": "never.csv"}))
    # then, after the wait, it becomes a failed job saying what it waited for
    wait_for(made("job.json"))
    job = jobs()["job.json"]
    assert job.state is S.FAILED
    assert "never.csv' does not exist in the share" in job.error["message"]
    assert "waited 1 s" in job.error["message"]
    assert (env.share / "failed" / job.id / "error.json").is_file()


def test_a_re_drop_of_the_same_content_is_set_aside_naming_the_original(env, watch) -> None:
    # given a file that became a job
    watch()
    drop(env, "prices.csv", small_csv(1))
    wait_for(made("prices.csv"))
    original = jobs()["prices.csv"]
    # when the same content is dropped again under another name
    drop(env, "again.csv", small_csv(1))
    wait_for(made("again.csv"))
    # then it is not run: cancelled, in duplicates/ with a note naming the original job
    again = jobs()["again.csv"]
    assert again.state is S.CANCELLED
    assert again.error["type"] == "DuplicateInput"
    assert again.error["original_job"] == original.id
    note = json.loads((env.share / "duplicates" / again.id / "duplicate.json").read_text())
    assert original.id in note["message"]
    assert (env.share / "duplicates" / again.id / "input" / "again.csv").is_file()
    assert [e.to_state for e in store.history(again.id)] == ["pending", "cancelled"]
    # and the original is untouched, and nothing else was published
    assert store.get_job(original.id).state is S.QUEUED


def test_a_job_file_with_force_runs_the_same_content_again(env, watch) -> None:
    # given content that already ran
    watch()
    drop(env, "prices.csv", small_csv(2))
    wait_for(made("prices.csv"))
    # when a job file asks for the same content and parameters with "force": true
    drop(env, "force.json", json.dumps({"input_file": "copy.csv", "force": True}))
    drop(env, "copy.csv", small_csv(2))
    # then it runs
    wait_for(made("force.json"))
    assert jobs()["force.json"].state is S.QUEUED


def test_other_parameters_on_the_same_content_are_not_a_duplicate(env, watch) -> None:
    watch()
    drop(env, "prices.csv", small_csv(3))
    wait_for(made("prices.csv"))
    drop(env, "other.json", json.dumps({"input_file": "copy.csv", "portfolio_size": 11}))
    drop(env, "copy.csv", small_csv(3))
    wait_for(made("other.json"))
    assert jobs()["other.json"].state is S.QUEUED


def test_a_folder_with_ready_becomes_one_batch(env, watch) -> None:
    # given a folder assembled in input/ with two CSVs, a job file naming a third, notes
    watch(settle_seconds=30)
    folder = env.share / "input" / "march"
    folder.mkdir()
    for i in range(3):
        (folder / f"p{i}.csv").write_text(small_csv(10 + i))
    (folder / "job.json").write_text(json.dumps({"input_file": "p2.csv", "portfolio_size": 11}))
    (folder / "notes.txt").write_text("not an input")
    time.sleep(0.5)
    assert jobs() == {}
    # when the READY file is added
    (folder / "READY").touch()
    # then the folder became one batch of three jobs (the job file took p2.csv)
    wait_for(lambda: len(jobs()) == 3 and made(*jobs())())
    made_now = jobs()
    assert sorted(made_now) == ["job.json", "p0.csv", "p1.csv"]
    assert len({j.batch_id for j in made_now.values()}) == 1
    assert made_now["job.json"].params["portfolio_size"] == 11
    # and input/ is empty; what was not an input is kept beside the batch's summary
    assert os.listdir(env.share / "input") == []
    unused = env.share / "completed" / "batches" / made_now["p0.csv"].batch_id / "unused"
    wait_for(unused.exists)
    assert os.listdir(unused) == ["notes.txt"]


def test_above_max_queued_new_files_wait_until_the_queue_drains(env, watch) -> None:
    # given a watcher that lets at most 2 jobs wait
    watch(max_queued=2)
    # when 5 files are dropped
    for i in range(5):
        drop(env, f"p{i}.csv", small_csv(20 + i))
    wait_for(lambda: len(jobs()) == 2 and made(*jobs())())
    time.sleep(0.6)
    # then only 2 are claimed; the others stay safely in input/
    assert len(jobs()) == 2
    assert len(os.listdir(env.share / "input")) == 3
    # when workers take the waiting jobs, then the watcher claims more
    for job in jobs().values():
        store.transition(job.id, S.PROCESSING, sources={S.QUEUED}, step="validate")
    wait_for(lambda: len(jobs()) == 4 and made(*jobs())(), timeout=5)
    assert len(os.listdir(env.share / "input")) == 1


def test_a_symlink_and_a_path_out_of_the_share_are_refused(env, watch) -> None:
    # given a watcher
    watch()
    # when a link to a file outside the share, and job files escaping the share, are dropped
    os.symlink("/etc/passwd", env.share / "input" / "link.csv")
    drop(env, "escape.json", json.dumps({"input_file": "../../../etc/passwd"}))
    drop(env, "via_link.json", json.dumps({"input_file": "link2.csv"}))
    os.symlink("/etc/hostname", env.share / "input" / "link2.csv")
    # then each becomes a failed job saying why, and nothing outside the share was read
    wait_for(made("link.csv", "escape.json", "via_link.json"))
    found = jobs()
    assert "symbolic link" in found["link.csv"].error["message"]
    assert "outside the share" in found["escape.json"].error["message"]
    assert "symbolic link" in found["via_link.json"].error["message"]
    assert all(found[n].state is S.FAILED for n in ("link.csv", "escape.json", "via_link.json"))


def test_polling_mode_forced_by_setting_still_picks_files_up(env, watch) -> None:
    # given the watcher forced to polling (as on a network mount)
    watcher = watch(watch_mode="polling", scan_interval=0.2)
    assert (watcher.mode, watcher.events) == ("polling", None)
    # when a file is dropped, then a scan finds it once it held still
    started = time.monotonic()
    drop(env, "prices.csv", small_csv(30))
    wait_for(made("prices.csv"))
    assert time.monotonic() - started >= 0.3  # the settle time: no event said "renamed in"
