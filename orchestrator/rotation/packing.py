"""Archives: a tar.gz of job folders with a manifest of every file's sha256, read back to check.

Why tar.gz from the standard library: one streaming pass writes it (no seeking, so it works on
any share), gzip compresses the many small, similar text files of a batch together (better than
zip's per-file deflate), and ``tarfile``/``gzip`` are maintained with Python itself. Restoring a
job reads its batch's archive up to that job; an archive of a batch is a few MB.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from orchestrator import safeopen
from orchestrator.errors import CorruptArchive
from orchestrator.rotation.throttle import Throttle

MANIFEST_NAME = "MANIFEST.json"
#: Files and folders of one job folder held open at once (one descriptor each) while it is
#: packed; a job folder holds about ten. More is refused, not packed.
MAX_ENTRIES = 256
CHUNK = 1 << 16
FORMAT = 1


@dataclass
class FileEntry:
    path: str
    size: int
    sha256: str


@dataclass
class JobEntry:
    """One job in an archive: where it came from and every file it held."""

    id: str
    state: str
    finished_at: str
    folder: str | None
    files: list[FileEntry] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files)


@dataclass(frozen=True)
class Source:
    """A job to pack, and its folder (None: the job has no folder any more)."""

    id: str
    state: str
    finished_at: str
    folder: Path | None


@dataclass(frozen=True)
class Refusal:
    """A job left out of its batch, and why (never what its files hold)."""

    id: str
    folder: str
    reason: str

    @property
    def message(self) -> str:
        return (f"job {self.id} left in {self.folder}/, not archived and not deleted: "
                f"{self.reason}")


@dataclass
class Written:
    part: Path
    sha256: str
    size: int
    jobs: list[JobEntry]
    manifest: dict[str, Any]
    refused: list[Refusal] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(job.bytes for job in self.jobs)


class _HashingWriter(io.RawIOBase):
    """A write-only stream that hashes and counts what passes through to ``raw``."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw, self.digest, self.count = raw, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.raw.write(view)
        self.digest.update(view)
        self.count += len(view)
        return len(view)


class HashingReader(io.RawIOBase):
    """A read-only stream that hashes what is read from ``raw`` (and spends a budget)."""

    def __init__(self, raw: BinaryIO, throttle: Throttle | None = None) -> None:
        self.raw, self.digest, self.count, self.throttle = raw, hashlib.sha256(), 0, throttle

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.digest.update(data)
        self.count += len(data)
        if self.throttle is not None:
            self.throttle.spend(len(data))
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def drain(self) -> None:
        while self.read(CHUNK):
            pass


def _tarinfo(name: str, st: os.stat_result, kind: bytes) -> tarfile.TarInfo:
    # Built by hand: gettarinfo() looks up user and group names for every file, slow on a
    # network share and of no use to a restore.
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = kind, stat.S_IMODE(st.st_mode), int(st.st_mtime)
    info.size = st.st_size if kind == tarfile.REGTYPE else 0
    return info


def _add_job(tar: tarfile.TarFile, source: Source, root: Path,
             throttle: Throttle | None) -> JobEntry:
    """The job's folder into ``tar``, every entry read from a descriptor opened and checked
    (orchestrator/safeopen.py) before anything of the job is written: a link, FIFO, device or
    hard-linked file anywhere in it raises Refused and leaves the archive without the job."""
    entry = JobEntry(source.id, source.state, source.finished_at,
                     source.folder.parent.name if source.folder else None)
    if source.folder is None:
        tar.addfile(_empty_dir(source.id))
        return entry
    with safeopen.open_tree(root, source.folder, MAX_ENTRIES) as tree:
        for relative, opened in tree:
            name = f"{source.id}/{relative}" if relative else source.id
            if stat.S_ISDIR(opened.st.st_mode):
                tar.addfile(_tarinfo(name, opened.st, tarfile.DIRTYPE))
                continue
            os.lseek(opened.fd, 0, os.SEEK_SET)
            with open(opened.fd, "rb", closefd=False) as handle:
                reader = HashingReader(handle, throttle)
                tar.addfile(_tarinfo(name, opened.st, tarfile.REGTYPE), reader)
            entry.files.append(FileEntry(relative, opened.st.st_size, reader.digest.hexdigest()))
    return entry


def _refusal(source: Source, error: safeopen.Refused) -> Refusal:
    """What the share's rules refused in a job's folder, as a Refusal; a file the pipeline may
    not read is the operator's to fix, not the job's: it fails the batch (kind ``permission``,
    orchestrator/rotation/failures.py) as it did before these rules."""
    folder = source.folder or Path(source.id)
    if error.reason == safeopen.DENIED:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES),
                              str(folder / (error.file or "")))
    return Refusal(source.id, folder.parent.name, str(error))


