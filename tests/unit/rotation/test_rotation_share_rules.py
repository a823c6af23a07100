"""Rotation reads a job's folder by the share's rules (orchestrator/safeopen.py): what a share
user plants in completed/ (a link to a file outside the share, a FIFO, a hard link), before the
run or between the look at a file and its opening, is never read, never blocks the run, and
leaves its job as it was while the other jobs rotate. Restore never writes through a link.

The secret is a file of the test's own outside the share; "between the look and the open" is
made exact by doing the swap right after the rotation's own look at the file (os.lstat, or
os.stat without following links), which is where the attacker's race would have to land.
"""

from __future__ import annotations

import gzip
import logging
import os
import stat
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from orchestrator.errors import DataError
from orchestrator.paths import Share
from orchestrator.rotation.restore import restore
from orchestrator.store import jobs as store
from tests.rotation_support import check_consistent, days_ago, make_jobs, run_rotation

BOUND = 120.0  # seconds: a run over six tiny jobs takes well under one; a blocked one never ends


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "outside" / "secret.txt"
    path.parent.mkdir()
    path.write_bytes(f"TOP-SECRET-{uuid.uuid4().hex}\n".encode())
    return path


def jobs_with_one_planted(share, plant: Callable[[Path], None]) -> tuple[list[str], str]:  # type: ignore[no-untyped-def]
    ids = make_jobs(share.share, 6, finished_at=days_ago(40))
    bad = ids[2]
    plant(share.share / "completed" / bad)
    return ids, bad


def rotate_within_bound(settings, unblock: Path | None = None):  # type: ignore[no-untyped-def]
    """The run, in a thread that must end within BOUND seconds (else the test fails, after
    opening the FIFO ``unblock`` for writing, which frees a reader stuck on it)."""
    outcome: dict[str, object] = {}

    def go() -> None:
        try:
            outcome["run"] = run_rotation(settings)
        except BaseException as error:  # handed to the test below
            outcome["error"] = error

    worker = threading.Thread(target=go, daemon=True)
    worker.start()
    worker.join(BOUND)
    if worker.is_alive():
        if unblock is not None:
            fd = os.open(unblock, os.O_WRONLY | os.O_NONBLOCK)
            os.close(fd)
        worker.join(BOUND)
        pytest.fail(f"the rotation run did not end within {BOUND:.0f} s (blocked)")
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["run"]


def written_bytes(root: Path) -> Iterator[tuple[Path, bytes]]:
    """Every regular file under ``root`` (links and FIFOs not followed), gzip ones also
    decompressed: archives, manifests, logs, error files, the database."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            if not stat.S_ISREG(os.lstat(path).st_mode):
                continue
            data = path.read_bytes()
            yield path, data
            if data[:2] == b"\x1f\x8b":
                yield path, gzip.decompress(data)


def assert_secret_nowhere(share, secret: Path, run, caplog) -> None:  # type: ignore[no-untyped-def]
    """Not in any file of the installation (share, var: archives, manifests, logs, database)
    but the test's own outside/ folder and a hard link planted for the secret itself."""
    content = secret.read_bytes().strip()
    own = os.stat(secret)
    for path, data in written_bytes(share.root):
        if secret.parent not in path.parents and not os.path.samestat(os.lstat(path), own):
            assert content not in data, f"the secret's content is in {path}"
    assert content.decode() not in caplog.text
    assert content.decode() not in str(run.error)


def assert_refused_and_rest_rotated(share, run, ids: list[str], bad: str, says: str) -> None:  # type: ignore[no-untyped-def]
    assert run.status == "completed", run.error
    assert run.jobs_done == len(ids) - 1
    assert run.kinds() == {"refused": 1}
    [message] = run.error["messages"]
    assert bad in message and "not archived and not deleted" in message and says in message
    assert store.get_job(bad).state == "completed"
    assert (share.share / "completed" / bad).is_dir()
    assert {store.get_job(j).state.value for j in ids if j != bad} == {"archived"}
    assert check_consistent(share.share) == {"archived": len(ids) - 1, "completed": 1}


