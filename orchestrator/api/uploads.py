"""Multipart uploads streamed to disk, never held in memory, with the size cap checked as the
bytes arrive.

Starlette's ``request.form()`` spools each file to a temporary file in the system's temp
folder and knows no total size cap, so a 20 GB upload would be read in full before anyone
could refuse it. Here python-multipart's streaming parser (the one Starlette uses underneath)
is driven directly: each file part goes straight into a staging folder inside the share
(``processing/.uploads/<pid>-<uuid>/``: the intake then claims it with a rename, not a
copy; the watcher's repair skips dot-folders), and the upload is refused with 413 the moment
it passes ``PIPELINE_API_MAX_UPLOAD_BYTES``. Whatever happens before the job is recorded — a
refusal, a client that goes away — the staging folder is removed.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from orchestrator.api.errors import ApiError
from orchestrator.paths import Share, is_temporary

#: Suffixes an upload may have: price files. Job files name a file on the share: send JSON.
UPLOAD_SUFFIXES = (".csv", ".csv.gz")
MAX_NAME_BYTES = 255  # what ext4, XFS and SMB allow for one name
MAX_FIELD_BYTES = 64 * 1024
MAX_FIELDS = 64


def staging_root(share: Share) -> Path:
    return share.processing / ".uploads"


def new_staging(share: Share) -> Path:
    """A fresh folder for one request's files; its name starts with the pid that owns it."""
    folder = staging_root(share) / f"{os.getpid()}-{uuid.uuid4().hex}"
    folder.mkdir(parents=True)
    return folder


