"""Taking an input: a claim marker first, then the rename that decides who owns the file.

``processing/<job_id>/.claim.json`` is written before the first rename and removed once the
job's chain is published. It names the claiming process and every move, so a process that died
in between leaves a precise note: with no job row, the claim is undone (the files go back where
they were dropped and are picked up again like any new drop); with a row never started, the
job is published. Nothing is lost, and nothing runs twice.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import socket
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator import safeopen

log = logging.getLogger(__name__)

MARKER = ".claim.json"
#: A batch folder is claimed whole into processing/<BATCH_PREFIX><batch id>/.
BATCH_PREFIX = ".batch-"
MAX_MARKER = 1 << 20
HOST = socket.gethostname()


def _start_ticks(pid: int) -> int | None:
    """When a process started (clock ticks since boot): a pid reused later differs here."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


@dataclass(frozen=True)
class Owner:
    host: str
    pid: int
    start: int | None

    @classmethod
    def me(cls) -> Owner:
        return _me(os.getpid())  # per pid: a forked child is another owner

    @classmethod
    def parse(cls, worker: str | None) -> Owner | None:
        """From the status history's ``host/pid``."""
        host, _, pid = (worker or "").rpartition("/")
        return cls(host, int(pid), None) if pid.isdigit() else None

    def is_me(self) -> bool:
        return self.host == HOST and self.pid == os.getpid()

    def is_dead(self) -> bool:
        """Known dead: a process of this host that is gone (or whose pid was reused).

        A process of another host cannot be checked from here: callers wait for a grace time.
        """
        if self.host != HOST:
            return False
        ticks = _start_ticks(self.pid)
        return ticks is None or (self.start is not None and ticks != self.start)


@functools.lru_cache(maxsize=8)
def _me(pid: int) -> Owner:
    return Owner(HOST, pid, _start_ticks(pid))


@dataclass
class Claim:
    """The moves of one job's inputs: (from, to) renames, and copies (to) from outside."""

    job_dir: Path
    moves: list[tuple[Path, Path]] = field(default_factory=list)
    copies: list[Path] = field(default_factory=list)
    batch_id: str | None = None
    owner: Owner = field(default_factory=Owner.me)
    at: float = field(default_factory=time.time)

    @property
    def marker(self) -> Path:
        return self.job_dir / MARKER

    def write(self) -> None:
        """Before the first rename: a crash after it leaves a marker saying what to undo."""
        self.job_dir.mkdir(parents=True, exist_ok=True)
        self.marker.write_text(json.dumps(self.to_dict()))

    def to_dict(self) -> dict[str, Any]:
        return {"owner": self.owner.__dict__, "at": self.at, "batch_id": self.batch_id,
                "moves": [[str(a), str(b)] for a, b in self.moves],
                "copies": [str(c) for c in self.copies]}

    @classmethod
    def read(cls, job_dir: Path) -> Claim | None:
        try:
            data = json.loads(read_marker(job_dir / MARKER))
            return cls(job_dir, [(Path(a), Path(b)) for a, b in data["moves"]],
                       [Path(c) for c in data["copies"]], data.get("batch_id"),
                       Owner(**data["owner"]), data["at"])
        except (OSError, ValueError, KeyError, TypeError, safeopen.Refused):
            return None  # none, or not one this pipeline wrote

    def take(self, source: Path, target: Path, *, move: bool, root: Path | None = None,
             caller_named: bool = False) -> Path:
        """Rename (inside the share: the rename decides who owns it) or copy ``source``.

        A copy is read from one descriptor opened by the share's rules (orchestrator/safeopen.py;
        ``root``: the share's root, by default the source's own folder): a link, FIFO or
        hard-linked file is Refused, never copied; the copy keeps the source's permission bits.
        The marker is rewritten first, so a crash mid-way still knows every move it made.
        """
        made = self.moves if move else self.copies
        made.append((source, target) if move else target)  # type: ignore[arg-type]
        self.write()
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if move:
                os.rename(source, target)
            else:
                partial = target.with_name(f".{target.name}.part")
                partial.unlink(missing_ok=True)  # left by a crash: this claim's own file
                with safeopen.open_file(root or source.parent, source,
                                        caller_named=caller_named) as opened:
                    safeopen.copy(opened, partial)
                partial.rename(target)
        except (FileNotFoundError, safeopen.Refused):
            made.pop()  # another claimer was first, or it may not be read: nothing to undo
            if self.moves or self.copies:
                self.write()
            else:
                shutil.rmtree(self.job_dir, ignore_errors=True)
            raise
        return target

    def done(self) -> None:
        """The job is published (or set aside): nothing is left to repair."""
        self.marker.unlink(missing_ok=True)

    def undo(self) -> list[Path]:
        """Put every moved file back where it was dropped; drop the copies and the folder.

        Returns where the files went back to. A name taken meanwhile by a new drop gets a
        suffix rather than overwriting it.
        """
        returned = []
        for source, target in reversed(self.moves):
            if not target.exists() and not target.is_symlink():
                continue
            back = _free_name(source)
            back.parent.mkdir(parents=True, exist_ok=True)
            os.rename(target, back)
            returned.append(back)
        shutil.rmtree(self.job_dir, ignore_errors=True)
        return returned


def read_marker(path: Path) -> bytes:
    """A marker's bytes, read by the share's rules (orchestrator/safeopen.py): processing/ is
    in the share, and a marker swapped for a FIFO or a link must not stop or fool the repair."""
    data = safeopen.read_bounded(path.parent, path, MAX_MARKER)
    if len(data) > MAX_MARKER:
        raise ValueError(f"{path.name} is larger than any marker the pipeline writes")
    return data


def _free_name(path: Path) -> Path:
    if not path.exists() and not path.is_symlink():
        return path
    for n in range(1, 1000):
        candidate = path.with_name(f"{path.stem} (returned {n}){path.suffix}")
        if not candidate.exists():
            return candidate
    raise FileExistsError(f"no free name next to {path}")


def abandoned(owner: Owner, since: float, grace: float) -> bool:
    """Whether work started by ``owner`` at ``since`` (epoch) can be taken over now."""
    if owner.is_me():
        return True  # our own leftovers: the loop is single-threaded, nothing is in flight
    if owner.is_dead():
        return True
    return time.time() - since > grace


def remove_if_empty(folder: Path) -> None:
    with suppress(OSError):
        folder.rmdir()
