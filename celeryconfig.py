"""Celery settings, derived from the one settings object (``PIPELINE_*`` environment variables).

Celery's convention is a ``celeryconfig`` module; ours reads :class:`orchestrator.settings.Settings`
so the CLI, the watcher and the workers always agree.
"""

from __future__ import annotations

from kombu import Exchange as _Exchange
from kombu import Queue as _Queue

from orchestrator import results as _results
from orchestrator import transport as _transport
from orchestrator.settings import get_settings as _get_settings

_s = _get_settings()

broker_url = _s.broker
result_backend = _s.results
broker_connection_retry_on_startup = True
if _s.embedded_broker:
    broker_transport_options = _transport.transport_options(str(_s.broker_folder),
                                                           _s.broker_polling_interval)
    _results.register()

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
result_accept_content = ["json"]
timezone = "UTC"
enable_utc = True

_QUEUES = ("validate", "optimize", "archive", "maintenance")
task_queues = [
    _Queue(name, _Exchange(name, type="direct"), routing_key=name) for name in _QUEUES
]
task_default_queue = "maintenance"
task_routes = {
    "pipeline.validate": {"queue": "validate"},
    "pipeline.optimize": {"queue": "optimize"},
    "pipeline.archive": {"queue": "archive"},
    "pipeline.*": {"queue": "maintenance"},
}

# Delivery: acknowledge after the step ran, and hand the message back if the worker died.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = _s.prefetch_multiplier
worker_concurrency = _s.worker_concurrency
task_soft_time_limit = _s.step_soft_time_limit
task_time_limit = _s.step_time_limit

# The status store is the record of every job; results are kept only where a chord reads them.
task_ignore_result = True
result_expires = _s.result_expires_seconds
result_extended = False

worker_send_task_events = _s.task_events
task_send_sent_event = _s.task_events
worker_hijack_root_logger = False
worker_redirect_stdouts = False

beat_schedule = {
    "recover-stuck-jobs": {"task": "pipeline.recover_stuck", "schedule": 60.0},
}
beat_schedule_filename = str(_s.var_dir / "celerybeat-schedule")
if _s.broker.startswith("redis"):
    # A task running longer than the visibility timeout is delivered again (celery 5935).
    broker_transport_options = {"visibility_timeout": 2 * _s.step_time_limit + 60}
