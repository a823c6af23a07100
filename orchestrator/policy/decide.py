"""What an error means for the task that raised it, and what happens next: one hook.

As dramatiq's Retries middleware decides in one place (``after_process_message``: an error the
actor declares it throws fails at once, retries past the budget fail, others are enqueued again
after an exponential backoff), :func:`decide` turns (error, retries so far, task name) into a
:class:`Decision`. The tasks only carry it out: record a failure, record a requeue and retry,
or retry the delivery.

================  =============================================  ==========  ================
kind              errors                                         action      budget (retries)
================  =============================================  ==========  ================
``data``          DataError (bad file, parameters, no solution)  fail now    -
``timeout``       the soft time limit (SoftTimeLimitExceeded)    fail now    -
``outage``        database (DBAPIError) or broker (kombu         redeliver   outage_retries;
                  OperationalError) away: nothing can be                     rotation batch
                  recorded meanwhile                                         (idempotent):
                                                                             max_retries
``disk``          OSError ENOSPC, EDQUOT, EIO, ESTALE: a full    retry       about
                  or failing share passes (space is freed, the               disk_wait_seconds,
                  mount returns) in minutes                                  at least max_retries
``transient``     TransientError, ConnectionError, TimeoutError  retry       max_retries;
                  or any error with ``retryable`` true                       notify:
                                                                             notify_retries
``unexpected``    anything else (likely a bug)                   fail now    -
================  =============================================  ==========  ================

A task with no budget for a kind (a rotation batch is only retried for an outage) fails. An
outage past its budget is ``give_up``: the error propagates, the step's lease runs out and
stuck-job recovery runs it again. Pauses come from :func:`orchestrator.policy.backoff.backoff`
with the task's cap (notifications: 5 minutes, others: a minute).
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from enum import StrEnum

from celery.exceptions import SoftTimeLimitExceeded
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import DBAPIError

from orchestrator.errors import DataError, TransientError
from orchestrator.policy.backoff import TASK_CAP, attempts_within, backoff
from orchestrator.policy.limits import ROTATE_BATCH, time_limits
from orchestrator.settings import Settings

TRANSIENT = (TransientError, ConnectionError, TimeoutError)
OUTAGE = (DBAPIError, BrokerError)
#: A full or failing disk passes (space is freed, the mount returns): retried, not failed.
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.ESTALE})

NOTIFY = "pipeline.notify"
#: Longest pause between two notification attempts: a receiver may be down for a while.
NOTIFY_CAP = 300.0


class Kind(StrEnum):
    DATA = "data"
    TIMEOUT = "timeout"
    OUTAGE = "outage"
    DISK = "disk"
    TRANSIENT = "transient"
    UNEXPECTED = "unexpected"


class Action(StrEnum):
    FAIL = "fail"            # record the failure now
    RETRY = "retry"          # record the requeue, run the task again after ``delay``
    REDELIVER = "redeliver"  # run the delivery again after ``delay``; nothing can be recorded
    GIVE_UP = "give_up"      # an outage outlasted its budget: let the error propagate


@dataclass(frozen=True)
class Decision:
    kind: Kind
    action: Action
    error: BaseException  # what to record: the error, or a clearer one (a time limit's)
    limit: int = 0        # retries this kind may have
    delay: float = 0.0    # seconds before the retry, when there is one


def is_disk_error(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in DISK_ERRNOS


def classify(error: BaseException) -> Kind:
    """The kind of ``error`` (the table above); the order matters: most specific first."""
    if isinstance(error, DataError):
        return Kind.DATA
    if isinstance(error, SoftTimeLimitExceeded):
        return Kind.TIMEOUT
    if isinstance(error, OUTAGE):
        return Kind.OUTAGE
    if is_disk_error(error):
        return Kind.DISK
    if isinstance(error, TRANSIENT) or getattr(error, "retryable", False) is True:
        return Kind.TRANSIENT
    return Kind.UNEXPECTED


def budget(kind: Kind, task: str, settings: Settings) -> int:
    """Retries ``task`` may have for errors of ``kind`` (0: none, it fails at once)."""
    if task == ROTATE_BATCH:  # idempotent: retried while the database is away, nothing else
        return settings.max_retries if kind is Kind.OUTAGE else 0
    if task == NOTIFY:
        return settings.notify_retries if kind is Kind.TRANSIENT else 0
    if kind is Kind.OUTAGE:
        return settings.outage_retries
    if kind is Kind.TRANSIENT:
        return settings.max_retries
    if kind is Kind.DISK:  # a full share frees up in minutes, not in max_retries quick retries
        return max(settings.max_retries, attempts_within(settings.disk_wait_seconds))
    return 0


def cap(task: str) -> float:
    """The longest pause between two retries of ``task``."""
    return NOTIFY_CAP if task == NOTIFY else TASK_CAP


def decide(error: BaseException, retries: int, task: str, settings: Settings) -> Decision:
    """What ``task`` does about ``error``, having been retried ``retries`` times already."""
    kind = classify(error)
    limit = budget(kind, task, settings)
    if kind is Kind.TIMEOUT:
        return Decision(kind, Action.FAIL, _timed_out(task, settings))
    if kind is Kind.OUTAGE:
        action = Action.REDELIVER if retries < limit else Action.GIVE_UP
    elif retries < limit:
        action = Action.RETRY
    else:
        action = Action.FAIL
    delay = backoff(retries, cap=cap(task)) if action in (Action.RETRY, Action.REDELIVER) else 0.0
    return Decision(kind, action, error, limit, delay)


def _timed_out(task: str, settings: Settings) -> TimeoutError:
    limits = time_limits(task, settings)
    return TimeoutError(f"took longer than {limits[0]} s" if limits else "took too long")
