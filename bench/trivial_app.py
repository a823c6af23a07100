"""A Celery app with one no-op task, configured from ``BENCH_*`` environment variables.

``bench.transports`` starts real workers on it (``celery -A bench.trivial_app worker``) and
builds the same app in-process to publish. Variables:

* ``BENCH_BROKER_URL``: broker (``atomicfs://``, ``filesystem://``, ``sqla+sqlite:///…``,
  ``redis://…``)
* ``BENCH_RESULT_BACKEND``: result backend (``atomicfile://…``, ``file://…``, ``db+…``,
  ``redis://…``)
* ``BENCH_POLLING``: broker polling interval in seconds (filesystem-like and sqla+ brokers;
  for sqla+ it is set on kombu's transport class, see ``broker_transport_options``)
* ``BENCH_BROKER_FOLDER``: root folder of a filesystem-like broker (created)
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from typing import Any

from celery import Celery

# Importing these registers the atomicfs:// transport and the atomicfile:// result backend.
from orchestrator.runtime import results, transport

QUEUE = "bench_transports"
NOOP = "bench.noop"
PREFETCH_MULTIPLIER = 4
_FOLDER_SCHEMES = ("filesystem://", "atomicfs://")


def broker_transport_options(url: str, polling: float, folder: str) -> dict[str, Any]:
    if url.startswith(_FOLDER_SCHEMES):
        return transport.transport_options(folder, polling)
    if url.startswith("sqla+"):
        # kombu 5.7's sqlalchemy transport hands every transport option to create_engine(),
        # which rejects polling_interval; the interval is set on the transport class instead.
        from kombu.transport import sqlalchemy

        sqlalchemy.Transport.polling_interval = polling
    return {}


def create_app(env: Mapping[str, str] | None = None) -> Celery:
    env = os.environ if env is None else env
    default_root = os.path.join(tempfile.gettempdir(), "bench-trivial-app")
    folder = env.get("BENCH_BROKER_FOLDER", os.path.join(default_root, "broker"))
    broker = env.get("BENCH_BROKER_URL", f"{transport.SCHEME}://")
    backend = env.get("BENCH_RESULT_BACKEND", f"{results.SCHEME}://{default_root}/results")
    polling = float(env.get("BENCH_POLLING", "0.05"))

    app = Celery("bench", set_as_current=False)
    app.conf.update(
        broker_url=broker,
        result_backend=backend,
        broker_transport_options=broker_transport_options(broker, polling, folder),
        broker_connection_retry_on_startup=True,
        task_default_queue=QUEUE,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_acks_late=True,
        worker_prefetch_multiplier=PREFETCH_MULTIPLIER,
        result_expires=600,
        worker_hijack_root_logger=True,
        worker_redirect_stdouts=False,
    )

    @app.task(name=NOOP, shared=False)
    def noop(value: Any = None) -> Any:
        return value

    return app


_apps: dict[str, Celery] = {}


def __getattr__(name: str) -> Celery:
    """``app``, built on first use (``celery -A bench.trivial_app`` reads it; the benchmark
    itself builds one app per configuration with :func:`create_app`)."""
    if name != "app":
        raise AttributeError(name)
    if "app" not in _apps:
        _apps["app"] = create_app()
    return _apps["app"]
