"""Filesystem events (watchdog) turned into hints for the watcher's loop.

The loop never trusts an event on its own: a hint says "look at this path now". Only one kind
changes what the loop does with the file: a rename into input/ (inotify IN_MOVED_TO, also from
outside the watched folder) means the file arrived complete, so it is claimed without waiting
for it to settle. Everything else (created, modified, closed) starts or refreshes the settle
check. A lost event costs nothing but latency: the periodic scan finds the file.
"""

from __future__ import annotations

import logging
import os
import queue
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from watchdog.events import (
    DirDeletedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
    FileSystemMovedEvent,
)
from watchdog.observers.api import BaseObserver

log = logging.getLogger(__name__)

Kind = Literal["arrived", "changed", "gone"]


@dataclass(frozen=True)
class Hint:
    path: Path
    kind: Kind


class _Handler(FileSystemEventHandler):
    def __init__(self, folder: Path, hints: queue.SimpleQueue[Hint]) -> None:
        self.folder = os.fspath(folder)
        self.hints = hints

    def on_any_event(self, event: FileSystemEvent) -> None:
        if isinstance(event, FileSystemMovedEvent):
            dest = os.fsdecode(event.dest_path)
            if dest and os.path.dirname(dest) == self.folder:
                self.hints.put(Hint(Path(dest), "arrived"))
            return  # the source side of a move: the file left (we claimed it, usually)
        path = os.fsdecode(event.src_path)
        if isinstance(event, DirDeletedEvent) and path == self.folder:
            self.hints.put(Hint(Path(path), "gone"))
        elif os.path.dirname(path) == self.folder and event.event_type in (
                "created", "modified", "closed"):
            self.hints.put(Hint(Path(path), "changed"))


#: watchdog holds every IN_MOVED_FROM for 0.5 s to pair it with its IN_MOVED_TO, and its queue
#: is FIFO: each of our own claims (a rename out of input/) would hold back every event behind
#: it for half a second. The kernel queues the two halves of a rename back to back, so a few
#: milliseconds still pair them.
MOVE_PAIRING_DELAY = 0.005


def _observer() -> BaseObserver:
    try:  # full events: a rename from outside input/ is reported as a move, not a creation
        from watchdog.observers.inotify import InotifyObserver
        from watchdog.observers.inotify_move_event_grouper import InotifyMoveEventGrouper

        InotifyMoveEventGrouper.delay = MOVE_PAIRING_DELAY
        return InotifyObserver(generate_full_events=True)
    except (ImportError, OSError):
        from watchdog.observers import Observer

        return Observer()


class EventSource:
    """Watches one folder (not recursively) and queues hints for the loop."""

    def __init__(self, folder: Path, hints: queue.SimpleQueue[Hint]) -> None:
        self.folder = folder
        self.hints = hints
        self._observer: BaseObserver | None = None

    def arm(self) -> bool:
        """Start watching; False (and logged) when the folder cannot be watched now."""
        self.disarm()
        observer = _observer()
        try:
            observer.schedule(_Handler(self.folder, self.hints), os.fspath(self.folder),
                              recursive=False)
            observer.start()
        except OSError as error:
            with suppress(Exception):  # release the inotify descriptor it opened
                observer.stop()
            log.warning("cannot watch %s for events (%s); the scan still runs", self.folder,
                        error)
            return False
        self._observer = observer
        return True

    def disarm(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None

    @property
    def armed(self) -> bool:
        return self._observer is not None and self._observer.is_alive()
