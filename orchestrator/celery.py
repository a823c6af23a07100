"""The Celery app. ``celery -A orchestrator …`` finds it here."""

from __future__ import annotations

from celery import Celery, signals

from orchestrator import logs as _logs  # noqa: F401 - connects the logging signals
from orchestrator import redis_broker, results, security, transport
from orchestrator.monitoring import heartbeat as _heartbeat  # noqa: F401 - beat's ticks
from orchestrator.settings import Settings, get_settings

transport.register()
results.register()
redis_broker.register()

TASK_MODULES = ("tasks.steps", "tasks.batch", "tasks.maintenance", "tasks.rotation",
                "tasks.monitoring")


def create_app(settings: Settings | None = None) -> Celery:
    """An app configured from ``settings`` (tests build one per broker they run against)."""
    import celeryconfig

    settings = settings or get_settings()
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    created = Celery("orchestrator", set_as_current=False)
    created.config_from_object(celeryconfig.build(settings))
    created.conf.imports = TASK_MODULES
    if settings.signing:
        security.enable_signing(created)
    return created


app = create_app()
app.set_current()


@signals.worker_init.connect
def _schema_current(**_: object) -> None:
    from orchestrator.store.db import migrate

    migrate()


@signals.worker_process_shutdown.connect
def _flush_statement_counts(**_: object) -> None:
    from orchestrator.store.db import flush_statement_counts

    flush_statement_counts()


@signals.beat_init.connect
def _one_beat(**_: object) -> None:
    from orchestrator.beat_lock import hold_schedule_lock
    from orchestrator.monitoring.heartbeat import beat_started
    from orchestrator.store.db import migrate

    migrate()
    hold_schedule_lock(get_settings())
    beat_started()  # `pipeline health` gives a new beat until its first tick
