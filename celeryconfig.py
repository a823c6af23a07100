"""Celery settings, derived from the one settings object (``PIPELINE_*`` environment variables).

Celery's convention is a ``celeryconfig`` module; ours is built by :func:`build` from
:class:`orchestrator.settings.Settings`, so the CLI, the watcher and the workers always agree.
Nothing is read at import: the composition root (orchestrator/celery.py, ``create_app``) calls
:func:`build` with the settings it was given.
"""

from __future__ import annotations

from typing import Any

from kombu import Exchange, Queue

from orchestrator.access import security
from orchestrator.policy import limits as task_limits
from orchestrator.rotation.schedule import beat_entries as rotation_beat
from orchestrator.runtime import results, transport
from orchestrator.settings import Settings
from orchestrator.steps.registry import MAINTENANCE_QUEUE, PIPELINE

#: The default pipeline's queues (deploy/ names them); a worker serves ``settings.steps``'.
QUEUE_NAMES = PIPELINE.all_queues

def build(s: Settings) -> dict[str, Any]:
    # Signing replaces the task serializer; TLS adds certificate checks (deploy/README.md).
    return {**_connections(s), **_delivery(s), **_serialization(), **_beat(s),
            **security.signing_conf(s), **security.tls_conf(s)}


def _connections(s: Settings) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "broker_url": s.broker,
        "result_backend": s.results,
        "broker_connection_retry_on_startup": True,
        "task_queues": [Queue(n, Exchange(n, type="direct"), routing_key=n)
                        for n in s.steps.all_queues],
        "task_default_queue": MAINTENANCE_QUEUE,
        "task_routes": s.steps.routes(),
    }
    if s.embedded_broker:
        conf["broker_transport_options"] = transport.transport_options(
            str(s.broker_folder), s.broker_polling_interval)
        results.register()
    else:
        conf.update(_outage_bounds(s))
    return conf


#: Seconds a Redis call may wait for a connection / an answer before it fails (and retries
#: outside the step's limits): without them a step can wait on a silent server until killed.
REDIS_CONNECT_TIMEOUT, REDIS_SOCKET_TIMEOUT = 5.0, 10.0


def _outage_bounds(s: Settings) -> dict[str, Any]:
    """Redis or RabbitMQ: what happens when the broker or result backend goes away.

    The worker EXITS (code 1) when its broker connection is lost after it was connected
    (``broker_connection_retry=False``); its supervisor restarts it (systemd ``Restart=always``)
    and the new worker waits for the broker (``broker_connection_retry_on_startup``). Why not
    reconnect in place (Celery's default): the main process retries the connection in a
    blocking loop that runs no event loop, so the pool's results are not read and its time
    limits are not checked; when the broker returns, every limit that passed in the meantime
    fires at once, at steps that had finished long before: "Soft time limit exceeded", a pool
    pipe corrupted mid-write ("Unrecoverable error: UnpicklingError") and a main process hung
    with no pool children (issue 13, item 3; reproduced by tests/fault/test_redis_outage.py).
    Unacknowledged messages come back (Redis: after the visibility timeout; RabbitMQ: when the
    channel closes) and stuck-job recovery re-runs steps whose lease ran out.
    """
    conf: dict[str, Any] = {"broker_connection_retry": False}
    if s.broker.startswith(("redis://", "rediss://")):
        # A task running longer than the visibility timeout is delivered twice (celery 5935).
        timeout = s.visibility_timeout or 2 * s.longest_time_limit + 60
        conf["broker_transport_options"] = {
            "visibility_timeout": timeout, "socket_connect_timeout": REDIS_CONNECT_TIMEOUT,
            "socket_timeout": REDIS_SOCKET_TIMEOUT}
    if s.results.startswith(("redis://", "rediss://")):
        # Celery retries a result write 20 times a second apart by default: inside a step's
        # time limit (a batch's last step stores its result for the chord). Fail fast instead.
        conf.update(redis_socket_connect_timeout=REDIS_CONNECT_TIMEOUT,
                    redis_socket_timeout=REDIS_SOCKET_TIMEOUT,
                    result_backend_transport_options={"retry_policy": {
                        "max_retries": 2, "interval_start": 0, "interval_step": 0.5,
                        "interval_max": 1}})
    return conf


def _delivery(s: Settings) -> dict[str, Any]:
    return {
        # Acknowledge after the step ran; hand the message back if the worker died.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": s.prefetch_multiplier,
        "worker_concurrency": s.worker_concurrency,
        "task_annotations": task_limits.task_annotations(s),  # orchestrator/policy/limits.py
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

