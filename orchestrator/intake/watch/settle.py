"""When is a dropped file complete? When it held still across two looks far enough apart.

A look is the file's size, its mtime and a digest of its first and last 64 KiB. A file is
ready when a look at least ``PIPELINE_SETTLE_SECONDS`` after the first one finds all three
unchanged. Size and mtime alone can fire early (a Windows copy may set the final size first
and the source's mtime last; an NFS client may serve cached attributes), so the content sample
is read again at the second look, right before the claim. Files that arrived by rename skip
this: a rename is atomic, the file was complete before it appeared.

A folder is ready when it holds a ``READY`` file, or when its listing (names, sizes, mtimes)
held still for the settle time.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator import safeopen
from orchestrator.paths import is_temporary

SAMPLE = 64 * 1024
READY_MARKER = "READY"


def sample(path: Path, size: int) -> bytes:
    """Digest of the head and tail of a file (all of it when small), read by the share's rules
    (orchestrator/safeopen.py): a link, FIFO, device or hard-linked file is not read (what it
    is stands in for its content: it is refused with that reason when claimed)."""
    digest = hashlib.sha256()
    try:
        with safeopen.open_file(path.parent, path) as opened:
            digest.update(os.pread(opened.fd, SAMPLE, 0))
            if size > SAMPLE:
                digest.update(os.pread(opened.fd, SAMPLE, max(SAMPLE, size - SAMPLE)))
    except safeopen.Refused as refused:
        return f"refused: {refused.reason}".encode()
    return digest.digest()


@dataclass
class Look:
    key: Any
    content: bytes
    since: float


class Settler:
    def __init__(self, settle_seconds: float) -> None:
        self.settle = settle_seconds
        self.looks: dict[Path, Look] = {}

    def file_ready(self, path: Path, st: os.stat_result, now: float) -> bool:
        """Look at a file (``st`` from lstat); True when it held still since the first look."""
        if not stat.S_ISREG(st.st_mode):  # a link, FIFO, socket, device: never opened here;
            what = safeopen.kind(st.st_mode).encode()  # refused with its reason when claimed
            return self._held(path, (st.st_size, st.st_mtime_ns), now, lambda: what)
        return self._held(path, (st.st_size, st.st_mtime_ns), now,
                          lambda: sample(path, st.st_size))

    def folder_ready(self, path: Path, now: float) -> bool:
        names = os.listdir(path)
        if READY_MARKER in names:
            return True
        listing = tuple(sorted(_entry(path, n) for n in names))
        held = self._held(path, listing, now, lambda: b"")
        return held and any(not is_temporary(n) for n in names)  # empty: not a batch (yet)

    def _held(self, path: Path, key: Any, now: float, content: Any) -> bool:
        old = self.looks.get(path)
        if old is None or old.key != key:
            self.looks[path] = Look(key, content(), now)
            return False
        if now - old.since < self.settle:
            return False
        current = content()
        if current != old.content:
            self.looks[path] = Look(key, current, now)
            return False
        return True

    def forget(self, path: Path) -> None:
        self.looks.pop(path, None)

    def due(self, now: float) -> list[Path]:
        """Tracked paths whose settle time has passed: look at them again now."""
        return [p for p, look in self.looks.items() if now - look.since >= self.settle]

    def deadlines(self) -> list[float]:
        """When each tracked path is due for its second look (monotonic time)."""
        return [look.since + self.settle for look in self.looks.values()]


def _entry(folder: Path, name: str) -> tuple[str, int, int]:
    try:
        st = os.lstat(folder / name)
    except FileNotFoundError:
        return (name, -1, -1)
    return (name, st.st_size, st.st_mtime_ns)
