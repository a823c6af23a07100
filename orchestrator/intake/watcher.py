"""The share watcher: every complete file dropped into <share>/input/ becomes a job, once.

    events (watchdog)   ─┐                      ┌─ job files (wait for their CSV)
    scan every interval ─┼─► looks ─► complete? ┼─ CSVs (not named by a job file)  ─► intake
    settle deadlines    ─┘                      └─ folders (READY, or held still)  ─► batch

- How it learns of files: filesystem events for instant pickup, a periodic scan as the safety
  net; polling only on network filesystems, where other machines' writes raise no events
  (orchestrator/intake/watch/mode.py).
- When a file is complete: it arrived by rename, or it held still across two looks
  ``PIPELINE_SETTLE_SECONDS`` apart (orchestrator/intake/watch/settle.py).
- Taking it: claim (rename) before anything is recorded or published; exactly one of several
  watchers wins each file (orchestrator/intake/submission.py). The reconciler mends what
  a crash left, at start and every minute (orchestrator/reconciler/claims.py).
- Staying calm: a missing share, store or broker is logged once, retried with backoff and
  reported when back (orchestrator/intake/watch/share.py); above ``PIPELINE_MAX_QUEUED``
  waiting jobs it stops claiming until the queue drains.
"""

from __future__ import annotations

import logging
import os
import queue
import stat
import threading
import time
import uuid
from pathlib import Path

from orchestrator.errors import PipelineError, TransientError
from orchestrator.intake.submission import Batch, Intake
from orchestrator.intake.watch import jobrefs
from orchestrator.intake.watch.events import EventSource, Hint
from orchestrator.intake.watch.mode import choose
from orchestrator.intake.watch.settle import Settler
from orchestrator.intake.watch.share import Outage, Unavailable, identity, listing
from orchestrator.jobs.canvas import Orchestrator
from orchestrator.paths import is_input, is_temporary
from orchestrator.reconciler import claims
from orchestrator.store import intake as records

log = logging.getLogger(__name__)

#: Files claimed, recorded and published together (one transaction each way).
GROUP = 64
#: In event mode the scan is only the safety net: this many scan intervals apart.
EVENT_SCAN_FACTOR = 10
REPAIR_EVERY = 60.0


