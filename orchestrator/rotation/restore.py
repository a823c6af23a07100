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
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from orchestrator.errors import CorruptArchive, IllegalTransition, JobNotFound
from orchestrator.paths import Share
from orchestrator.rotation.packing import CHUNK, MANIFEST_NAME, HashingReader
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
    staging = share.completed / f".{job.id}.restoring-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        entry, sizes = _extract(archive, job.id, job.archive_sha256 or "", staging)
        target = share.completed / job.id
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    previous = entry.get("state")
    store.transition(job.id, JobState.COMPLETED, sources={JobState.ARCHIVED},
                     detail=f"restored from {job.archive_path} ({len(sizes)} files verified by "
                            f"sha256; state before archiving: {previous})")
    return Restored(job.id, target, job.archive_path, len(sizes), sum(sizes.values()), previous)


def _extract(archive: Path, job_id: str, sha256: str, staging: Path,
             ) -> tuple[dict[str, Any], dict[str, int]]:
    """The job's files into ``staging``; (its manifest entry, {file: size}) once all verified."""
    found: dict[str, tuple[int, str]] = {}
    manifest: dict[str, Any] = {}
    try:
        with open(archive, "rb") as raw:
            reader = HashingReader(raw)
            with gzip.GzipFile(fileobj=reader, mode="rb") as gz:
                with tarfile.open(fileobj=gz, mode="r|") as tar:
                    for member in tar:
                        if member.name == MANIFEST_NAME:
                            manifest = json.load(tar.extractfile(member))  # type: ignore[arg-type]
                        elif member.name.startswith(f"{job_id}/"):
                            _write_member(tar, member, job_id, staging, found)
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


def _write_member(tar: tarfile.TarFile, member: tarfile.TarInfo, job_id: str, staging: Path,
                  found: dict[str, tuple[int, str]]) -> None:
    relative = PurePosixPath(member.name).relative_to(job_id)
    if relative.is_absolute() or ".." in relative.parts:
        raise CorruptArchive(f"unsafe member name {member.name!r}")
    target = staging.joinpath(*relative.parts)
    if member.isdir():
        target.mkdir(parents=True, exist_ok=True)
        return
    if not member.isfile():
        raise CorruptArchive(f"unexpected member type in {member.name!r}")
    target.parent.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    source = tar.extractfile(member)
    with open(target, "wb") as out:
        while chunk := source.read(CHUNK):  # type: ignore[union-attr]
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
    os.chmod(target, member.mode & 0o777)
    os.utime(target, (member.mtime, member.mtime))
    found[relative.as_posix()] = (size, digest.hexdigest())
