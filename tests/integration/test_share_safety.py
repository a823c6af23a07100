"""What a user of the share can make the watcher do, tried as an attacker would (issue 13):
real ``pipeline watch`` processes (and a real worker where the job must run to its end) on a
real share, with a secret file of this test's own outside the share. Stories: given, when, then.
"""

from __future__ import annotations

import json
import os
import stat
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.store import jobs as store
from orchestrator.store.states import FINAL, JobState
from tests.integration.test_watcher_share import by_name, drop, price_csv, wait_until, watcher

pytestmark = pytest.mark.slow
S = JobState


@pytest.fixture
def secret(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A file outside the share that share users must never see: (path, its unique content)."""
    token = f"SECRET-{uuid.uuid4().hex}"
    path = tmp_path / "outside" / "shadow"
    path.parent.mkdir()
    path.write_text(f"root:{token}:19000:0:99999:7:::\n")
    path.chmod(0o640)
    yield path, token
    path.unlink(missing_ok=True)


def share_files_holding(share: Path, token: str) -> list[Path]:
    """Every regular file under the share whose bytes hold ``token`` (links not followed)."""
    found = []
    for folder, _, names in os.walk(share):
        for name in names:
            path = Path(folder) / name
            if stat.S_ISREG(os.lstat(path).st_mode) and token.encode() in path.read_bytes():
                found.append(path)
    return found


def said_anywhere(token: str, *logs: str) -> list[str]:
    """Where the status store (errors, every event's detail) or a log quotes ``token``."""
    places = [f"log {i}" for i, text in enumerate(logs) if token in text]
    for job in store.list_jobs(limit=100_000):
        if token in json.dumps(job.error or {}) or token in json.dumps(job.result or {}):
            places.append(f"job {job.id} error/result")
        places += [f"job {job.id} history" for e in store.history(job.id)
                   if token in (e.detail or "")]
    return places


class Swapper(threading.Thread):
    """Swaps ``target`` between a real CSV and a link to ``secret``, as fast as it can, each
    time by an atomic rename (as a hostile user's script on the share would)."""

    def __init__(self, target: Path, secret: Path, csv: str) -> None:
        super().__init__(daemon=True)
        self.target, self.secret, self.csv = target, secret, csv
        self.stop = threading.Event()
        self.swaps = 0

    def run(self) -> None:
        while not self.stop.is_set():
            fresh = self.target.with_name(f".{self.target.name}.{self.swaps}.new")
            fresh.write_text(self.csv)
            os.replace(fresh, self.target)
            time.sleep(0.0005)  # each state held a moment: the race needs both, and the pause
            link = self.target.with_name(f".{self.target.name}.{self.swaps}.link")
            os.symlink(self.secret, link)  # leaves the worker a core (a busy loop took one)
            os.replace(link, self.target)
            self.swaps += 1
            time.sleep(0.0005)


def test_a_csv_swapped_for_a_link_to_a_secret_is_never_copied(env, spawn, worker, secret):
    # given a watcher and a worker, a secret outside the share, and in the share a t.csv that
    # a user's script keeps swapping between a real price file and a link to the secret
    path, token = secret
    watching = watcher(spawn, env)
    working = worker(env)
    (env.share / "stage2").mkdir()
    swapper = Swapper(env.share / "stage2" / "t.csv", path, price_csv(1))
    swapper.start()
    # when 30 job files ask for it by a path climbing out of input/, forced past the dedupe
    names = [f"steal{i:02d}.json" for i in range(30)]
    try:
        for name in names:
            drop(env, name, json.dumps({"input_file": "../stage2/t.csv", "force": True,
                                        "portfolio_size": 10}))
        wait_until(lambda: all(n in by_name() and by_name()[n].state in FINAL for n in names),
                   timeout=240)
    finally:
        swapper.stop.set()
        swapper.join(10)
    jobs = [by_name()[n] for n in names]
    refused = [j for j in jobs if j.state is S.FAILED]
    ran = [j for j in jobs if j.state is S.COMPLETED]
    print(f"{swapper.swaps} swaps; {len(ran)} jobs ran on the real CSV, {len(refused)} failed")
    # then the secret is nowhere in the share, the status store or the logs
    env.share.joinpath("stage2", "t.csv").unlink()
    assert share_files_holding(env.share, token) == []
    assert said_anywhere(token, watching.output(), working.output()) == []
    # and each job either ran on the real CSV or was refused for the link, saying so
    assert len(ran) + len(refused) == len(names)
    assert all("symbolic link" in j.error["message"] for j in refused), \
        [j.error for j in refused]


def test_a_hard_link_to_a_file_outside_the_share_is_refused_unread(env, spawn, worker, secret):
    # given a watcher and a worker, and a hard link in input/ to a secret outside the share
    path, token = secret
    watching = watcher(spawn, env)
    working = worker(env)
    os.link(path, env.share / "input" / "j.csv")
    # and a job file naming a second such link elsewhere in the share
    (env.share / "stage3").mkdir()
    os.link(path, env.share / "stage3" / "k.csv")
    drop(env, "via_job_file.json", json.dumps({"input_file": "../stage3/k.csv"}))
    # when the watcher takes them
    wait_until(lambda: all(n in by_name() and by_name()[n].state in FINAL
                           for n in ("j.csv", "via_job_file.json")), timeout=60)
    jobs = by_name()
    # then both jobs fail before any step, saying why (more than one link), quoting nothing
    for name in ("j.csv", "via_job_file.json"):
        assert jobs[name].state is S.FAILED and jobs[name].step is None
        assert "hard links" in jobs[name].error["message"], jobs[name].error
    # and no copy of the secret was made: the only files holding it are the links themselves
    holding = share_files_holding(env.share, token)
    assert {os.lstat(p).st_ino for p in holding} == {os.lstat(path).st_ino}
    assert said_anywhere(token, watching.output(), working.output()) == []
    # and the link dropped in input/ was set aside in failed/ with the reason beside it, which
    # is no more readable than the file it is about
    failed = env.share / "failed" / jobs["j.csv"].id
    assert (failed / "input" / "j.csv").samefile(path)
    assert stat.S_IMODE(os.stat(failed / "error.json").st_mode) == 0o640 | 0o600


def test_a_fifo_in_input_does_not_stop_the_watcher(env, spawn):
    # given a watcher, and a FIFO dropped in input/ under a price file's name
    watching = watcher(spawn, env)
    os.mkfifo(env.share / "input" / "i.csv")
    # when a normal price file is dropped after it
    drop(env, "after.csv", price_csv(3))
    # then the price file is taken (the watcher is not stuck opening the FIFO)
    wait_until(lambda: "after.csv" in by_name() and by_name()["after.csv"].state is S.QUEUED,
               timeout=30)
    # and the FIFO is set aside in failed/, its job saying what it is
    wait_until(lambda: "i.csv" in by_name() and by_name()["i.csv"].state is S.FAILED)
    fifo_job = by_name()["i.csv"]
    assert "not a regular file (a FIFO" in fifo_job.error["message"]
    assert stat.S_ISFIFO(os.lstat(env.share / "failed" / fifo_job.id / "input" / "i.csv").st_mode)
    # and the watcher goes on taking files
    drop(env, "later.csv", price_csv(4))
    wait_until(lambda: "later.csv" in by_name(), timeout=30)
    assert watching.proc.poll() is None