class Watcher:
    def __init__(self, orchestrator: Orchestrator, mode: str | None = None) -> None:
        self.orch = orchestrator
        self.settings = orchestrator.settings
        self.share = orchestrator.share
        self.input = orchestrator.share.input
        self.intake = Intake(orchestrator)
        self.mode, self.mode_reason = choose(mode or self.settings.watch_mode, self.input)
        self.hints: queue.SimpleQueue[Hint] = queue.SimpleQueue()
        self.events = EventSource(self.input, self.hints) if self.mode == "events" else None
        self.settler = Settler(self.settings.settle_seconds)
        self.arrived: set[Path] = set()
        self.job_files: dict[Path, jobrefs.JobRef] = {}
        self.share_outage = Outage("the share", self.settings.scan_interval)
        self.store_outage = Outage("the status store or broker", self.settings.scan_interval)
        self.stop = threading.Event()
        #: Set once the first round ran (events armed, input/ listed): for tests and tools.
        self.started = threading.Event()
        self._identity: tuple[int, int] | None = None
        self._next_scan = 0.0
        self._next_repair = 0.0
        self._held_back = False
        self._interval = self.settings.scan_interval

    # -- running ----------------------------------------------------------------------------

    def run(self, stop: threading.Event, interval: float | None = None) -> None:
        """Watch until ``stop`` is set; the claim in progress finishes first."""
        self.stop = stop
        self._interval = interval or self.settings.scan_interval
        self._warm_up()
        log.info("watching %s: %s mode (%s); settle %.2g s, scan every %.2g s", self.input,
                 self.mode, self.mode_reason, self.settler.settle, self._scan_every())
        while not stop.is_set():
            delay = self.tick()
            self.started.set()
            self._wait(delay)
        if self.events is not None:
            self.events.disarm()
        log.info("watcher stopped")

    def _warm_up(self) -> None:
        """Load the app's tasks and open the broker connection now, not on the first drop
        (measured: ~180 ms the first time, ~2 ms after)."""
        try:
            self.orch.job_chain(uuid.uuid4().hex)
            with self.orch.app.producer_or_acquire():
                pass
        except Exception as error:  # the broker may be away: the first drop will say so
            log.warning("could not prepare the broker connection yet: %s", error)

    def scan_once(self) -> list[str]:
        """One full look at input/ now, submitting what is complete; the new job ids."""
        self._next_scan = 0.0
        return self._round(time.monotonic())

    def tick(self) -> float:
        """One round of the loop; the seconds until the next one is due."""
        outage = max(self.share_outage.wait_left(), self.store_outage.wait_left())
        if outage > 0:
            return outage
        try:
            self._round(time.monotonic())
        except Unavailable as error:
            return self._gone(error)
        except TransientError as error:
            return self.store_outage.failed(error)
        except OSError as error:  # the share went away in the middle of a round
            return self._gone(Unavailable(f"{self.input}: {error}"))
        except Exception as error:  # a bug must not stop the intake: log it, back off, go on
            log.exception("watcher round failed")
            return self.store_outage.failed(error)
        if self.store_outage.active:
            self._next_repair = 0.0  # publish what stayed pending while it was away
        self.store_outage.recovered()
        return self._next_due()

    def _gone(self, error: Unavailable) -> float:
        self._identity = None  # re-check (and re-arm events) when it is back
        return self.share_outage.failed(error)

    def _wait(self, seconds: float) -> None:
        """Sleep until a hint arrives, ``seconds`` pass, or stop is set."""
        deadline = time.monotonic() + max(0.0, seconds)
        while not self.stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                self.hints.put(self.hints.get(timeout=min(left, 0.2)))
                return
            except queue.Empty:
                continue

    def _scan_every(self) -> float:
        events = self.events is not None and self.events.armed and not self._held_back
        return self._interval * (EVENT_SCAN_FACTOR if events else 1)

    def _next_due(self) -> float:
        """Seconds until the next scan, repair, settle look or job-file deadline. Deadlines
        already past (a ready file held back, a CSV kept for its job file) wait for a scan."""
        now = time.monotonic()
        due = [self._next_scan, self._next_repair]
        due += [t for t in self.settler.deadlines() if t > now]
        due += [t for t in (ref.first_seen + self.settings.job_file_wait
                            for ref in self.job_files.values()) if t > now]
        return max(0.01, min(due) - now)

    # -- one round --------------------------------------------------------------------------

    def _round(self, now: float) -> list[str]:
        self._check_share()
        if now >= self._next_repair:  # first: what it returns to input/ is listed below
            self._repair()
            self._next_repair = now + REPAIR_EVERY
        candidates = self._drain_hints()
        if now >= self._next_scan:
            candidates.update(listing(self.input, self._tracked()))
            self._forget_missing(candidates)
            self._next_scan = now + self._scan_every()
        candidates.update(self.settler.due(now))
        candidates.update(self.job_files)
        self.share_outage.recovered()
        return self._take(candidates, now)

    def _check_share(self) -> None:
        """A new identity of input/ (remounted, recreated): events must be re-armed on it."""
        current = identity(self.input)
        if os.path.lexists(self.share.processing):  # where claims go: never a link either
            identity(self.share.processing)
        if current == self._identity:
            return
        if self._identity is not None:
            log.warning("%s was replaced (remounted or recreated); watching the new one",
                        self.input)
        self._identity = current
        self._next_scan = 0.0
        if self.events is not None:
            self.events.arm()  # if it cannot (logged), the scan runs every interval instead

    def _drain_hints(self) -> set[Path]:
        found: set[Path] = set()
        while True:
            try:
                hint = self.hints.get_nowait()
            except queue.Empty:
                return found
            if hint.kind == "gone":
                self._identity = None
                self._next_scan = 0.0
                continue
            if hint.kind == "arrived":
                self.arrived.add(hint.path)
            else:
                self.arrived.discard(hint.path)  # written after arriving: it must settle
            found.add(hint.path)

    def _tracked(self) -> set[Path]:
        return set(self.settler.looks) | set(self.job_files) | self.arrived

    def _forget_missing(self, listed: set[Path]) -> None:
        for path in self._tracked() - listed:
            self._forget(path)

    def _forget(self, path: Path) -> None:
        self.settler.forget(path)
        self.job_files.pop(path, None)
        self.arrived.discard(path)

    def _repair(self) -> None:
        try:
            claims.reconcile_claims(self.orch)
        except (OSError, PipelineError) as error:
            log.error("repair failed, will try again: %s", error)

    # -- deciding ---------------------------------------------------------------------------

    def _take(self, candidates: set[Path], now: float) -> list[str]:
        files, folders = self._looked_at(candidates, now)
        reserved = {ref.csv for ref in self.job_files.values() if ref.csv is not None}
        notes: dict[Path, str] = {}
        singles = [p for p in sorted(files) if p.suffix.lower() == ".json"
                   and self._job_file_ready(p, files, now, notes)]
        singles += [p for p in sorted(files) if p.suffix.lower() != ".json"
                    and files[p] and p not in reserved]
        ready_folders = sorted(p for p, ready in folders.items() if ready)
        if not singles and not ready_folders:
            return []
        budget = self._budget()
        submitted = self._submit_singles(singles[:budget], notes)
        budget -= len(submitted)
        for folder in ready_folders:
            if budget <= 0 or self.stop.is_set():
                break
            submitted += self._submit_folder(folder)
        return submitted

    def _looked_at(self, candidates: set[Path], now: float,
                   ) -> tuple[dict[Path, bool], dict[Path, bool]]:
        """Each candidate still in input/, looked at: files and folders, and whether ready."""
        files: dict[Path, bool] = {}
        folders: dict[Path, bool] = {}
        for path in candidates:
            if path.parent != self.input or is_temporary(path.name):
                continue
            try:
                st = os.lstat(path)
                if stat.S_ISDIR(st.st_mode):  # a folder is complete by READY or settling only:
                    folders[path] = self.settler.folder_ready(path, now)  # even if renamed in
                elif is_input(path.name):
                    files[path] = self._file_ready(path, st, now)
            except FileNotFoundError:
                self._forget(path)  # claimed by another watcher, or deleted
        return files, folders

    def _file_ready(self, path: Path, st: os.stat_result, now: float) -> bool:
        if path.suffix.lower() == ".json":
            self.job_files[path] = jobrefs.refresh(path, st, now, self.job_files.get(path))
        if path in self.arrived:
            return True
        return self.settler.file_ready(path, st, now)

    def _job_file_ready(self, path: Path, files: dict[Path, bool], now: float,
                        notes: dict[Path, str]) -> bool:
        """A complete job file goes when its CSV is complete too, or is not in input/; one
        naming a CSV that has not arrived waits up to PIPELINE_JOB_FILE_WAIT."""
        if not files[path]:
            return False
        ref = self.job_files[path]
        csv = ref.csv
        if csv is None or not csv.is_relative_to(self.share.root):
            return True  # refused when submitted, with the reason
        if os.path.lexists(csv):
            if csv.parent != self.input:
                return True
            return files[csv] if csv in files else self._csv_ready(csv, files, now)
        waited = now - ref.first_seen
        if waited >= self.settings.job_file_wait:
            notes[path] = (f"waited {self.settings.job_file_wait:g} s for it: "
                           "PIPELINE_JOB_FILE_WAIT")
            return True
        return False

    def _csv_ready(self, csv: Path, files: dict[Path, bool], now: float) -> bool:
        try:
            files[csv] = self._file_ready(csv, os.lstat(csv), now)
        except FileNotFoundError:
            return False
        return files[csv]

    def _budget(self) -> int:
        """How many more jobs may be claimed before the queue is over PIPELINE_MAX_QUEUED."""
        waiting = records.count_waiting()
        budget = self.settings.max_queued - waiting
        if budget <= 0 and not self._held_back:
            log.warning("back-pressure: %d jobs wait (PIPELINE_MAX_QUEUED=%d); new files stay "
                        "in input/ until the queue drains", waiting, self.settings.max_queued)
        elif budget > 0 and self._held_back:
            log.warning("queue drained to %d jobs; claiming again", waiting)
        self._held_back = budget <= 0
        return max(0, budget)

    # -- submitting -------------------------------------------------------------------------

    def _submit_singles(self, paths: list[Path], notes: dict[Path, str]) -> list[str]:
        submitted: list[str] = []
        for start in range(0, len(paths), GROUP):
            if self.stop.is_set():
                break
            group = paths[start:start + GROUP]
            outcome = self.intake.submit(group, {}, dedupe=True, keep_unpublished=True,
                                         lost_ok=True, notes=notes)
            for path in group:
                self._forget(path)
            submitted += outcome.job_ids
            self._log_outcome(group, outcome)
        return submitted

    def _log_outcome(self, group: list[Path], outcome: object) -> None:
        if log.isEnabledFor(logging.INFO):
            job_ids = getattr(outcome, "job_ids", [])
            log.info("submitted %d of %d file(s): %s", len(job_ids), len(group),
                     ", ".join(p.name for p in group[:5]) + (" …" if len(group) > 5 else ""))

    def _submit_folder(self, folder: Path) -> list[str]:
        """A folder is one batch: renamed whole into processing/ first (the rename decides),
        then each of its files is claimed from there as a job of the batch."""
        batch_id = uuid.uuid4().hex
        staging = self.share.processing / f"{claims.BATCH_PREFIX}{batch_id}"
        claims.write_batch_marker(staging, folder.name)
        try:
            os.rename(folder, staging)
        except FileNotFoundError:
            claims.batch_marker(staging).unlink(missing_ok=True)
            self._forget(folder)
            return []
        self._forget(folder)
        try:
            outcome = self.intake.submit(jobrefs.batch_members(staging), {}, dedupe=True,
                                         batch=Batch(batch_id, folder.name),
                                         keep_unpublished=True, lost_ok=True)
        except TransientError:  # not recorded: the folder goes back, to be taken again
            os.rename(staging, claims.free_name(folder))
            claims.batch_marker(staging).unlink(missing_ok=True)
            raise
        claims.finish_staging(self.orch, staging, batch_id)
        log.info("folder %s: batch %s of %d job(s)", folder.name, batch_id,
                 len(outcome.job_ids))
        return outcome.job_ids

