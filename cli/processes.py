"""Running the pipeline's processes on one machine: worker(s), beat and watcher together.

The children run in their own sessions (a terminal's Ctrl-C reaches ``pipeline up`` once, and
it stops them in order), so nothing would stop them if ``up`` itself were killed: each child
asks the kernel for SIGTERM when its parent dies (PR_SET_PDEATHSIG), and ``up`` holds a lock
file under the var folder, inherited by its children, that a second ``up`` finds and reports
instead of starting workers with the same node names.
"""

from __future__ import annotations

import ctypes
import fcntl
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

from orchestrator.errors import PipelineError
from orchestrator.jobs.canvas import Orchestrator
from orchestrator.settings import get_settings
from orchestrator.steps.registry import MAINTENANCE_QUEUE

log = logging.getLogger(__name__)
LOCK_NAME = "pipeline-up.lock"
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class AlreadyRunning(PipelineError):
    """Another ``pipeline up`` (or a child of one) runs on this var folder."""


def celery_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "orchestrator", *args]


def worker_command(concurrency: int, name: str = "pipeline", queues: str | None = None,
                   loglevel: str = "INFO") -> list[str]:
    """A worker of every queue of the configured pipeline, unless ``queues`` names some."""
    queues = queues or ",".join(get_settings().steps.all_queues)
    return celery_command("worker", "-Q", queues, "-c", str(concurrency), "-n", f"{name}@%h",
                          "--loglevel", loglevel, "--without-gossip", "--without-mingle")


def role_worker_commands(concurrency: int) -> list[list[str]]:
    """One worker per role of the configured pipeline (orchestrator/steps/registry.py), each
    named by it (steps@host, optimize@host, maintenance@host); maintenance runs one process."""
    return [worker_command(1 if role == MAINTENANCE_QUEUE else concurrency, name=role,
                           queues=",".join(queues))
            for role, queues in get_settings().steps.roles().items()]


def start(command: Sequence[str], log: Path | None = None,
          keep_fds: Sequence[int] = ()) -> subprocess.Popen[bytes]:
    """A child in its own session that dies with this process (Linux), keeping ``keep_fds``."""
    output = open(log, "ab") if log else None  # noqa: SIM115 - the child owns it
    return subprocess.Popen(list(command), start_new_session=True, stdout=output,
                            stderr=subprocess.STDOUT if output else None,
                            pass_fds=tuple(keep_fds), preexec_fn=_die_with_parent())


def _die_with_parent() -> Callable[[], None] | None:
    """What the child runs before exec: SIGTERM (Celery's warm shutdown) when the thread that
    started it dies, and at once if that happened already (the race before prctl)."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before fork, not in the child
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def hold_up_lock(var_dir: Path) -> IO[str]:
    """The lock of ``pipeline up`` on this var folder, held while the returned file is open
    here or in a child that inherited it; AlreadyRunning if someone holds it."""
    var_dir.mkdir(parents=True, exist_ok=True)
    path = var_dir / LOCK_NAME
    handle = open(path, "a+")  # noqa: SIM115 - held for the life of `up` and its children
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise AlreadyRunning(
            f"pipeline up is already running on this machine: {path} is held (started by "
            f"pid {holder}; if that process is gone, its worker or beat is still stopping). "
            "Stop it first (Ctrl-C, or SIGTERM to that pid), or use another PIPELINE_VAR_DIR"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def stop(processes: Sequence[subprocess.Popen[bytes]], timeout: float = 30) -> None:
    """SIGTERM (a warm shutdown for Celery: running steps finish), then SIGKILL if stuck."""
    for proc in processes:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in processes:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def stop_on_signals(event: threading.Event) -> None:
    def handler(signum: int, _frame: object) -> None:
        log.info("signal %s: stopping", signal.Signals(signum).name)
        event.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def run_all(orchestrator: Orchestrator, concurrency: int, by_role: bool = False) -> int:
    """Worker(s) + beat as child processes, the watcher in this one, until Ctrl-C or SIGTERM.

    ``by_role``: one worker per role (as deploy/ runs them) instead of one on every queue.
    """
    from orchestrator.runtime.logs import configure as configure_logs

    settings = orchestrator.settings
    from cli.api import for_up  # the HTTP API and page, unless PIPELINE_API_ENABLED=false

    api = for_up(settings)  # its checks come before anything starts
    lock = hold_up_lock(settings.var_dir)
    configure_logs(settings.log_level)  # PIPELINE_LOG_FORMAT: text or json
    workers = role_worker_commands(concurrency) if by_role else [worker_command(concurrency)]
    beat = celery_command("beat", "--loglevel", "INFO", "-s",
                          str(settings.var_dir / "celerybeat-schedule"))
    children = [start(command, keep_fds=[lock.fileno()]) for command in [*workers, beat]]
    children += [start(api, keep_fds=[lock.fileno()])] if api else []
    stop_event = threading.Event()
    stop_on_signals(stop_event)
    watcher = threading.Thread(target=_watch, args=(orchestrator, stop_event), daemon=True)
    watcher.start()
    print(f"pipeline up: drop CSV files into {orchestrator.share.input} (Ctrl-C stops)",
          flush=True)
    failed = False
    while not stop_event.wait(1.0):
        exited = [proc for proc in children if proc.poll() is not None]
        if exited:  # e.g. a worker that lost its Redis or RabbitMQ exits for a restart
            log.error("%s exited with %s; stopping the others so that this process's "
                      "supervisor restarts them all", " ".join(map(str, exited[0].args)),
                      exited[0].returncode)
            failed = True
            break
    stop_event.set()
    watcher.join(timeout=10)
    stop(children)
    lock.close()
    return 1 if failed else 0


def _watch(orchestrator: Orchestrator, stop_event: threading.Event) -> None:
    from orchestrator.intake.watcher import Watcher

    try:
        Watcher(orchestrator).run(stop_event, orchestrator.settings.scan_interval)
    finally:
        from orchestrator.runtime.results import release_result_subscriptions

        release_result_subscriptions()  # this thread's backend: see orchestrator/runtime/results.py
