"""The task policy: one place deciding what an error means, how long to wait, how long a task
may run (issue 15, item 2).

Before, four backoff functions (steps, notifications, rotation without jitter, the watcher),
three error classifications and time limits set two ways lived in the tasks themselves. Now:

- :mod:`~orchestrator.policy.decide` classifies an error (data, timeout, outage, disk,
  transient, unexpected) and decides, for a task by name and its retries so far, what happens
  next: fail now, retry after a pause (recording why), or retry the delivery. The table of
  kinds and budgets is in its docstring.
- :mod:`~orchestrator.policy.backoff` is the one backoff: exponential, capped, with jitter.
- :mod:`~orchestrator.policy.limits` gives each task's time limits by name, and Celery's
  ``task_annotations`` built from them (celeryconfig.py).

Fault injection for the tests is one registry too, beside it: :mod:`orchestrator.faults`.
"""

from orchestrator.policy.backoff import attempts_within, backoff
from orchestrator.policy.decide import (
    OUTAGE,
    Action,
    Decision,
    Kind,
    classify,
    decide,
    is_disk_error,
)
from orchestrator.policy.limits import task_annotations, time_limits

__all__ = ["OUTAGE", "Action", "Decision", "Kind", "attempts_within", "backoff", "classify",
           "decide", "is_disk_error", "task_annotations", "time_limits"]
