"""What the broker holds: messages waiting per queue, and the workers that answer a ping.

Queue depth is asked of the broker through kombu's passive ``queue_declare``, which every
transport answers with its own count: Redis sums ``LLEN`` over the queue's priority lists,
RabbitMQ returns the queue's ready messages, the embedded broker counts the queue's
``*.{queue}.msg`` files in var/broker/queue (messages a worker has claimed are not waiting).
A queue the broker does not know yet (Redis deletes an empty list) holds 0.
"""

from __future__ import annotations

from contextlib import suppress
from typing import Any

from celery import Celery
from kombu.exceptions import ChannelError

from orchestrator.settings import get_settings


def depths(app: Celery, names: tuple[str, ...] | None = None, timeout: float = 3.0,
           ) -> dict[str, int]:
    """Messages waiting in each queue (default: every queue of the configured pipeline).
    Raises the broker's error if it cannot be reached."""
    names = names or get_settings().steps.all_queues
    out: dict[str, int] = {}
    with app.connection_for_read() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0.2, timeout=timeout)
        for name in names:
            channel = conn.channel()  # a refused passive declare closes its channel (AMQP)
            try:
                out[name] = int(channel.queue_declare(queue=name, passive=True).message_count)
            except ChannelError:
                out[name] = 0
            finally:
                _close(channel)
    return out


def _close(channel: Any) -> None:
    with suppress(Exception):  # already closed by the broker's refusal
        channel.close()


def workers_online(app: Celery, timeout: float = 1.0) -> list[str]:
    """Names of the workers that answered a ping within ``timeout`` seconds."""
    replies = app.control.ping(timeout=timeout) or []
    return sorted(name for reply in replies for name in reply)
