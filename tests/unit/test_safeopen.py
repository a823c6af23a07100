"""orchestrator.safeopen: the one place that decides whether a file of the share may be read."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from orchestrator import safeopen
from orchestrator.safeopen import Refused


@pytest.fixture
def share(tmp_path: Path) -> Path:
    (tmp_path / "share" / "input").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.csv").write_text("date,SECRET\n")
    return tmp_path / "share"


def refusal(root: Path, path: Path) -> str:
    with pytest.raises(Refused) as raised, safeopen.open_file(root, path):
        pass
    assert "SECRET" not in str(raised.value)
    return str(raised.value)


def test_a_regular_file_inside_the_share_is_opened_and_read_from_its_descriptor(share: Path):
    path = share / "input" / "prices.csv"
    path.write_text("date,A\n")
    with safeopen.open_file(share, path) as opened:
        assert safeopen.read(opened, 100) == b"date,A\n"
        assert stat.S_ISREG(opened.st.st_mode) and opened.name == "prices.csv"


def test_a_link_is_refused_even_to_a_file_inside_the_share(share: Path) -> None:
    (share / "input" / "real.csv").write_text("date,A\n")
    (share / "input" / "link.csv").symlink_to(share / "input" / "real.csv")
    assert "link.csv: a symbolic link; links are never followed" in refusal(
        share, share / "input" / "link.csv")


def test_a_path_through_a_linked_folder_is_refused(share: Path) -> None:
    (share / "input" / "sub").symlink_to(share.parent / "outside")
    message = refusal(share, share / "input" / "sub" / "secret.csv")
    assert "goes through the symbolic link 'sub'" in message


def test_a_path_climbing_out_of_the_share_is_refused_unless_the_caller_named_it(share: Path):
    climbing = share / "input" / ".." / ".." / "outside" / "secret.csv"
    assert "a path outside the share" in refusal(share, climbing)
    with safeopen.open_file(share, climbing, caller_named=True) as opened:  # `pipeline submit`
        assert safeopen.read(opened, 100) == b"date,SECRET\n"


def test_a_hard_link_is_refused_saying_why(share: Path) -> None:
    os.link(share.parent / "outside" / "secret.csv", share / "input" / "j.csv")
    assert "it has 2 hard links" in refusal(share, share / "input" / "j.csv")


@pytest.mark.parametrize("caller_named", [False, True])
def test_a_fifo_is_refused_without_blocking(share: Path, caller_named: bool) -> None:
    fifo = share / "input" / "i.csv"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []

    def attempt() -> None:
        try:
            with safeopen.open_file(share, fifo, caller_named=caller_named):
                pass
        except BaseException as error:  # handed to the test thread
            outcome.append(error)

    opener = threading.Thread(target=attempt, daemon=True)
    opener.start()
    opener.join(30)  # a blocking open() would wait for a writer for ever
    if opener.is_alive():
        with open(fifo, "wb"):  # free the thread: a writer arrives
            pass
        pytest.fail("opening the FIFO blocked")
    assert len(outcome) == 1 and isinstance(outcome[0], Refused)
    assert "not a regular file (a FIFO" in str(outcome[0])


def test_a_copy_keeps_the_source_s_permission_bits(share: Path, tmp_path: Path) -> None:
    source = share / "input" / "private.csv"
    source.write_text("date,A\n")
    source.chmod(0o600)
    with safeopen.open_file(share, source) as opened:
        safeopen.copy(opened, tmp_path / "copy.csv")
    assert stat.S_IMODE(os.stat(tmp_path / "copy.csv").st_mode) == 0o600
    assert (tmp_path / "copy.csv").read_text() == "date,A\n"
