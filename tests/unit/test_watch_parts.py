"""Unit tests of the watcher's parts (orchestrator/intake/watch/): the mode chosen from
/proc/mounts,
the settle check, the suspicious listing, the calm outage log. Stories: given, when, then."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from orchestrator.intake.watch.mode import choose, filesystem_of
from orchestrator.intake.watch.settle import Settler
from orchestrator.intake.watch.share import Outage, Unavailable, listing
from orchestrator.paths import is_temporary

MOUNTS = """\
/dev/sda1 / ext4 rw,relatime 0 0
//fileserver/prices /mnt/share cifs rw,vers=3.0 0 0
server:/export /mnt/nfs nfs4 rw 0 0
/dev/sdb1 /mnt/share/local ext4 rw 0 0
//srv/x /mnt/with\\040space cifs rw 0 0
"""


@pytest.mark.parametrize(("share", "mode", "fstype"), [
    ("/mnt/share/drop", "polling", "cifs"),
    ("/mnt/nfs", "polling", "nfs4"),
    ("/mnt/share/local/drop", "events", "ext4"),   # the longest mount point wins
    ("/mnt/sharex", "events", "ext4"),             # a prefix of a name is not a parent
    ("/mnt/with space/in", "polling", "cifs"),     # /proc/mounts escapes spaces as \\040
    ("/home/me/share", "events", "ext4"),
])
def test_auto_mode_polls_on_network_filesystems_only(share: str, mode: str, fstype: str) -> None:
    # given a share somewhere in this mount table, when the mode is auto
    chosen, reason = choose("auto", Path(share), MOUNTS)
    # then a network mount is polled, a local one watched for events, saying why
    assert chosen == mode
    assert fstype in reason
    assert filesystem_of(Path(share), MOUNTS) == fstype


@pytest.mark.parametrize("setting", ["events", "polling"])
def test_a_forced_mode_is_used_whatever_the_filesystem(setting: str) -> None:
    assert choose(setting, Path("/mnt/share/drop"), MOUNTS) == (
        setting, f"PIPELINE_WATCH_MODE={setting}")


@pytest.mark.parametrize("name", ["PRICES.TMP", "report.xlsx.crdownload", "data.csv.filepart",
                                  "~$book.xlsx", ".~lock.prices.csv#", "prices.csv~",
                                  "Thumbs.db", "a.partial"])
def test_more_temporary_names_are_ignored(name: str) -> None:
    assert is_temporary(name)


def test_a_file_is_ready_only_after_holding_still_for_the_settle_time(tmp_path: Path) -> None:
    # given a file looked at once
    path = tmp_path / "prices.csv"
    path.write_text("date,A\n")
    settler = Settler(1.0)
    assert not settler.file_ready(path, os.lstat(path), now=100.0)
    # when it is looked at again too soon, then it is not ready
    assert not settler.file_ready(path, os.lstat(path), now=100.5)
    # when it grew, then the clock starts again
    with path.open("a") as handle:
        handle.write("2024-01-02,1\n")
    assert not settler.file_ready(path, os.lstat(path), now=101.2)
    assert not settler.file_ready(path, os.lstat(path), now=102.0)
    # and once it held still for the settle time, it is ready
    assert settler.file_ready(path, os.lstat(path), now=102.3)


def test_content_that_changes_under_the_same_size_and_mtime_is_not_ready(tmp_path: Path) -> None:
    # given a preallocated file (final size already set) looked at once
    path = tmp_path / "prices.csv"
    path.write_bytes(b"\0" * 1000)
    st = os.lstat(path)
    settler = Settler(1.0)
    assert not settler.file_ready(path, st, now=0.0)
    # when its content is filled in and the copier restores the old mtime (a Windows copy)
    path.write_bytes(b"x" * 1000)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    # then size and mtime look settled, but the content sample sees the change
    assert not settler.file_ready(path, os.lstat(path), now=1.5)
    assert settler.file_ready(path, os.lstat(path), now=3.0)


def test_a_folder_is_ready_with_a_ready_marker_or_after_holding_still(tmp_path: Path) -> None:
    folder = tmp_path / "batch"
    folder.mkdir()
    settler = Settler(1.0)
    # given an empty folder: never a batch
    assert not settler.folder_ready(folder, 0.0)
    assert not settler.folder_ready(folder, 5.0)
    # when files arrive, it must hold still for the settle time
    (folder / "a.csv").write_text("x")
    assert not settler.folder_ready(folder, 6.0)
    assert settler.folder_ready(folder, 7.1)
    # and a READY file makes another folder ready at once
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.csv").write_text("x")
    (other / "READY").touch()
    assert settler.folder_ready(other, 0.0)


def test_a_listing_that_leaves_out_a_file_still_there_is_an_error(tmp_path: Path) -> None:
    # given a folder with one file the watcher tracks, and one it tracked that is gone
    (tmp_path / "a.csv").write_text("x")
    # when the listing is complete, then it is trusted
    assert listing(tmp_path, [tmp_path / "a.csv", tmp_path / "gone.csv"]) == [tmp_path / "a.csv"]
    # when a tracked file exists but the listing does not show it (a flaky mount)
    hidden = tmp_path / "sub"
    hidden.mkdir()
    (hidden / "b.csv").write_text("x")
    with pytest.raises(Unavailable, match=r"left out b\.csv"):
        listing(tmp_path, [tmp_path / "a.csv", hidden / "b.csv"])
    # and a folder that cannot be listed is an error, not "no files"
    with pytest.raises(Unavailable, match="cannot list"):
        listing(tmp_path / "missing", [])


def test_an_outage_is_logged_once_then_rarely_with_growing_waits(
        caplog: pytest.LogCaptureFixture) -> None:
    # given the share failing twenty times in a row
    outage = Outage("the share", base=0.5)
    with caplog.at_level(logging.INFO, logger="orchestrator.intake.watch.share"):
        waits = [outage.failed("No such file or directory") for _ in range(20)]
        # when it comes back
        outage.recovered()
    # then the waits grow to a cap, jittered (watchers on several hosts do not return together),
    # and the log has one error and one recovery line
    assert all(0.5 * n < w <= n for n, w in zip([0.5, 1.0, 2.0, 4.0], waits[:4], strict=True))
    assert all(15.0 < w <= 30.0 for w in waits[6:])
    assert len(set(waits[6:])) > 1
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "the share unavailable: No such file or directory" in messages[0]
    assert "the share available again" in messages[1]
