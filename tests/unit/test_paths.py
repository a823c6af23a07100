"""Unit tests of orchestrator.paths: each test is a short story (given, when, then)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from orchestrator.paths import FOLDERS, Share, is_temporary, write_atomic, write_json


@pytest.fixture
def share(tmp_path: Path) -> Share:
    return Share(tmp_path / "share").ensure()


def dropped(share: Share, name: str = "prices.csv", text: str = "date,A\n") -> Path:
    path = share.input / name
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------- names


@pytest.mark.parametrize("name", [".x", ".prices.csv.part", "~$x.xlsx", "~lock.csv", "a.tmp",
                                  "a.part", "a.crdownload", "a.csv.swp"])
def test_names_being_written_or_owned_by_an_editor_are_temporary(name: str) -> None:
    assert is_temporary(name)


@pytest.mark.parametrize("name", ["a.csv", "job.json", "prices 2024.csv", "a.tmp.csv"])
def test_ordinary_input_names_are_not_temporary(name: str) -> None:
    assert not is_temporary(name)


# ----------------------------------------------------------------------------- atomic writes


def test_write_atomic_creates_the_file_and_leaves_nothing_else(tmp_path: Path) -> None:
    target = tmp_path / "result.json"
    write_atomic(target, "hello")
    assert target.read_text() == "hello"
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_write_atomic_replaces_the_content_whole(tmp_path: Path) -> None:
    # given a long file, when a shorter content is written over it
    target = tmp_path / "result.txt"
    write_atomic(target, b"x" * 10_000)
    write_atomic(target, b"short")
    # then only the new content remains, with no tail of the old one
    assert target.read_bytes() == b"short"
    assert [p.name for p in tmp_path.iterdir()] == ["result.txt"]


def test_a_reader_never_sees_a_partial_file(tmp_path: Path) -> None:
    # given a writer replacing a 2 MB file with another, over and over
    target = tmp_path / "big.bin"
    contents = (b"a" * 2_000_000, b"b" * 2_000_000)
    write_atomic(target, contents[0])
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            write_atomic(target, contents[n % 2])

    thread = threading.Thread(target=writer)
    thread.start()
    # when a reader reads it meanwhile, then it only ever sees one whole version
    try:
        seen = {target.read_bytes() in contents for _ in range(200)}
    finally:
        stop.set()
        thread.join()
    assert seen == {True}


def test_write_json_is_readable_json(tmp_path: Path) -> None:
    write_json(tmp_path / "e.json", {"b": 1, "a": Path("/x")})
    assert json.loads((tmp_path / "e.json").read_text()) == {"a": "/x", "b": 1}


# ----------------------------------------------------------------------------- the share


def test_ensure_creates_every_share_folder(tmp_path: Path) -> None:
    share = Share(tmp_path / "new").ensure()
    assert sorted(p.name for p in share.root.iterdir()) == sorted(FOLDERS)


def test_claim_input_moves_the_file_into_the_job_folder(share: Share) -> None:
    # given a file dropped in input/
    source = dropped(share, text="date,A\n2024-01-02,1\n")
    # when a job claims it
    claimed = share.claim_input(source, "job1")
    # then it is in processing/job1/input/ with its content, and gone from input/
    assert claimed == share.processing / "job1" / "input" / "prices.csv"
    assert claimed.read_text() == "date,A\n2024-01-02,1\n"
    assert not source.exists()


def test_of_two_claimers_of_one_file_only_the_first_wins(share: Share) -> None:
    # given a file claimed by one job
    source = dropped(share)
    share.claim_input(source, "first")
    # when a second job tries to claim the same file, then it is told the file is gone
    with pytest.raises(FileNotFoundError):
        share.claim_input(source, "second")
    # and the first job keeps it
    assert (share.processing / "first" / "input" / "prices.csv").is_file()


def test_a_losing_claimer_leaves_no_job_folder_behind(share: Share) -> None:
    source = dropped(share)
    share.claim_input(source, "first")
    with pytest.raises(FileNotFoundError):
        share.claim_input(source, "second")
    assert not (share.processing / "second").exists()


def test_move_job_moves_the_folder_and_a_repeat_is_harmless(share: Share) -> None:
    # given a job folder with its input in processing/
    share.claim_input(dropped(share), "job1")
    # when it is moved to completed/ twice (a redelivered step)
    first = share.move_job("job1", "completed")
    second = share.move_job("job1", "completed")
    # then both calls give the same place, which holds the input, and processing/ is empty
    assert first == second == share.completed / "job1"
    assert (first / "input" / "prices.csv").is_file()
    assert list(share.processing.iterdir()) == []


def test_move_job_of_an_unknown_job_raises(share: Share) -> None:
    with pytest.raises(FileNotFoundError, match="ghost"):
        share.move_job("ghost", "failed")


@pytest.mark.parametrize("folder", ["processing", "completed", "failed"])
def test_locate_finds_the_job_wherever_its_state_put_it(share: Share, folder: str) -> None:
    (share.root / folder / "job1").mkdir()
    assert share.locate("job1") == share.root / folder / "job1"


def test_locate_of_an_unknown_job_is_none(share: Share) -> None:
    (share.archive / "job1").mkdir()  # archive/ is not a live job folder
    assert share.locate("job1") is None


def test_inputs_of_lists_the_claimed_files_sorted(share: Share) -> None:
    share.claim_input(dropped(share, "b.csv"), "job1")
    share.claim_input(dropped(share, "a.json"), "job1")
    folder = share.job_dir("job1")
    assert [p.name for p in share.inputs_of(folder)] == ["a.json", "b.csv"]
    assert share.inputs_of(share.job_dir("none")) == []
