"""kombu's Redis transport, kept alive when Redis goes away while messages are unacked.

When the connection drops, the worker closes its channel and kombu's Redis QoS tries to put the
unacknowledged messages back at once. Redis is down, the connection already gone, and the error
(an AttributeError from a closed connection, or a ConnectionError) escapes as "Unrecoverable
error": the whole worker exits (seen here when the test restarted Redis; the same family as
celery issues 4652 and 10205). Nothing needs restoring right then: those messages stay in Redis's
unacked index and kombu restores them after the visibility timeout. So we log and carry on,
and the worker reconnects. ``redis://`` and ``rediss://`` resolve to this transport.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

from celery import Celery
from kombu.transport import TRANSPORT_ALIASES, redis
from redis.exceptions import ConnectionError as RedisConnectionError

log = logging.getLogger(__name__)


class QoS(redis.QoS):
    def restore_unacked(self, client: object = None) -> list[object]:
        try:
            super().restore_unacked(client)
        except (AttributeError, RedisConnectionError, OSError) as error:
            log.warning("Redis is away: %d unacked message(s) will come back after the "
                        "visibility timeout (%r)", len(self._delivered), error)
            self._delivered.clear()
        return []


class Channel(redis.Channel):
    QoS = QoS


class Transport(redis.Transport):
    Channel = Channel


def task_ids(app: Celery, queues: Iterable[str]) -> set[str]:
    """Ids of the task messages waiting in ``queues`` (every priority) or delivered and not
    yet acknowledged (the unacked hash): what stuck-job recovery needs to tell a lost message
    from one that is only waiting. Read with kombu's own channel, so key names, priorities,
    key prefixes and TLS are the transport's."""
    with app.connection_for_read() as conn:
        channel = conn.default_channel
        client = channel.client
        lists = [channel._q_for_pri(q, p) for q in queues for p in channel.priority_steps]
        pipe = client.pipeline()
        for name in dict.fromkeys(lists):
            pipe.lrange(name, 0, -1)
        pipe.hvals(channel.unacked_key)
        *waiting, unacked = pipe.execute()
    found = {i for raw in (m for q in waiting for m in q) if (i := _id_of(json.loads(raw)))}
    found.update(i for raw in unacked if (i := _id_of(json.loads(raw)[0])))
    return found


def _id_of(message: Any) -> str | None:
    try:
        return str(message["headers"]["id"])
    except (KeyError, TypeError):
        return None


def register() -> None:
    for scheme in ("redis", "rediss"):
        TRANSPORT_ALIASES[scheme] = "orchestrator.runtime.redis_broker:Transport"
