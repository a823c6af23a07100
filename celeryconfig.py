"""Celery settings, derived from the one settings object (``PIPELINE_*`` environment variables).

Celery's convention is a ``celeryconfig`` module; ours is built by :func:`build` from
:class:`orchestrator.settings.Settings`, so the CLI, the watcher and the workers always agree.
The module's globals are ``build(get_settings())`` for tools that read the module directly.
"""

from __future__ import annotations

from typing import Any

from kombu import Exchange, Queue

from orchestrator import results, security, transport
from orchestrator.rotation.schedule import beat_entries as rotation_beat
from orchestrator.settings import STEPS, Settings, get_settings

QUEUE_NAMES = ("validate", "optimize", "archive", "maintenance")
ROUTES = {
    "pipeline.validate": {"queue": "validate"},
    "pipeline.optimize": {"queue": "optimize"},
    "pipeline.archive": {"queue": "archive"},
    "pipeline.*": {"queue": "maintenance"},
}


def build(s: Settings) -> dict[str, Any]:
    # Signing replaces the task serializer; TLS adds certificate checks (deploy/README.md).
    return {**_connections(s), **_delivery(s), **_serialization(), **_beat(s),
            **security.signing_conf(s), **security.tls_conf(s)}


def _connections(s: Settings) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "broker_url": s.broker,
        "result_backend": s.results,
        "broker_connection_retry_on_startup": True,
        "task_queues": [Queue(n, Exchange(n, type="direct"), routing_key=n) for n in QUEUE_NAMES],
        "task_default_queue": "maintenance",
        "task_routes": ROUTES,
    }
    if s.embedded_broker:
        conf["broker_transport_options"] = transport.transport_options(
            str(s.broker_folder), s.broker_polling_interval)
        results.register()
    elif s.broker.startswith(("redis://", "rediss://")):
        # A task running longer than the visibility timeout is delivered twice (celery 5935).
        timeout = s.visibility_timeout or 2 * s.longest_time_limit + 60
        conf["broker_transport_options"] = {"visibility_timeout": timeout}
    return conf


def _delivery(s: Settings) -> dict[str, Any]:
    return {
        # Acknowledge after the step ran; hand the message back if the worker died.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": s.prefetch_multiplier,
        "worker_concurrency": s.worker_concurrency,
        "task_annotations": {
            f"pipeline.{step}": dict(zip(("soft_time_limit", "time_limit"), s.time_limits(step),
                                         strict=True))
            for step in STEPS
        },
        "worker_max_tasks_per_child": s.worker_max_tasks_per_child,
        "worker_max_memory_per_child": s.worker_max_memory_per_child,
        # The status store records every job; results are kept only where a chord reads them.
        "task_ignore_result": True,
        "result_expires": s.result_expires_seconds,
        "worker_send_task_events": s.task_events,
        "task_send_sent_event": s.task_events,
        "worker_hijack_root_logger": True,
        "worker_redirect_stdouts": False,
    }


def _serialization() -> dict[str, Any]:
    return {
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "timezone": "UTC",
        "enable_utc": True,
    }


def _beat(s: Settings) -> dict[str, Any]:
    return {
        "beat_schedule": {
            "recover-stuck-jobs": {"task": "pipeline.recover_stuck",
                                   "schedule": float(s.recovery_interval)},
            **rotation_beat(s.rotation_schedule),
        },
        "beat_schedule_filename": str(s.var_dir / "celerybeat-schedule"),
    }


globals().update(build(get_settings()))
