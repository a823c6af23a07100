"""Fault points of the intake, for tests only: crash the process at a named point.

``PIPELINE_WATCH_FAULT=<point>`` makes the process exit at once with status 137 (as after
SIGKILL: no cleanup, no ``finally``) when it reaches ``<point>``:

- ``after_claim``: the input is renamed into processing/<job_id>/, no job row yet;
- ``after_record``: the job row is recorded as pending, its chain not yet published;
- ``after_publish``: the chain is published, the job not yet marked queued.

Never set it in production: it lets the crash-repair tests stop a real watcher between two
steps that are otherwise microseconds apart. Deliberately not a setting.
"""

from __future__ import annotations

import os

POINTS = frozenset({"after_claim", "after_record", "after_publish"})
VARIABLE = "PIPELINE_WATCH_FAULT"


def point(name: str) -> None:
    if os.environ.get(VARIABLE) == name:
        os._exit(137)
