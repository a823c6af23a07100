"""Named points where a crash can be injected, to prove that a rerun completes the work.

Tests monkeypatch :func:`checkpoint`; a real process dies there (exit 70, no cleanup, like a
power cut) when ``PIPELINE_ROTATION_CRASH_AT`` names the point. Call it as
``faults.checkpoint(...)`` so that a monkeypatch reaches every caller.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

#: The archive is on disk under its temporary name, not yet read back.
ARCHIVE_WRITTEN = "archive_written"
#: The archive is written and verified; no job row has changed yet.
AFTER_ARCHIVE = "after_archive"
#: The rows say archived; the original folders are still there.
AFTER_ROWS = "after_rows"
POINTS = (ARCHIVE_WRITTEN, AFTER_ARCHIVE, AFTER_ROWS)

CRASH_EXIT = 70


def checkpoint(name: str, path: Path | None = None) -> None:
    """Nothing in production; a crash on purpose where the environment asks for one."""
    if os.environ.get("PIPELINE_ROTATION_CRASH_AT") == name:
        log.error("rotation: crashing on purpose at %s (PIPELINE_ROTATION_CRASH_AT)", name)
        os._exit(CRASH_EXIT)
