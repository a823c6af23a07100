"""Opening a file because of what someone put in the share: once, links never followed,
the decision made on the opened descriptor, never on a path looked at earlier.

Why: anyone who can write to the share can swap a name for a symbolic link between the moment
the pipeline checks it and the moment it reads it (a job file naming ``../stage2/t.csv`` while
another process swaps ``t.csv`` for a link to a secret copied that secret into ``failed/``), can
hard-link a file from outside the share into it, or can drop a FIFO that blocks ``open()`` for
good. So every file the share makes the pipeline read is opened here, and only here:

- Each name below the share's root is opened relative to the folder opened before it
  (``openat``, Python's ``dir_fd``), folders with ``O_DIRECTORY | O_NOFOLLOW``, the file with
  ``O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC``: a symbolic link anywhere on the way is refused, a
  ``..`` is resolved by the path's text before anything is opened and may not leave the share,
  and a FIFO never blocks the open. This is ``openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)``
  by hand: Python 3.11 has no ``os.openat2`` and no maintained package wraps it.
- The opened descriptor is then checked (``fstat``): a regular file, on the share's own device
  (a hard link cannot cross devices, and nor can the pipeline's renames), with exactly one link.
  A file with more than one hard link may be a second name of a file outside the share that
  the user could not otherwise have dropped: it is refused unread. Copy it in instead.
- The caller reads, copies or hashes from that descriptor only.

A file named on the command line (``pipeline submit ~/prices.csv``) is the caller's own choice,
read with the caller's own permissions: it may be outside the share, and it is opened following
links, but still non-blocking and only if it is a regular file. A path that comes from a file in
the share (a job file's ``input_file``, ``reference_file``) is always held to the share's rules.

Refusals are :class:`Refused` (a DataError naming the file and the reason); they never quote
the file's content. This module imports neither Celery nor the database layer.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import DataError

_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_NAMED = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISLNK, "a symbolic link"))
HARD_LINKS = ("it has {n} hard links: a file with more than one name may be a link to a file "
              "outside the share, so it is not read (copy the file into the share instead of "
              "linking it)")
SYMLINK = "a symbolic link; links are never followed (inputs must be regular files)"
DENIED = "the pipeline may not read it (permission denied)"


class Refused(DataError):
    """A file the pipeline will not read, and why (never what it holds)."""


@dataclass(frozen=True)
class Opened:
    """An open, checked, read-only descriptor and what fstat said about it."""

    fd: int
    st: os.stat_result
    name: str

    @property
    def mode(self) -> int:
        """What a copy of it gets: its permission bits (owner read/write added, so that the
        pipeline can read its own copy; no set-id bits)."""
        return (stat.S_IMODE(self.st.st_mode) & 0o777) | 0o600


def kind(mode: int) -> str:
    """'a FIFO (named pipe)', 'a folder'... for any mode that is not a regular file's."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def inside(root: Path, path: Path) -> tuple[str, ...] | None:
    """The names leading from ``root`` to ``path``, by the text of both (``..`` resolved the
    way the text says, links below the root not looked at); None when ``path`` is not below
    ``root``. The root may be given through a link (the operator's setting): ``path`` may be
    spelled from either its given or its real location."""
    target = os.path.abspath(path)
    for base in dict.fromkeys((os.path.abspath(root), os.path.realpath(root))):
        if target != base and os.path.commonpath([base, target]) == base:
            return tuple(Path(target).relative_to(base).parts)
    return None


@contextmanager
def open_file(root: Path, path: Path, *, caller_named: bool = False) -> Iterator[Opened]:
    """``path`` open for reading, checked; closed on leaving the block.

    The one place that decides whether a file may be read. ``caller_named``: the path came from
    the caller (a command-line argument), not from the share; outside the share it is then read
    as the caller's own file. Raises FileNotFoundError when it is gone (another claimer took
    it), Refused when it may not be read, OSError for anything else (the share went away).
    """
    names = inside(root, path)
    if names is not None:
        fd = _open_beneath(Path(root), names, Path(path).name)
    elif caller_named:
        fd = _open_named(Path(path))
    else:
        raise Refused("a path outside the share", file=Path(path).name)
    try:
        yield Opened(fd, os.fstat(fd), Path(path).name)
    finally:
        os.close(fd)