def remove_stale(share: Share) -> int:
    """Staging folders of API processes that are gone (killed mid-upload): removed at start."""
    removed = 0
    root = staging_root(share)
    for folder in root.iterdir() if root.is_dir() else []:
        pid = folder.name.split("-", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed


def check_name(name: str) -> str:
    """An uploaded file's name, refused when it could escape the folder or mislead."""
    if not name:
        raise ApiError(400, "bad_filename", "the file part has an empty filename")
    shown = repr(name[:80] + ("…" if len(name) > 80 else ""))
    if "\x00" in name or any(ord(c) < 32 for c in name):
        raise ApiError(400, "bad_filename", f"filename {shown} holds a NUL or control character")
    if "/" in name or "\\" in name or name in (".", ".."):
        raise ApiError(400, "bad_filename", f"filename {shown} holds a path (/, \\ or ..); "
                       "send the file's own name only")
    if len(name.encode()) > MAX_NAME_BYTES:
        raise ApiError(400, "bad_filename", f"filename {shown} is {len(name.encode())} bytes "
                       f"long; at most {MAX_NAME_BYTES}")
    if is_temporary(name):
        raise ApiError(400, "bad_filename", f"filename {shown} is a temporary or hidden name, "
                       "which the share ignores")
    if not name.lower().endswith(UPLOAD_SUFFIXES):
        raise ApiError(415, "unsupported_file", f"filename {shown}: upload a price file "
                       "(.csv or .csv.gz); a job file names a file already on the share: "
                       "POST JSON with input_file instead")
    return name


def check_content(path: Path) -> None:
    """Refuse at once what can never be a price file: empty, binary, not text."""
    with open(path, "rb") as handle:
        head = handle.read(64 * 1024)
    if not head:
        raise ApiError(400, "empty_file", f"file {path.name} is empty")
    if path.name.lower().endswith(".gz"):
        if head[:2] != b"\x1f\x8b":
            raise ApiError(422, "wrong_content", f"file {path.name} is not gzip data")
        return
    text = head.decode("utf-8", errors="replace") if b"\x00" not in head else None
    if text is None or "\ufffd" in text[:-4] or not ("," in text or ";" in text or "\t" in text):
        raise ApiError(422, "wrong_content", f"file {path.name}: not a CSV text file (a price "
                       "file is UTF-8 text: a date column, then one column per ticker)")


@dataclass
class Part:
    name: str = ""
    filename: str | None = None
    path: Path | None = None
    handle: IO[bytes] | None = None
    value: bytearray = field(default_factory=bytearray)


@dataclass
class Form:
    """What a multipart body held: plain fields, and the files written to ``folder``."""

    folder: Path
    fields: dict[str, str] = field(default_factory=dict)
    files: list[tuple[str, Path]] = field(default_factory=list)  # (field name, path)


class _Receiver:
    """python-multipart callbacks that write file parts to disk as they arrive."""

    def __init__(self, form: Form, limit: int) -> None:
        self.form, self.limit, self.total = form, limit, 0
        self.part = Part()
        self.header_name = b""
        self.header_value = b""
        self.headers: dict[bytes, bytes] = {}

    def callbacks(self) -> dict[str, object]:
        return {"on_part_begin": self.begin, "on_header_field": self.header_field,
                "on_header_value": self.header_val, "on_header_end": self.header_end,
                "on_headers_finished": self.headers_done, "on_part_data": self.data,
                "on_part_end": self.end}

    def begin(self) -> None:
        self.part, self.headers = Part(), {}

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def header_val(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def header_end(self) -> None:
        self.headers[self.header_name.lower()] = self.header_value
        self.header_name = self.header_value = b""

    def headers_done(self) -> None:
        _, options = parse_options_header(self.headers.get(b"content-disposition", b""))
        self.part.name = options.get(b"name", b"").decode("utf-8", errors="replace")
        filename = options.get(b"filename")
        if filename is None:
            if len(self.form.fields) >= MAX_FIELDS:
                raise ApiError(400, "too_many_fields", f"more than {MAX_FIELDS} form fields")
            return
        name = check_name(filename.decode("utf-8", errors="replace"))
        if any(p.name == name for _, p in self.form.files):
            raise ApiError(400, "bad_filename", f"two files named {name!r} in one request")
        self.part.filename, self.part.path = name, self.form.folder / name
        self.part.handle = open(self.part.path, "xb")  # noqa: SIM115 - closed in end()

    def data(self, data: bytes, start: int, end: int) -> None:
        if self.part.handle is None:
            if len(self.part.value) + end - start > MAX_FIELD_BYTES:
                raise ApiError(400, "field_too_large", f"form field {self.part.name!r} is "
                               f"longer than {MAX_FIELD_BYTES:,} bytes")
            self.part.value += data[start:end]
            return
        self.total += end - start
        if self.total > self.limit:
            raise too_large(self.limit)
        self.part.handle.write(data[start:end])

    def end(self) -> None:
        if self.part.handle is not None:
            self.part.handle.close()
            self.part.handle = None
            assert self.part.path is not None
            self.form.files.append((self.part.name, self.part.path))
        else:
            self.form.fields[self.part.name] = self.part.value.decode("utf-8", errors="replace")

    def close(self) -> None:
        if self.part.handle is not None:
            self.part.handle.close()


def too_large(limit: int) -> ApiError:
    return ApiError(413, "too_large", f"the upload is larger than {limit:,} bytes "
                    "(PIPELINE_API_MAX_UPLOAD_BYTES)")


async def receive(chunks: AsyncIterator[bytes], content_type: str, share: Share,
                  limit: int) -> Form:
    """Stream a multipart body into a new staging folder; on any failure the folder goes."""
    kind, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise ApiError(415, "unsupported_media_type", "send multipart/form-data (a file "
                       "upload) or application/json (naming a file on the share)")
    form = Form(new_staging(share))
    receiver = _Receiver(form, limit)
    parser = MultipartParser(boundary, receiver.callbacks())  # type: ignore[arg-type]
    try:
        async for chunk in chunks:
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as bad:
        receiver.close()
        discard(form.folder)
        raise ApiError(400, "bad_multipart", f"the multipart body cannot be read: {bad}") from None
    except BaseException:  # a refusal, a bad body, or the client went away (ClientDisconnect)
        receiver.close()
        discard(form.folder)
        raise
    receiver.close()
    return form


def discard(folder: Path) -> None:
    with suppress(FileNotFoundError):
        shutil.rmtree(folder)
