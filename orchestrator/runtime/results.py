"""The embedded result backend: Celery's file backend with atomic writes and a counter.

Why a subclass: the stock file backend writes results in place (a reader can see half a
file) and has no atomic increment, so chords fall back to ``chord_unlock``, a task that polls
every second and, on non-Redis backends, can retry forever (celery issue 9674). With ``incr``
under an exclusive file lock the chord callback fires as soon as the last header task returns.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sys
import uuid

from celery.app.backends import BACKEND_ALIASES
from celery.backends.filesystem import FilesystemBackend

SCHEME = "atomicfile"
log = logging.getLogger(__name__)


class FileBackend(FilesystemBackend):
    implements_incr = True

    def _find_path(self, url: str) -> str:
        prefix = f"{SCHEME}://"
        if url and url.startswith(prefix):
            path = url[len(prefix):]
            os.makedirs(path, exist_ok=True)
            return path
        return super()._find_path(url)

    def set(self, key: bytes, value: bytes | str) -> None:
        final = self._filename(key)
        partial = final + f".{uuid.uuid4().hex}.part".encode()
        with open(partial, "wb") as handle:
            handle.write(value if isinstance(value, bytes) else value.encode())
        os.replace(partial, final)

    def incr(self, key: bytes) -> int:
        with open(self._filename(key) + b".counter", "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.seek(0)
            value = int(handle.read() or 0) + 1
            handle.seek(0)
            handle.truncate()
            handle.write(str(value).encode())
            handle.flush()
            return value

    def expire(self, key: bytes, value: int) -> None:
        """Expiry is by ``cleanup`` (beat's backend_cleanup), as for the stock backend."""

    def delete(self, key: bytes) -> None:
        for name in (self._filename(key), self._filename(key) + b".counter"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)


def register() -> None:
    BACKEND_ALIASES[SCHEME] = "orchestrator.runtime.results:FileBackend"


register()


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
