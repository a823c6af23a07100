"""The HTTP API's speed against its own stack's limit, on this machine.

    python -m bench.api [--seconds 5] [--rounds 3] [--uploads 10] [--smoke] [--json out.json]

1. Job status GETs (``GET /v1/jobs/<id>`` with a viewer's token, auth in force for reads:
   token lookup + job read) per second, p50 and p99, at concurrency 1, 16 and 64, against a
   bare endpoint returning a constant on the same server (same uvicorn, same app and
   middleware): the difference is what our handler costs.
2. Uploads of a 10 MB price file per second (``POST /v1/jobs``, force=true: streamed to the
   share, fingerprinted, claimed, recorded, published), against writing the same bytes to a
   file in the same folder (no fsync in either).

The server is ``pipeline api``'s app in one uvicorn process, on the embedded default (SQLite,
files), in a fresh folder under /tmp; no worker runs (jobs stay queued). The load comes
from this process: keep-alive HTTP/1.1 over asyncio streams, one connection per concurrent
client. It is hand-written because no load tool (wrk, ab, hey) is installed here and
httpx's own per-request cost (~0.2 ms of Python) would be the figure measured; both
endpoints share this client, so their ratio is fair. Both run on the same 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "orchestrator" / "examples" / "sp500_sample.csv"
CONCURRENCY = (1, 16, 64)
UPLOAD_BYTES = 10_000_000


def bench_factory() -> FastAPI:
    """The API's app plus a bare endpoint returning a constant: the stack's own limit."""
    from orchestrator.api.app import factory

    app = factory()

    @app.get("/bench/constant", include_in_schema=False)
    async def constant() -> dict[str, bool]:
        return {"ok": True}

    return app


# -- the load -----------------------------------------------------------------------------

async def _client(port: int, request: bytes, until: float, latencies: list[float]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < until:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise SystemExit(f"unexpected answer: {head[:200]!r}")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
    finally:
        writer.close()


def measure_gets(port: int, path: str, token: str, clients: int, seconds: float,
                 ) -> dict[str, Any]:
    request = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
               "\r\n").encode()
    latencies: list[float] = []

    async def run() -> None:
        until = time.perf_counter() + seconds
        await asyncio.gather(*(_client(port, request, until, latencies)
                               for _ in range(clients)))

    started = time.perf_counter()
    asyncio.run(run())
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    return {"path": path.split("/")[1] if path.startswith("/bench") else "status",
            "concurrency": clients, "requests": len(ordered),
            "per_second": round(len(ordered) / elapsed, 1),
            "p50_ms": round(ordered[len(ordered) // 2] * 1000, 2),
            "p99_ms": round(ordered[min(int(len(ordered) * 0.99), len(ordered) - 1)] * 1000, 2)}


def price_file(folder: Path, size: int) -> Path:
    """A valid wide price CSV of about ``size`` bytes: the sample's rows, repeated with later
    dates until it is big enough."""
    lines = SAMPLE.read_text().splitlines()
    header, rows = lines[0], lines[1:]
    out, total, day = [header], len(header), 0
    while total < size:
        for row in rows:
            day += 1
            line = f"{1900 + day // 365:04d}-{day % 12 + 1:02d}-{day % 28 + 1:02d}" \
                   + row[row.index(","):]
            out.append(line)
            total += len(line) + 1
            if total >= size:
                break
    path = folder / "big-prices.csv"
    path.write_text("\n".join(out) + "\n")
    return path


def measure_uploads(url: str, token: str, path: Path, count: int) -> dict[str, Any]:
    import httpx

    data = path.read_bytes()
    with httpx.Client(base_url=url, timeout=120,
                      headers={"Authorization": f"Bearer {token}"}) as http:
        started = time.perf_counter()
        for _ in range(count):
            sent = http.post("/v1/jobs", files={"file": (path.name, data, "text/csv")},
                             data={"force": "true"})
            if sent.status_code != 202:
                raise SystemExit(f"upload refused: {sent.status_code} {sent.text[:300]}")
        elapsed = time.perf_counter() - started
    target = path.parent / "disk-copy.csv"
    disk_started = time.perf_counter()
    for _ in range(count):
        with open(target, "wb") as handle:
            handle.write(data)
        target.unlink()
    disk = time.perf_counter() - disk_started
    return {"uploads": count, "bytes": len(data),
            "uploads_per_second": round(count / elapsed, 2),
            "upload_mb_per_second": round(count * len(data) / elapsed / 1e6, 1),
            "disk_writes_per_second": round(count / disk, 2),
            "disk_mb_per_second": round(count * len(data) / disk / 1e6, 1)}


# -- the server ---------------------------------------------------------------------------

def setup(root: Path) -> tuple[dict[str, str], dict[str, str]]:
    """A fresh installation under ``root``, tokens for it: (environment, tokens)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PIPELINE_SHARE_DIR": str(root / "share"),
           "PIPELINE_VAR_DIR": str(root / "var"), "PIPELINE_AUTH_VIEWERS": "token",
           "PIPELINE_LOG_LEVEL": "WARNING"}
    os.environ.update({k: v for k, v in env.items() if k.startswith("PIPELINE_")})
    from orchestrator.access.auth import Role, create_token
    from orchestrator.settings import reset_settings
    from orchestrator.store.db import migrate

    reset_settings()
    migrate()
    tokens = {r.label: create_token(r, f"bench-{r.label}", "bench")[0]
              for r in (Role.VIEWER, Role.SUBMITTER)}
    return env, tokens


