"""The one backoff: how long to wait before trying again, for every retry in the project.

Exponential (``base · 2**attempt``), capped, with jitter: the pause is drawn at random in the
top of its range, ``(1 - jitter) · nominal`` to ``nominal``. Why jitter below the nominal pause
rather than around it: the cap stays a real ceiling (a pause never exceeds it), and retries that
have reached the cap still spread out instead of arriving together. ``jitter=1`` is Celery's
``retry_jitter`` (AWS "full jitter", anywhere from 0 to the nominal pause); the default 0.5 never
retries at once, which a database that just went away would not welcome.

Used by the step tasks (tasks/base.py), storage rotation (tasks/rotation.py), notifications
(tasks/monitoring.py) and the watcher's outages (watch/share.py); each passes its own cap.
"""

from __future__ import annotations

import random

#: Share of the nominal pause drawn at random (0: none; 1: Celery's full jitter).
JITTER = 0.5
#: The longest pause between two retries of a task (seconds).
TASK_CAP = 60.0
#: The exponent stops growing here: 2**64 seconds is already past any cap.
_MAX_EXPONENT = 64


def nominal(attempt: int, *, base: float = 1.0, cap: float = TASK_CAP) -> float:
    """The pause before jitter: ``base · 2**attempt``, at most ``cap``."""
    return min(cap, base * 2.0 ** min(max(attempt, 0), _MAX_EXPONENT))


def backoff(attempt: int, *, base: float = 1.0, cap: float = TASK_CAP, jitter: float = JITTER,
            rng: random.Random | None = None) -> float:
    """Seconds to wait after ``attempt`` failed tries (0 = the first retry).

    In ``((1 - jitter) · p, p]`` where ``p = nominal(attempt)``; ``rng`` makes it reproducible.
    """
    draw = (rng or random).random()  # [0, 1)
    return nominal(attempt, base=base, cap=cap) * (1.0 - jitter * draw)


def attempts_within(seconds: float, *, base: float = 1.0, cap: float = TASK_CAP,
                    jitter: float = JITTER) -> int:
    """How many backed-off retries it takes to wait ``seconds`` on average.

    A budget in retries, not clock time, so it is the same whatever the worker's speed; counted
    with the mean pause (``nominal · (1 - jitter / 2)``), so the retries last about ``seconds``.
    """
    if base <= 0 or cap <= 0 or jitter >= 2:
        raise ValueError("a backoff that never waits cannot fill a wait")
    count, waited = 0, 0.0
    while waited < seconds:
        waited += nominal(count, base=base, cap=cap) * (1.0 - jitter / 2)
        count += 1
    return count