def check(root: Path, path: Path) -> os.stat_result:
    """Refused unless ``path`` would be read: a regular, singly linked file inside the share."""
    with open_file(root, path) as opened:
        return opened.st


def read(opened: Opened, limit: int) -> bytes:
    """Up to ``limit`` + 1 bytes from the start (so a caller can tell 'more than limit')."""
    os.lseek(opened.fd, 0, os.SEEK_SET)
    chunks, left = [], limit + 1
    while left > 0 and (chunk := os.read(opened.fd, min(left, 1 << 20))):
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_bounded(root: Path, path: Path, limit: int, *, caller_named: bool = False) -> bytes:
    """Up to ``limit`` + 1 bytes of ``path``, opened by :func:`open_file`'s rules."""
    with open_file(root, path, caller_named=caller_named) as opened:
        return read(opened, limit)


def copy(opened: Opened, target: Path) -> None:
    """Copy from the descriptor into ``target`` (which must not exist), keeping the source's
    permission bits: a copy is never more readable than what it was copied from."""
    out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                  0o600)
    try:
        os.fchmod(out, opened.mode)
        os.lseek(opened.fd, 0, os.SEEK_SET)
        with open(opened.fd, "rb", closefd=False) as source, open(out, "wb", closefd=False) as sink:
            shutil.copyfileobj(source, sink, 1 << 20)
    except BaseException:
        os.close(out)
        with suppress(OSError):
            os.unlink(target)
        raise
    os.close(out)


@contextmanager
def private_copy(root: Path, path: Path, limit: int) -> Iterator[Path]:
    """A copy of ``path`` (held to the share's rules) under the same name in a private temporary
    folder, for readers that need a path and open it several times (the CSV validator): what
    they read is what was checked, whatever happens to the share meanwhile. A file over
    ``limit`` bytes is refused uncopied."""
    with open_file(root, path) as opened, \
            tempfile.TemporaryDirectory(prefix="pipeline-input-") as folder:
        if opened.st.st_size > limit:
            raise Refused(f"the file is {opened.st.st_size:,} bytes, more than the limit of "
                          f"{limit:,} (PIPELINE_MAX_INPUT_BYTES); not read", file=opened.name)
        private = Path(folder) / opened.name
        copy(opened, private)
        yield private


def _open_beneath(root: Path, names: tuple[str, ...], shown: str) -> int:
    here = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # the operator's path
    try:
        device = os.fstat(here).st_dev
        for name in names[:-1]:
            below = _open_at(here, name, shown, is_folder=True)
            os.close(here)
            here = below
        fd = _open_at(here, names[-1], shown, is_folder=False)
    finally:
        os.close(here)
    try:
        _check_opened(os.fstat(fd), shown, device)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_at(parent: int, name: str, shown: str, *, is_folder: bool) -> int:
    """One name opened below the folder ``parent``. Looked at first (lstat), so that a link, a
    FIFO or a device is refused without being opened at all; the open's own flags refuse it
    too if it was swapped in after that look."""
    _look(parent, name, shown, is_folder)
    try:
        return os.open(name, _FOLDER if is_folder else _FILE, dir_fd=parent)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.EMLINK):  # swapped for a link since the look
            raise Refused(_through_link(name) if is_folder else SYMLINK, file=shown) from None
        if error.errno == errno.ENOTDIR:
            raise Refused(_not_folder(name), file=shown) from None
        if error.errno in (errno.EACCES, errno.EPERM):
            raise Refused(DENIED, file=shown) from None
        raise


def _look(parent: int, name: str, shown: str, is_folder: bool) -> None:
    try:
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)  # FileNotFoundError: gone
    except PermissionError:
        raise Refused(DENIED, file=shown) from None
    if stat.S_ISLNK(st.st_mode):
        raise Refused(_through_link(name) if is_folder else SYMLINK, file=shown)
    if is_folder and not stat.S_ISDIR(st.st_mode):
        raise Refused(_not_folder(name), file=shown)
    if not is_folder and not stat.S_ISREG(st.st_mode):
        raise Refused(f"not a regular file ({kind(st.st_mode)})", file=shown)


def _through_link(name: str) -> str:
    return f"the path goes through the symbolic link {name!r}; links are never followed"


def _not_folder(name: str) -> str:
    return f"the path goes through {name!r}, which is not a folder"