def serve(env: dict[str, str], port: int, root: Path) -> subprocess.Popen[bytes]:
    log = open(root / "api.log", "wb")  # noqa: SIM115 - the child owns it
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory",
                             "bench.api:bench_factory", "--port", str(port),
                             "--log-level", "warning", "--no-access-log"],
                            env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT)
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/bench/constant", timeout=2)
            return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit((root / "api.log").read_text()[-3000:])


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median rate (the machine is shared: one slow round is noise)."""
    ordered = sorted(runs, key=lambda r: r["per_second"])
    return {**ordered[len(ordered) // 2], "rounds": [r["per_second"] for r in runs]}


def run(seconds: float, uploads: int, rounds: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="bench-api-"))
    proc = None
    try:
        env, tokens = setup(root)
        port = free_port()
        proc = serve(env, port, root)
        big = price_file(root, UPLOAD_BYTES)
        upload = measure_uploads(f"http://127.0.0.1:{port}", tokens["submitter"], big, 1)
        from orchestrator.store import jobs as store

        job_id = store.list_jobs(limit=1)[0].id
        paths = ("/bench/constant", f"/v1/jobs/{job_id}")
        gets = []
        for clients in CONCURRENCY:  # rounds interleave the two: they share the machine's mood
            runs = [[measure_gets(port, path, tokens["viewer"], clients, seconds)
                     for path in paths] for _ in range(rounds)]
            gets += [median_of([r[i] for r in runs]) for i in range(len(paths))]
        upload = measure_uploads(f"http://127.0.0.1:{port}", tokens["submitter"], big, uploads)
        return {"gets": gets, "uploads": upload, "seconds": seconds, "rounds": rounds}
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        shutil.rmtree(root, ignore_errors=True)


def print_table(result: dict[str, Any]) -> None:
    print(f"{'endpoint':<10} {'conc':>4} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    by = {(g["path"], g["concurrency"]): g for g in result["gets"]}
    for g in result["gets"]:
        print(f"{g['path']:<10} {g['concurrency']:>4} {g['per_second']:>9,.1f} "
              f"{g['p50_ms']:>8.2f} {g['p99_ms']:>8.2f}")
    for clients in CONCURRENCY:
        ratio = by[("status", clients)]["per_second"] / by[("bench", clients)]["per_second"]
        print(f"status / constant at {clients:>2}: {ratio:.2f}")
    u = result["uploads"]
    print(f"uploads of {u['bytes'] / 1e6:.1f} MB: {u['uploads_per_second']:.2f}/s "
          f"({u['upload_mb_per_second']} MB/s); the same bytes written to disk: "
          f"{u['disk_writes_per_second']:.1f}/s ({u['disk_mb_per_second']} MB/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="per GET measurement")
    parser.add_argument("--uploads", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3, help="per measure; the median is kept")
    parser.add_argument("--smoke", action="store_true", help="0.5 s per measure, 2 uploads")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.smoke:
        args.seconds, args.uploads, args.rounds = 0.5, 2, 1
    result = run(args.seconds, args.uploads, args.rounds)
    print_table(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    if statistics.fmean(g["per_second"] for g in result["gets"]) <= 0:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