def look_then(monkeypatch: pytest.MonkeyPatch, target: Path, act: Callable[[], None]) -> list[int]:
    """Run ``act`` once, right after something looks at ``target`` without following links
    (``os.lstat(path)``, or ``os.stat(name, dir_fd=..., follow_symlinks=False)``)."""
    real_lstat, real_stat, real_readlink = os.lstat, os.stat, os.readlink
    wanted = {os.path.abspath(target), os.path.join(os.path.realpath(target.parent), target.name)}
    done: list[int] = []

    def fire(where: str) -> None:
        if not done and where in wanted:
            done.append(1)
            act()

    def lstat(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        result = real_lstat(path, *args, **kwargs)
        if isinstance(path, (str, os.PathLike)):
            fire(os.path.abspath(path))
        return result

    def stat_(path, *args, dir_fd=None, follow_symlinks=True, **kwargs):  # type: ignore[no-untyped-def]
        result = real_stat(path, *args, dir_fd=dir_fd, follow_symlinks=follow_symlinks, **kwargs)
        if not follow_symlinks and isinstance(path, (str, os.PathLike)):
            base = real_readlink(f"/proc/self/fd/{dir_fd}") if dir_fd is not None else ""
            fire(os.path.join(base, os.fspath(path)) if base else os.path.abspath(path))
        return result

    monkeypatch.setattr(os, "lstat", lstat)
    monkeypatch.setattr(os, "stat", stat_)
    return done


def swap(make: Callable[[Path], None]) -> Callable[[Path], None]:
    def act(path: Path) -> None:
        path.unlink()
        make(path)
    return act


def test_a_link_to_a_file_outside_the_share_leaves_its_job_as_it_was(share, secret, caplog):
    # Given six old jobs, one of whose weights.csv a share user replaced by a link to a secret
    def plant(folder: Path) -> None:
        (folder / "weights.csv").unlink()
        (folder / "weights.csv").symlink_to(secret)

    ids, bad = jobs_with_one_planted(share, plant)
    caplog.set_level(logging.INFO)
    # When rotation runs
    run = rotate_within_bound(share.settings)
    # Then that job is refused with the file and the reason named, left as it was (link too);
    # the five others are archived; the secret's content is nowhere
    assert_refused_and_rest_rotated(share, run, ids, bad, "weights.csv: a symbolic link")
    assert (share.share / "completed" / bad / "weights.csv").is_symlink()
    assert_secret_nowhere(share, secret, run, caplog)


def test_a_hard_link_to_a_file_outside_the_share_is_not_archived(share, secret, caplog):
    # Given a job whose report.json is a second name (hard link) of the secret
    def plant(folder: Path) -> None:
        (folder / "report.json").unlink()
        os.link(secret, folder / "report.json")

    ids, bad = jobs_with_one_planted(share, plant)
    caplog.set_level(logging.INFO)
    run = rotate_within_bound(share.settings)
    assert_refused_and_rest_rotated(share, run, ids, bad, "report.json: it has 2 hard links")
    assert_secret_nowhere(share, secret, run, caplog)


def rotate_with_swap(share, monkeypatch, name: str,  # type: ignore[no-untyped-def]
                     act: Callable[[Path], None], fifo: bool = False):
    """Six old jobs; ``act(path)`` swaps ``completed/<third job>/<name>`` right after rotation
    has looked at it; the run (within the bound). Returns (ids, the third job, the run)."""
    ids = make_jobs(share.share, 6, finished_at=days_ago(40))
    target = share.share / "completed" / ids[2] / name
    swapped = look_then(monkeypatch, target, lambda: act(target))
    run = rotate_within_bound(share.settings, unblock=target if fifo else None)
    monkeypatch.undo()
    assert swapped, "the swap never happened"
    return ids, ids[2], run


def test_a_file_swapped_for_a_link_after_the_look_is_not_read(share, secret, caplog,
                                                               monkeypatch):
    # Given a job whose weights.csv is swapped for a link to the secret right after rotation
    # has looked at it (and found a regular file)
    caplog.set_level(logging.INFO)
    ids, bad, run = rotate_with_swap(share, monkeypatch, "weights.csv",
                                     swap(lambda p: p.symlink_to(secret)))
    # Then the link was refused, never followed
    assert_refused_and_rest_rotated(share, run, ids, bad, "weights.csv: a symbolic link")
    assert_secret_nowhere(share, secret, run, caplog)


def test_a_folder_swapped_for_a_link_after_the_look_is_not_walked(share, secret, caplog,
                                                                  monkeypatch):
    # Given a job whose input/ folder is swapped for a link to a folder outside the share
    # (holding the secret as prices.csv) right after rotation has looked at it
    (secret.parent / "prices.csv").write_bytes(secret.read_bytes())

    def act(target: Path) -> None:
        target.rename(target.with_name("input.moved"))
        target.symlink_to(secret.parent, target_is_directory=True)

    caplog.set_level(logging.INFO)
    ids, bad, run = rotate_with_swap(share, monkeypatch, "input", act)
    assert_refused_and_rest_rotated(share, run, ids, bad, "input: a symbolic link")
    assert_secret_nowhere(share, secret, run, caplog)


def test_a_file_swapped_for_a_fifo_after_the_look_does_not_block_the_run(share, monkeypatch):
    # Given a job whose report.json is swapped for a FIFO right after rotation looked at it;
    # when rotation runs, then it ends within the bound: the FIFO is refused, not waited on
    ids, bad, run = rotate_with_swap(share, monkeypatch, "report.json", swap(os.mkfifo),
                                     fifo=True)
    assert_refused_and_rest_rotated(share, run, ids, bad, "report.json: not a regular file "
                                                          "(a FIFO (named pipe))")
    assert stat.S_ISFIFO(os.lstat(share.share / "completed" / bad / "report.json").st_mode)


def test_a_fifo_planted_before_the_run_leaves_its_job_as_it_was(share, secret, caplog):
    def plant(folder: Path) -> None:
        os.mkfifo(folder / "input" / "extra.csv")

    ids, bad = jobs_with_one_planted(share, plant)
    run = rotate_within_bound(share.settings, unblock=share.share / "completed" / ids[2]
                              / "input" / "extra.csv")
    assert_refused_and_rest_rotated(share, run, ids, bad, "input/extra.csv: not a regular file")


def test_restore_never_writes_through_a_link_planted_in_its_staging_folder(share, tmp_path,
                                                                           monkeypatch):
    # Given an archived job, and a file of the operator's outside the share
    ids = make_jobs(share.share, 3, finished_at=days_ago(40))
    run_rotation(share.settings)
    victim = tmp_path / "outside-victim.txt"
    victim.write_bytes(b"keep me\n")
    completed = share.share / "completed"
    # And a share user who, as soon as the restore's hidden staging folder appears in
    # completed/, plants weights.csv there as a link to that file
    import orchestrator.rotation.restore as restoring

    real_write = restoring._write_member

    def planting(*args, **kwargs):  # type: ignore[no-untyped-def]
        for staging in completed.glob(f".{ids[0]}.restoring-*"):
            link = staging / "weights.csv"
            if not os.path.lexists(link):
                link.symlink_to(victim)
        return real_write(*args, **kwargs)

    monkeypatch.setattr(restoring, "_write_member", planting)
    # When the job is restored, then it is refused, the outside file is untouched, and nothing
    # is left in completed/ (no staging folder, no half-restored job); the job stays archived
    with pytest.raises(DataError, match=r"weights\.csv"):
        restore(Share(share.share), ids[0])
    assert victim.read_bytes() == b"keep me\n"
    assert list(completed.iterdir()) == []
    assert store.get_job(ids[0]).state == "archived"
    # And without the planted link it restores as before
    monkeypatch.undo()
    assert restore(Share(share.share), ids[0]).files == 3


def test_a_link_planted_under_the_hidden_removal_name_is_removed_not_followed(share, tmp_path):
    # Given old jobs, and for one of them a link to a folder outside the share planted under
    # the hidden name rotation renames a job's folder to before deleting it
    ids = make_jobs(share.share, 3, finished_at=days_ago(40))
    outside = tmp_path / "outside-folder"
    (outside / "keep.txt").parent.mkdir()
    (outside / "keep.txt").write_bytes(b"keep me\n")
    planted = share.share / "completed" / f".{ids[1]}.removing"
    planted.symlink_to(outside, target_is_directory=True)
    # When rotation runs, then every job is archived, the link is gone, the folder it pointed
    # to is untouched
    run = rotate_within_bound(share.settings)
    assert run.status == "completed" and run.jobs_done == 3, run.error
    assert check_consistent(share.share) == {"archived": 3}
    assert not os.path.lexists(planted)
    assert (outside / "keep.txt").read_bytes() == b"keep me\n"


def test_a_job_folder_with_more_entries_than_can_be_held_open_is_refused(share):
    from orchestrator.rotation.packing import MAX_ENTRIES

    def plant(folder: Path) -> None:
        for n in range(MAX_ENTRIES):
            (folder / f"extra-{n:04d}.txt").write_bytes(b"x")

    ids, bad = jobs_with_one_planted(share, plant)
    run = rotate_within_bound(share.settings)
    assert_refused_and_rest_rotated(share, run, ids, bad, f"more than {MAX_ENTRIES:,} files")
