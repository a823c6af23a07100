"""The statistics for Prometheus: a tiny HTTP endpoint (``pipeline exporter --port``) or a
textfile for node_exporter's textfile collector (``pipeline exporter --textfile``).

Everything is a gauge read from the status database and the broker when scraped (at most once
per ``min_interval`` seconds; scrapes in between get the same text). Job counts by state only
grow or move on (completed -> archived), so Prometheus's ``rate()``/``increase()`` work on
``pipeline_jobs{state="completed"}`` too.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _label(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _series(name: str, kind: str, help_text: str,
            samples: list[tuple[dict[str, str], float | None]]) -> Iterator[str]:
    yield f"# HELP {name} {help_text}"
    yield f"# TYPE {name} {kind}"
    for labels, value in samples:
        if value is None:
            continue
        text = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
        yield f"{name}{{{text}}} {value:g}" if text else f"{name} {value:g}"


def render(stats: dict[str, Any]) -> str:
    """Prometheus text exposition format (version 0.0.4) of :func:`stats.collect`'s dict."""
    durations = stats["durations"]
    lines = [
        *_series("pipeline_jobs", "gauge", "Jobs in each state (all time).",
                 [({"state": s}, n) for s, n in stats["jobs_by_state"].items()]),
        *_series("pipeline_jobs_finished_window", "gauge",
                 "Jobs that finished within the window, by final state.",
                 [({"state": s}, n) for s, n in stats["finished"].items() if s != "total"]),
        *_series("pipeline_window_seconds", "gauge", "Length of the statistics window.",
                 [({}, stats["window_seconds"])]),
        *_series("pipeline_throughput_jobs_per_minute", "gauge",
                 "Finished jobs per minute over the window.",
                 [({}, stats["throughput_per_minute"])]),
        *_series("pipeline_failure_ratio", "gauge",
                 "failed / (completed + failed) over the window.", [({}, stats["failure_rate"])]),
        *_series("pipeline_duration_seconds", "gauge",
                 "p50/p95 duration over the window: per step, queue wait, end to end.",
                 [({"phase": phase, "quantile": q}, figures[key])
                  for phase, figures in durations.items()
                  for q, key in (("0.5", "p50"), ("0.95", "p95"))]),
        *_series("pipeline_duration_samples", "gauge", "Durations behind each quantile.",
                 [({"phase": phase}, figures["count"]) for phase, figures in durations.items()]),
        *_series("pipeline_oldest_queued_seconds", "gauge",
                 "Age of the longest-waiting queued job (0: none).",
                 [({}, stats["oldest_queued_seconds"] or 0.0)]),
        *_series("pipeline_queue_depth", "gauge", "Messages waiting in each broker queue.",
                 [({"queue": q}, n) for q, n in (stats["queues"] or {}).items()]),
        *_series("pipeline_workers_online", "gauge", "Workers that answered a ping.",
                 [({}, len(stats["workers"]) if stats["workers"] is not None else None)]),
        *_series("pipeline_up", "gauge", "1 when the part could be read at the last scrape.",
                 [({"part": "database"}, 1.0),
                  ({"part": "broker"}, 0.0 if "broker" in stats["errors"] else 1.0)]),
    ]
    return "\n".join(lines) + "\n"


class Cache:
    """The last rendering, refreshed when older than ``min_interval`` seconds."""

    def __init__(self, produce: Callable[[], str], min_interval: float) -> None:
        self._produce, self._min = produce, min_interval
        self._text, self._at = "", -float("inf")
        self._lock = threading.Lock()

    def get(self) -> str:
        with self._lock:
            if time.monotonic() - self._at >= self._min:
                self._text, self._at = self._produce(), time.monotonic()
            return self._text


def producer(window: timedelta) -> Callable[[], str]:
    from orchestrator.monitoring.stats import collect

    return lambda: render(collect(window, ping_timeout=0.5))


def serve(address: str, port: int, cache: Cache) -> ThreadingHTTPServer:
    """A server answering ``GET /metrics`` (and ``/`` with a pointer); not yet started."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/metrics":
                self._reply(404 if self.path != "/" else 200, "see /metrics\n")
                return
            try:
                self._reply(200, cache.get(), CONTENT_TYPE)
            except Exception as error:  # the database is away: say so, keep serving
                log.error("metrics not collected: %s", error)
                self._reply(503, f"metrics not collected: {type(error).__name__}\n")

        def _reply(self, status: int, text: str, kind: str = "text/plain") -> None:
            body = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("exporter: " + format, *args)

    return ThreadingHTTPServer((address, port), Handler)


def write_textfile(path: Path, text: str) -> None:
    """Atomically, as node_exporter's textfile collector wants (it may read at any moment)."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(text)
    os.replace(partial, path)
