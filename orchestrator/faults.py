"""Fault points for the fault-injection tests. Test-only: inert unless PIPELINE_FAULTS is set.

Never set it in production: it exists so the fault-injection suite can make a step slow or
stuck at a known point. Deliberately not a setting. (The watcher's crash points live in
``orchestrator/watch/faults.py``, rotation's in ``orchestrator/rotation/faults.py``.)

``PIPELINE_FAULTS`` is a comma-separated list of ``action:point[:seconds][@prefix]``; with
``@prefix`` the fault applies only to jobs whose input name starts with it:

- ``sleep:optimize:3``    the optimize step sleeps 3 s first (time to kill its worker);
- ``hang:archive@slow``   the archive step of ``slow*`` inputs blocks past its soft limit, as a
                          blocking C call would, until the hard limit kills it;
- ``exit:validate``       the worker process exits at once with 137 there, as if SIGKILLed.
"""

from __future__ import annotations

import os
import time


def _active() -> list[tuple[list[str], str]]:
    spec = os.environ.get("PIPELINE_FAULTS", "")
    out = []
    for item in filter(None, (i.strip() for i in spec.split(","))):
        body, _, prefix = item.partition("@")
        out.append((body.split(":"), prefix))
    return out


def fault_point(name: str, subject: str = "") -> None:
    for (action, point_name, *rest), prefix in _active():
        if point_name != name or not subject.startswith(prefix):
            continue
        if action == "sleep":
            time.sleep(float(rest[0]) if rest else 1.0)
        elif action == "hang":
            _hang()
        elif action == "exit":
            os._exit(137)


def _hang() -> None:
    from celery.exceptions import SoftTimeLimitExceeded

    deadline = time.monotonic() + 3600
    while time.monotonic() < deadline:
        try:
            time.sleep(0.5)
        except SoftTimeLimitExceeded:
            continue  # a blocking C call cannot be interrupted: only the hard limit ends it