def _empty_dir(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    return info


def write_archive(target: Path, sources: Sequence[Source], header: dict[str, Any], *,
                  root: Path, level: int = 6, throttle: Throttle | None = None,
                  progress: Callable[[int, int], None] | None = None) -> Written:
    """Pack ``sources`` (folders inside the share ``root``) into
    ``<target's folder>/.<name>.part``, fsynced; not yet verified. A job whose folder holds
    what the share's rules refuse is left out, listed in ``Written.refused``.

    ``progress(jobs_packed, bytes_packed)`` is called after each job.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(f".{target.name}.part")
    jobs: list[JobEntry] = []
    refused: list[Refusal] = []
    with _create(part) as raw:
        writer = _HashingWriter(raw)
        with gzip.GzipFile(filename="", mode="wb", fileobj=writer, compresslevel=level,
                           mtime=0) as gz, tarfile.open(fileobj=gz, mode="w",
                                                       format=tarfile.PAX_FORMAT) as tar:
            packed_bytes = 0
            for source in sources:
                try:
                    jobs.append(_add_job(tar, source, root, throttle))
                except safeopen.Refused as error:
                    refused.append(_refusal(source, error))
                    continue
                packed_bytes += jobs[-1].bytes
                if progress is not None:
                    progress(len(jobs), packed_bytes)
            manifest = {**header, "format": FORMAT, "jobs": [asdict(j) for j in jobs]}
            body = json.dumps(manifest, indent=1, sort_keys=True).encode()
            info = tarfile.TarInfo(MANIFEST_NAME)
            info.size, info.mode, info.mtime = len(body), 0o644, int(header.get("mtime", 0))
            tar.addfile(info, io.BytesIO(body))
        raw.flush()
        os.fsync(raw.fileno())
    return Written(part, writer.digest.hexdigest(), writer.count, jobs, manifest, refused)


def _create(part: Path) -> BinaryIO:
    """A new file for the archive, never written through a link planted under its name (a
    leftover of an earlier attempt is removed first: unlink removes a link, not its target)."""
    part.unlink(missing_ok=True)
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o644)
    return open(fd, "wb")


def expected_members(jobs: Sequence[JobEntry]) -> dict[str, tuple[int, str]]:
    return {f"{j.id}/{f.path}": (f.size, f.sha256) for j in jobs for f in j.files}


def verify_archive(path: Path, sha256: str, expected: dict[str, tuple[int, str]], *,
                   root: Path) -> None:
    """Read the archive back: every expected file present with its size and sha256, nothing
    else, gzip's own CRC intact, and the file's sha256 as written. Raises CorruptArchive."""
    seen: dict[str, tuple[int, str]] = {}
    try:
        with open_archive(root, path) as raw:
            reader = HashingReader(raw)
            with gzip.GzipFile(fileobj=reader, mode="rb") as gz:
                for name, size, digest in _members(gz):
                    seen[name] = (size, digest)
                while gz.read(CHUNK):  # to the end: gzip checks its CRC and length there
                    pass
            reader.drain()
    except (tarfile.TarError, gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise CorruptArchive(f"archive {path.name} does not read back: {error}") from None
    seen.pop(MANIFEST_NAME, None)
    _compare(path, seen, expected)
    if reader.digest.hexdigest() != sha256:
        raise CorruptArchive(f"{path.name}: sha256 {reader.digest.hexdigest()[:16]}… read back, "
                             f"{sha256[:16]}… written")


def _compare(path: Path, seen: dict[str, tuple[int, str]],
             expected: dict[str, tuple[int, str]]) -> None:
    missing = sorted(set(expected) - set(seen))
    extra = sorted(set(seen) - set(expected))
    changed = sorted(n for n in set(seen) & set(expected) if seen[n] != expected[n])
    for label, names in (("missing", missing), ("unexpected", extra), ("changed", changed)):
        if names:
            raise CorruptArchive(f"{path.name}: {len(names)} member(s) {label}, e.g. {names[0]}")


def _members(stream: BinaryIO) -> Iterator[tuple[str, int, str]]:
    """(name, size, sha256) of every regular file in a tar stream."""
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            if not member.isfile():
                continue
            handle = tar.extractfile(member)
            digest, size = hashlib.sha256(), 0
            while chunk := handle.read(CHUNK):  # type: ignore[union-attr]
                digest.update(chunk)
                size += len(chunk)
            yield member.name, size, digest.hexdigest()


@contextmanager
def open_archive(root: Path, path: Path) -> Iterator[BinaryIO]:
    """An archive in the share, read by the share's rules (orchestrator/safeopen.py): one
    swapped for a link or a FIFO is refused (CorruptArchive), never followed or waited on."""
    with ExitStack() as stack:
        try:
            opened = stack.enter_context(safeopen.open_file(root, path))
        except safeopen.Refused as refused:
            raise CorruptArchive(f"archive {path.name} is not read: {refused.reason}") from None
        yield stack.enter_context(open(opened.fd, "rb", closefd=False))


def sha256_of(path: Path, root: Path | None = None) -> str:
    """The file's sha256; ``root``: the share it is in, whose rules it is read by."""
    digest = hashlib.sha256()
    with (open(path, "rb") if root is None else open_archive(root, path)) as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_path(archive: Path) -> Path:
    return archive.with_name(archive.name.removesuffix(".tar.gz") + ".manifest.json")


def discard(archive: Path) -> None:
    """Remove an archive that will not be used (and its temporary file and manifest)."""
    for path in (archive, archive.with_name(f".{archive.name}.part"), manifest_path(archive)):
        path.unlink(missing_ok=True)


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
