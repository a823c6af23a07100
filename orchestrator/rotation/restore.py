"""``pipeline restore``: an archived job's folder back into completed/, checked file by file.

The archive is read once: the job's files are written into a hidden staging folder while
their sha256 is computed, then compared with the manifest inside the archive, and the whole
archive's sha256 with the one recorded on the job row when it was archived. Only when every
check holds is the folder renamed into ``completed/<job>`` and the job moved back to
``completed`` (with an event); otherwise the staging folder is deleted and nothing changed.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import tarfile
import uuid
import zlib
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from orchestrator import safeopen
from orchestrator.errors import CorruptArchive, IllegalTransition, JobNotFound
from orchestrator.jobs import lifecycle
from orchestrator.paths import Share
from orchestrator.rotation.packing import CHUNK, MANIFEST_NAME, HashingReader, open_archive
from orchestrator.rotation.removal import FOLDERS
from orchestrator.store import jobs as store
from orchestrator.store.states import JobState


@dataclass
class Restored:
    job_id: str
    folder: Path
    archive: str
    files: int
    bytes: int
    previous_state: str | None


def restore(share: Share, job_id: str) -> Restored:
    job = store.get_job(job_id)
    if job.state is not JobState.ARCHIVED or not job.archive_path:
        raise IllegalTransition(f"job {job.id} is {job.state}; only archived jobs can be "
                                "restored")
    for name in FOLDERS:
        if (share.root / name / job.id).exists():
            raise IllegalTransition(f"job {job.id} still has its folder in {name}/: its rotation "
                                    "has not finished; run `pipeline rotate` first")
    archive = share.root / job.archive_path
    if not archive.is_file():
        raise JobNotFound(f"archive {job.archive_path} of job {job.id} is missing")
    with safeopen.open_folder(share.root, share.completed) as completed:
        entry, sizes = _restore_into(completed, archive, share.root, job.id,
                                     job.archive_sha256 or "")
    target = share.completed / job.id
    previous = entry.get("state")
    lifecycle.restored(job.id, f"restored from {job.archive_path} ({len(sizes)} files "
                               f"verified by sha256; state before archiving: {previous})")
    return Restored(job.id, target, job.archive_path, len(sizes), sum(sizes.values()), previous)


def _restore_into(completed: safeopen.Opened, archive: Path, root: Path, job_id: str,
                  sha256: str) -> tuple[dict[str, Any], dict[str, int]]:
    """Extract into a new hidden staging folder of ``completed/`` (by descriptor), then rename
    it to the job's name; the staging folder is deleted if anything fails."""
    staging = f".{job_id}.restoring-{uuid.uuid4().hex[:8]}"
    os.mkdir(staging, dir_fd=completed.fd)  # the modes a folder gets here, as before
    try:
        with _Folders(completed, staging) as folders:
            result = _extract(archive, root, job_id, sha256, folders)
        os.rename(staging, job_id, src_dir_fd=completed.fd, dst_dir_fd=completed.fd)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True, dir_fd=completed.fd)
        raise
    return result


