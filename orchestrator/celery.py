"""The composition root: settings in, a configured Celery app with every task out.

``create_app(settings)`` builds Celery's configuration from the one settings object
(celeryconfig.py), names the task modules (Celery shared tasks, so every app made here has them;
the step tasks are made from the step registry, tasks/steps.py), and adds the worker's shutdown
deadline. Tests make one per broker, or one on the memory transport for an in-process worker
(tests/unit/test_in_process_worker.py). ``celery -A orchestrator …`` finds the module's
``app``, made from the environment's settings.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from celery import Celery, bootsteps, signals

from orchestrator.access import security
from orchestrator.monitoring import heartbeat as _heartbeat  # noqa: F401 - beat's ticks
from orchestrator.runtime import logs as _logs  # noqa: F401 - connects the logging signals
from orchestrator.runtime import redis_broker, results, transport
from orchestrator.settings import Settings, get_settings

transport.register()
results.register()
redis_broker.register()

log = logging.getLogger(__name__)

TASK_MODULES = ("tasks.steps", "tasks.batch", "tasks.maintenance", "tasks.rotation",
                "tasks.monitoring")


def create_app(settings: Settings | None = None) -> Celery:
    """An app configured from ``settings``, its tasks those of :data:`TASK_MODULES`."""
    import celeryconfig

    settings = settings or get_settings()
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    created = Celery("orchestrator", set_as_current=False)
    created.config_from_object(celeryconfig.build(settings))
    created.conf.imports = TASK_MODULES
    if settings.signing:
        security.enable_signing(created)
    created.steps["worker"].add(ShutdownDeadline)
    return created


class ShutdownDeadline(bootsteps.StartStopStep):
    """A worker that is stopping exits within a deadline, whatever it waits for.

    Why: a worker stopping after "Unrecoverable error" (e.g. a pool pipe corrupted by a time
    limit) waited for ever on a pipe with no pool children left, so its supervisor never
    restarted it (issue 13, item 3). While stopping, the pool's time limits are no longer
    enforced (the event loop has ended), so nothing else bounds the wait. No step may run
    longer than its hard limit: past the longest one (plus the lease grace) the process exits
    with its exit code, or 1.
    """


    _timer: threading.Timer | None = None

    def close(self, parent: object) -> None:
        if self._timer is not None:
            return
        settings = get_settings()
        deadline = settings.longest_step_limit + settings.lease_grace_seconds
        code = getattr(parent, "exitcode", None) or 1
        self._timer = threading.Timer(deadline, _exit_now, (deadline, code))
        self._timer.daemon = True
        self._timer.start()

    stop = terminate = close


def _exit_now(deadline: float, code: int) -> None:
    log.critical("worker still stopping after %.0f s: exiting with %d", deadline, code)
    logging.shutdown()
    os._exit(code)


app = create_app()
app.set_current()


@signals.worker_init.connect
def _schema_current(**_: object) -> None:
    from orchestrator.store.db import migrate

    migrate()


@signals.worker_init.connect
def _import_served_steps(sender: Any, **_: object) -> None:
    """Import the functions of the steps this worker serves, in the main process, before the
    pool forks: the children share those pages, and a step whose ``run`` names a missing
    module or function stops the worker now, not at its first job. A worker that serves none
    (``-Q maintenance``) does not load the numerical stack at all (issue 7: under 200 MB)."""
    for step in get_settings().steps.served_by(sender.app.amqp.queues.consume_from):
        try:
            step.function()
        except Exception as error:  # Celery logs and swallows a handler's Exception
            raise SystemExit(f"step {step.name}: its run function {step.run!r} cannot be "
                             f"imported: {type(error).__name__}: {error}") from error


@signals.worker_process_shutdown.connect
def _flush_statement_counts(**_: object) -> None:
    from orchestrator.store.db import flush_statement_counts

    flush_statement_counts()


@signals.beat_init.connect
def _one_beat(**_: object) -> None:
    from orchestrator.monitoring.heartbeat import beat_started
    from orchestrator.runtime.beat_lock import hold_schedule_lock
    from orchestrator.store.db import migrate

    migrate()
    hold_schedule_lock(get_settings())
    beat_started()  # `pipeline health` gives a new beat until its first tick
