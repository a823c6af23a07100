"""Is the share there? Listing input/ with suspicion, and backing off while it is away.

A failed listing is an error, never "no files". So is a listing that leaves out a file we were
tracking when that file can still be stat'ed: a slow or flaky network mount can return an
empty or partial listing (watchdog issue 802), after which everything would look new.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from orchestrator import safeopen
from orchestrator.policy.backoff import JITTER, backoff

log = logging.getLogger(__name__)

#: Longest wait between two tries while something is unavailable, and between two log lines.
MAX_BACKOFF = 30.0
LOG_EVERY = 60.0


class Unavailable(Exception):
    """The share (or the store, or the broker) cannot be used right now."""


def identity(folder: Path) -> tuple[int, int]:
    """(device, inode) of the folder: changes when the share is remounted or recreated.

    A share folder replaced by a symbolic link is not used: renames and reads through it would
    reach whatever it points to, outside the share."""
    try:
        st = os.lstat(folder)
    except OSError as error:
        raise Unavailable(f"{folder}: {error.strerror or error}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise Unavailable(f"{folder} is {safeopen.kind(st.st_mode)}, not a folder: the share's "
                          "folders must be real folders (a link would lead out of the share)")
    return st.st_dev, st.st_ino


def listing(folder: Path, tracked: Iterable[Path]) -> list[Path]:
    """Every entry of ``folder``; Unavailable when it cannot be listed or the listing lies."""
    try:
        with os.scandir(folder) as entries:
            found = [Path(entry.path) for entry in entries]
    except OSError as error:
        raise Unavailable(f"cannot list {folder}: {error.strerror or error}") from None
    present = set(found)
    for path in [p for p in tracked if p not in present][:5]:
        if os.path.lexists(path):
            raise Unavailable(f"the listing of {folder} left out {path.name}, which is still "
                              "there: an unreliable listing (network mount?) is not trusted")
    return found


@dataclass
class Outage:
    """Backoff and calm logging for one thing that went away (the share, the store...).

    The waits are the task policy's backoff (orchestrator/policy/backoff.py) from ``base`` up to
    MAX_BACKOFF, with jitter: watchers on several hosts do not all return at the same moment."""

    what: str
    base: float
    jitter: float = JITTER
    since: float | None = None
    tries: int = 0
    retry_at: float = 0.0
    logged_at: float = 0.0

    @property
    def active(self) -> bool:
        return self.since is not None

    def failed(self, reason: object) -> float:
        """Record a failed try; returns the seconds to wait before the next one."""
        now = time.monotonic()
        if self.since is None:
            self.since, self.logged_at = now, now
            log.error("%s unavailable: %s; retrying with backoff", self.what, reason)
        elif now - self.logged_at >= LOG_EVERY:
            self.logged_at = now
            log.warning("%s still unavailable after %.0f s (%d tries): %s", self.what,
                        now - self.since, self.tries, reason)
        delay = backoff(self.tries, base=self.base, cap=MAX_BACKOFF, jitter=self.jitter)
        self.tries += 1
        self.retry_at = now + delay
        return delay

    def wait_left(self) -> float:
        return max(0.0, self.retry_at - time.monotonic()) if self.active else 0.0

    def recovered(self) -> None:
        if self.since is not None:
            log.warning("%s available again after %.1f s", self.what,
                        time.monotonic() - self.since)
        self.since, self.tries, self.retry_at = None, 0, 0.0
