"""Running the pipeline's processes on one machine: worker, beat and watcher together."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from orchestrator.pipeline import Orchestrator

log = logging.getLogger(__name__)
QUEUES = "validate,optimize,archive,maintenance"


def celery_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "orchestrator", *args]


def worker_command(concurrency: int, name: str = "pipeline", queues: str = QUEUES,
                   loglevel: str = "INFO") -> list[str]:
    return celery_command("worker", "-Q", queues, "-c", str(concurrency), "-n", f"{name}@%h",
                          "--loglevel", loglevel, "--without-gossip", "--without-mingle")


def start(command: Sequence[str], log: Path | None = None) -> subprocess.Popen[bytes]:
    """A child in its own session (Ctrl-C reaches us once; we stop the children in order)."""
    output = open(log, "ab") if log else None  # noqa: SIM115 - the child owns it
    return subprocess.Popen(list(command), start_new_session=True, stdout=output,
                            stderr=subprocess.STDOUT if output else None)


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


def release_result_subscriptions() -> None:
    """Forget this thread's result subscriptions before the interpreter exits.

    Celery's Redis result backend subscribes to the result of every task this process
    publishes; an AsyncResult collected at interpreter shutdown (a chord's holds a reference
    cycle) then unsubscribes over a new connection while imports no longer work, printing
    "ImportError: sys.meta_path is None". Nothing here reads those results: drop the
    subscriptions and close the consumer's connection, so later collection has nothing to do.
    ``app.backend`` is per thread: call this in the thread that published.
    """
    app_module = sys.modules.get("orchestrator.celery")
    if app_module is None:  # this command never touched Celery
        return
    consumer = getattr(app_module.app.backend, "result_consumer", None)
    subscribed = getattr(consumer, "subscribed_to", None)
    if consumer is None or subscribed is None:  # not the Redis backend
        return
    subscribed.clear()
    try:
        consumer.stop()
    except Exception as error:  # Redis already away: nothing left to close
        log.debug("result consumer not stopped: %s", error)


def stop_on_signals(event: threading.Event) -> None:
    def handler(signum: int, _frame: object) -> None:
        log.info("signal %s: stopping", signal.Signals(signum).name)
        event.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def run_all(orchestrator: Orchestrator, concurrency: int) -> int:
    """Worker + beat as child processes, the watcher in this one, until Ctrl-C or SIGTERM."""
    from orchestrator.logs import configure as configure_logs
    from orchestrator.watcher import Watcher

    configure_logs(orchestrator.settings.log_level)  # PIPELINE_LOG_FORMAT: text or json
    settings = orchestrator.settings
    from cli.api import for_up  # the HTTP API and page, unless PIPELINE_API_ENABLED=false

    api = for_up(settings)  # its checks come before anything starts
    children = [start(worker_command(concurrency)),
                start(celery_command("beat", "--loglevel", "INFO", "-s",
                                     str(settings.var_dir / "celerybeat-schedule")))]
    children += [start(api)] if api else []
    stop_event = threading.Event()
    stop_on_signals(stop_event)
    watcher = threading.Thread(target=Watcher(orchestrator).run,
                               args=(stop_event, settings.scan_interval), daemon=True)
    watcher.start()
    print(f"pipeline up: drop CSV files into {orchestrator.share.input} (Ctrl-C stops)",
          flush=True)
    while not stop_event.wait(1.0):
        if any(proc.poll() is not None for proc in children):
            log.error("a child process exited; stopping the others")
            break
    stop_event.set()
    watcher.join(timeout=10)
    stop(children)
    return 0
