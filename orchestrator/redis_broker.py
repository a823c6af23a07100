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

import logging

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


def register() -> None:
    for scheme in ("redis", "rediss"):
        TRANSPORT_ALIASES[scheme] = "orchestrator.redis_broker:Transport"
