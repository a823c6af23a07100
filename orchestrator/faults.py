"""Fault points for the fault-injection tests: one registry, one way to arm them. Test-only.

Inert unless ``PIPELINE_FAULTS`` is set. Never set it in production: it exists so the tests can
make a step slow or stuck, or kill a process between two steps that are otherwise microseconds
apart, at a known point. Deliberately not a setting.

``PIPELINE_FAULTS`` is a comma-separated list of ``action:point[:seconds][@prefix]``; with
``@prefix`` the fault applies only when the point's subject (a step's input name, a rotation
archive's path) starts with it. An unknown point or action is refused (ValueError) rather than
silently never firing. Points are named ``<area>.<moment>``:

==========================  =========================================================  =======
point                       reached                                                    subject
==========================  =========================================================  =======
``step.validate``           a step task, before the step's work (also ``optimize``,    input
``step.optimize`` …         ``archive``)                                               name
``intake.after_claim``      the inputs are renamed into processing/<id>/, no job row   -
``intake.after_record``     the job rows are recorded, their chains not yet published  -
``intake.after_publish``    the chains are published, the claims not yet finished      -
``rotation.archive_written``  an archive is on disk under its temporary name, unread   archive
``rotation.after_archive``  the archive is written and verified, no job row changed    archive
``rotation.after_rows``     the rows say archived, the original folders still there    archive
==========================  =========================================================  =======

======================  ==================================================================
action                  effect
======================  ==================================================================
``sleep[:seconds]``     sleeps (default 1 s): time for a test to kill a worker mid-step
``hang``                blocks, ignoring the soft time limit as a blocking C call would,
                        until the hard limit kills the process
``exit``                the process exits at once with status 137 (:data:`CRASH_EXIT`, as
                        after SIGKILL): no cleanup, no ``finally``, like a power cut
======================  ==================================================================

E.g. ``sleep:step.optimize:3``, ``hang:step.archive@slow``, ``exit:intake.after_claim``,
``exit:rotation.after_rows``. Call it as ``faults.reach(...)`` (through the module), so that a
test's monkeypatch of :func:`reach` reaches every caller.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from orchestrator.settings import get_settings

log = logging.getLogger(__name__)

VARIABLE = "PIPELINE_FAULTS"
#: The exit status of an ``exit`` fault: what a shell reports for a SIGKILLed process.
CRASH_EXIT = 137

INTAKE_AFTER_CLAIM = "intake.after_claim"
INTAKE_AFTER_RECORD = "intake.after_record"
INTAKE_AFTER_PUBLISH = "intake.after_publish"
ROTATION_ARCHIVE_WRITTEN = "rotation.archive_written"
ROTATION_AFTER_ARCHIVE = "rotation.after_archive"
ROTATION_AFTER_ROWS = "rotation.after_rows"

#: Every point but the steps', which are those of the configured pipeline (step_point).
POINTS = frozenset({
    INTAKE_AFTER_CLAIM, INTAKE_AFTER_RECORD, INTAKE_AFTER_PUBLISH,
    ROTATION_ARCHIVE_WRITTEN, ROTATION_AFTER_ARCHIVE, ROTATION_AFTER_ROWS,
})
ACTIONS = frozenset({"sleep", "hang", "exit"})


def step_point(step: str) -> str:
    return f"step.{step}"


@dataclass(frozen=True)
class Fault:
    action: str
    point: str
    seconds: float = 1.0
    prefix: str = ""


def parse(spec: str) -> list[Fault]:
    """The faults a ``PIPELINE_FAULTS`` value arms; ValueError for an unknown point or action."""
    faults = []
    for item in filter(None, (i.strip() for i in spec.split(","))):
        body, _, prefix = item.partition("@")
        action, _, rest = body.partition(":")
        point, _, seconds = rest.partition(":")
        if action not in ACTIONS:
            raise ValueError(f"{VARIABLE}: unknown action {action!r} in {item!r} "
                             f"(one of {', '.join(sorted(ACTIONS))})")
        _known(point)
        faults.append(Fault(action, point, float(seconds) if seconds else 1.0, prefix))
    return faults


def _known(point: str) -> None:
    steps = get_settings().steps.names
    if point not in POINTS and point not in map(step_point, steps):
        known = sorted([*POINTS, *map(step_point, steps)])
        raise ValueError(f"unknown fault point {point!r} (one of {', '.join(known)})")


def reach(point: str, subject: str | Path = "") -> None:
    """Nothing in production; the armed fault where the environment asks for one."""
    _known(point)
    spec = os.environ.get(VARIABLE)
    if not spec:
        return
    for fault in parse(spec):
        if fault.point == point and str(subject).startswith(fault.prefix):
            _act(fault)


def _act(fault: Fault) -> None:
    if fault.action == "sleep":
        time.sleep(fault.seconds)
    elif fault.action == "hang":
        _hang()
    elif fault.action == "exit":
        log.error("crashing on purpose at %s (%s)", fault.point, VARIABLE)
        os._exit(CRASH_EXIT)


def _hang() -> None:
    from celery.exceptions import SoftTimeLimitExceeded

    deadline = time.monotonic() + 3600
    while time.monotonic() < deadline:
        try:
            time.sleep(0.5)
        except SoftTimeLimitExceeded:
            continue  # a blocking C call cannot be interrupted: only the hard limit ends it