def _open_named(path: Path) -> int:
    try:
        fd = os.open(path, _NAMED)
    except OSError as error:
        if error.errno in (errno.EACCES, errno.EPERM):
            raise Refused(DENIED, file=path.name) from None
        raise
    try:
        _check_opened(os.fstat(fd), path.name, None)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_opened(st: os.stat_result, shown: str, device: int | None) -> None:
    """The decision, on what was actually opened."""
    if not stat.S_ISREG(st.st_mode):
        raise Refused(f"not a regular file ({kind(st.st_mode)})", file=shown)
    if device is None:
        return  # the caller's own file: its choice, read with its permissions
    if st.st_dev != device:
        raise Refused("on another filesystem than the share (a mount inside the share?)",
                      file=shown)
    if st.st_nlink > 1:
        raise Refused(HARD_LINKS.format(n=st.st_nlink), file=shown)


# Folders walked by descriptor (storage rotation): every name below the folder is opened
# relative to its parent's descriptor, so a folder swapped for a link half-way through a walk
# is refused, never followed.


@contextmanager
def open_folder(root: Path, path: Path) -> Iterator[Opened]:
    """The folder ``path`` inside the share, opened by :func:`open_file`'s rules (no link on the
    way, on the share's device); closed on leaving the block."""
    names = inside(root, path)
    if names is None:
        raise Refused("a path outside the share", file=Path(path).name)
    here = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # the operator's path
    try:
        device = os.fstat(here).st_dev
        for name in names:
            below = _open_at(here, name, Path(path).name, is_folder=True)
            os.close(here)
            here = below
        opened = Opened(here, os.fstat(here), Path(path).name)
        if opened.st.st_dev != device:
            raise Refused("on another filesystem than the share (a mount inside the share?)",
                          file=opened.name)
        yield opened
    finally:
        os.close(here)


def open_below(folder: Opened, name: str, shown: str) -> Opened:
    """The entry ``name`` of an opened folder: a folder, or a file held to the share's rules
    (a regular file with one link on the folder's device). The caller closes ``.fd``."""
    try:
        st = os.stat(name, dir_fd=folder.fd, follow_symlinks=False)
    except PermissionError:
        raise Refused(DENIED, file=shown) from None
    is_folder = stat.S_ISDIR(st.st_mode)
    fd = _open_at(folder.fd, name, shown, is_folder=is_folder)
    try:
        opened = Opened(fd, os.fstat(fd), shown)
        if is_folder:
            if not stat.S_ISDIR(opened.st.st_mode) or opened.st.st_dev != folder.st.st_dev:
                raise Refused("changed while it was read, or is on another filesystem",
                              file=shown)
        else:
            _check_opened(opened.st, shown, folder.st.st_dev)
    except BaseException:
        os.close(fd)
        raise
    return opened


@contextmanager
def open_tree(root: Path, path: Path, limit: int) -> Iterator[list[tuple[str, Opened]]]:
    """Every folder and file below the folder ``path`` (itself first, as ``""``), each opened
    and checked by the share's rules before the caller reads any of them, and held open until
    the block ends: what is read is what was checked, whatever is renamed meanwhile. Names are
    relative (``input/prices.csv``), folders before their contents, sorted. More than ``limit``
    entries (each holds a descriptor) is refused."""
    with ExitStack() as stack:
        top = stack.enter_context(open_folder(root, path))
        found: list[tuple[str, Opened]] = [("", top)]
        pending = [("", top)]
        while pending:
            prefix, folder = pending.pop()
            below: list[tuple[str, Opened]] = []
            for name in sorted(os.listdir(folder.fd)):
                if len(found) >= limit:
                    raise Refused(f"it holds more than {limit:,} files and folders; not read",
                                  file=Path(path).name)
                relative = f"{prefix}{name}"
                opened = open_below(folder, name, relative)
                stack.callback(os.close, opened.fd)
                found.append((relative, opened))
                if stat.S_ISDIR(opened.st.st_mode):
                    below.append((f"{relative}/", opened))
            pending.extend(reversed(below))
        yield sorted(found, key=lambda item: item[0].split("/"))


def read_all(root: Path, path: Path, limit: int) -> bytes:
    """The whole of ``path`` (held to the share's rules), refused if over ``limit`` bytes: for
    a pipeline's own intermediate file in processing/, which a share user could swap."""
    data = read_bounded(root, path, limit)
    if len(data) > limit:
        raise Refused(f"more than {limit:,} bytes; not read", file=Path(path).name)
    return data
