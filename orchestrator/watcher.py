"""The share watcher (first version): scans input/ on a timer and submits complete files.

A file is complete when its size and mtime held still between two scans. Job files (``*.json``)
go first, and a CSV that a job file names is left for that job file rather than run alone.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

from orchestrator.errors import PipelineError
from orchestrator.paths import is_temporary
from orchestrator.pipeline import Orchestrator

log = logging.getLogger(__name__)

ACCEPTED = (".csv", ".json")
Look = tuple[int, int]


class Watcher:
    def __init__(self, orchestrator: Orchestrator) -> None:
        self.orchestrator = orchestrator
        self.input = orchestrator.share.input
        self._last: dict[Path, Look] = {}

    def scan_once(self) -> list[str]:
        """One look at input/: submit what is complete, return the new job ids."""
        looks = self._look()
        ready = [p for p, look in looks.items() if self._last.get(p) == look]
        self._last = looks
        reserved = self._named_by_job_files(looks)
        ordered = sorted(ready, key=lambda p: (p.suffix.lower() != ".json", p.name))
        submitted = []
        for path in ordered:
            if path.suffix.lower() == ".csv" and path.name in reserved:
                continue
            job_id = self._submit(path)
            if job_id:
                submitted.append(job_id)
                self._last.pop(path, None)
        return submitted

    def _look(self) -> dict[Path, Look]:
        looks = {}
        for entry in self.input.iterdir():
            if is_temporary(entry.name) or entry.suffix.lower() not in ACCEPTED:
                continue
            try:
                stat = entry.stat()
            except FileNotFoundError:
                continue
            if entry.is_file():
                looks[entry] = (stat.st_size, stat.st_mtime_ns)
        return looks

    def _named_by_job_files(self, looks: dict[Path, Look]) -> set[str]:
        named = set()
        for path in looks:
            if path.suffix.lower() != ".json":
                continue
            try:
                target = json.loads(path.read_bytes()).get("input_file")
            except (OSError, ValueError, AttributeError):
                continue
            if isinstance(target, str) and "/" not in target:
                named.add(target)
        return named

    def _submit(self, path: Path) -> str | None:
        try:
            job_id = self.orchestrator.submit(path)
        except FileNotFoundError:
            return None  # claimed by another watcher, or by a job file, first
        except PipelineError as error:
            log.error("could not submit %s: %s", path.name, error)
            return None
        log.info("submitted %s as job %s", path.name, job_id)
        return job_id

    def run(self, stop: threading.Event, interval: float) -> None:
        log.info("watching %s every %.2f s", self.input, interval)
        while not stop.is_set():
            try:
                self.scan_once()
            except OSError as error:
                log.error("cannot scan %s: %s", self.input, error)
            stop.wait(interval)