class _Folders:
    """The staging folder and the folders made below it, each opened by descriptor: files are
    created inside them with O_EXCL | O_NOFOLLOW, so nothing is written through a link that a
    share user planted in completed/ while the job was being restored."""

    def __init__(self, completed: safeopen.Opened, staging: str) -> None:
        self.stack = ExitStack()
        self.top = self._hold(safeopen.open_below(completed, staging, staging))
        self.opened: dict[tuple[str, ...], safeopen.Opened] = {(): self.top}

    def __enter__(self) -> _Folders:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stack.close()

    def _hold(self, opened: safeopen.Opened) -> safeopen.Opened:
        self.stack.callback(os.close, opened.fd)
        return opened

    def folder(self, parts: tuple[str, ...]) -> safeopen.Opened:
        """The folder ``parts`` below staging, made if missing; a link there is refused."""
        if parts not in self.opened:
            parent = self.folder(parts[:-1])
            with suppress(FileExistsError):
                os.mkdir(parts[-1], 0o755, dir_fd=parent.fd)
            self.opened[parts] = self._hold(
                safeopen.open_below(parent, parts[-1], "/".join(parts)))
        return self.opened[parts]

    def create(self, parts: tuple[str, ...]) -> int:
        """A new file (never an existing name, never through a link), open for writing."""
        parent = self.folder(parts[:-1])
        try:
            return os.open(parts[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                           | os.O_CLOEXEC, 0o600, dir_fd=parent.fd)
        except FileExistsError:
            raise safeopen.Refused("something was put under this name in the staging folder "
                                   "while the job was being restored; nothing was written "
                                   "through it", file="/".join(parts)) from None


def _extract(archive: Path, root: Path, job_id: str, sha256: str, folders: _Folders,
             ) -> tuple[dict[str, Any], dict[str, int]]:
    """The job's files into staging; (its manifest entry, {file: size}) once all verified."""
    found: dict[str, tuple[int, str]] = {}
    manifest: dict[str, Any] = {}
    try:
        with open_archive(root, archive) as raw:
            reader = HashingReader(raw)
            with gzip.GzipFile(fileobj=reader, mode="rb") as gz:
                with tarfile.open(fileobj=gz, mode="r|") as tar:
                    for member in tar:
                        if member.name == MANIFEST_NAME:
                            manifest = json.load(tar.extractfile(member))  # type: ignore[arg-type]
                        elif member.name.startswith(f"{job_id}/"):
                            _write_member(tar, member, job_id, folders, found)
                while gz.read(CHUNK):
                    pass
            reader.drain()
    except (tarfile.TarError, gzip.BadGzipFile, EOFError, zlib.error, ValueError) as error:
        raise CorruptArchive(f"archive {archive.name} does not read back: {error}") from None
    if reader.digest.hexdigest() != sha256:
        raise CorruptArchive(f"archive {archive.name} has changed since job {job_id} was archived "
                             "(sha256 differs from the one on the job's record)")
    return _check(archive, job_id, manifest, found)


def _check(archive: Path, job_id: str, manifest: dict[str, Any],
           found: dict[str, tuple[int, str]]) -> tuple[dict[str, Any], dict[str, int]]:
    entries = [j for j in manifest.get("jobs", []) if j.get("id") == job_id]
    if not entries:
        raise CorruptArchive(f"{archive.name}: its manifest does not list job {job_id}")
    expected = {f["path"]: (f["size"], f["sha256"]) for f in entries[0]["files"]}
    if expected != found:
        wrong = sorted(set(expected) ^ set(found)) or sorted(
            p for p in expected if expected[p] != found.get(p))
        raise CorruptArchive(f"{archive.name}: job {job_id}'s files do not match the manifest "
                             f"(e.g. {wrong[0]})")
    return entries[0], {path: size for path, (size, _) in found.items()}


def _write_member(tar: tarfile.TarFile, member: tarfile.TarInfo, job_id: str,
                  folders: _Folders, found: dict[str, tuple[int, str]]) -> None:
    relative = PurePosixPath(member.name).relative_to(job_id)
    if relative.is_absolute() or ".." in relative.parts:
        raise CorruptArchive(f"unsafe member name {member.name!r}")
    if member.isdir():
        folders.folder(relative.parts)
        return
    if not member.isfile():  # a link or a device in an archive is never restored
        raise CorruptArchive(f"unexpected member type in {member.name!r}: only files and "
                             "folders are restored")
    digest, size = hashlib.sha256(), 0
    source = tar.extractfile(member)
    fd = folders.create(relative.parts)
    with open(fd, "wb") as out:
        while chunk := source.read(CHUNK):  # type: ignore[union-attr]
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
        out.flush()
        os.fchmod(fd, member.mode & 0o777)
        os.utime(fd, (member.mtime, member.mtime))
    found[relative.as_posix()] = (size, digest.hexdigest())
