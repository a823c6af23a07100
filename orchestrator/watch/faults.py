"""The intake's fault points, now in the one registry (:mod:`orchestrator.faults`).

Kept only as the name orchestrator/intake.py calls (``faults.point("after_claim")``) while
another change edits intake.py; it should call ``faults.reach(faults.INTAKE_AFTER_CLAIM)``
itself, and this module go. Armed like every point: ``PIPELINE_FAULTS=exit:intake.after_claim``.
"""

from __future__ import annotations

from orchestrator import faults


def point(name: str) -> None:
    faults.reach(f"intake.{name}")
