"""Multipart bodies built by hand: what a careless or hostile client sends (a NUL in a
filename, a body cut short), which httpx would refuse or correct."""

from __future__ import annotations

import socket
from collections.abc import Iterator

BOUNDARY = "----pipeline-test-boundary"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def part(name: str, value: bytes, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"'
    if filename is not None:
        disposition += f'; filename="{filename}"'
    head = f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n"
    if filename is not None:
        head += "Content-Type: text/csv\r\n"
    return head.encode("utf-8", errors="surrogateescape") + b"\r\n" + value + b"\r\n"


def body(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def chunks(data: bytes, size: int = 65_536) -> Iterator[bytes]:
    """A body sent chunked (no Content-Length): the server learns its size only as it reads."""
    for start in range(0, len(data), size):
        yield data[start:start + size]


def send_half_and_hang_up(host: str, port: int, path: str, token: str, data: bytes) -> None:
    """Announce the whole body, send half of it, and close the connection."""
    with socket.create_connection((host, port), timeout=10) as sock:
        head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
                f"Content-Type: {CONTENT_TYPE}\r\nContent-Length: {len(data)}\r\n\r\n")
        sock.sendall(head.encode() + data[:len(data) // 2])
