"""Job states and the transitions allowed between them."""

from __future__ import annotations

from enum import StrEnum

from orchestrator.settings import STEPS

__all__ = ["ACTIVE", "FINAL", "LEGAL", "STEPS", "JobState", "is_legal", "sources_of"]


class JobState(StrEnum):
    PENDING = "pending"
    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    ARCHIVED = "archived"


S = JobState

#: from-state -> states it may move to. processing -> processing is a step change.
LEGAL: dict[JobState | None, frozenset[JobState]] = {
    None: frozenset({S.PENDING}),
    S.PENDING: frozenset({S.QUEUED, S.FAILED, S.CANCELLED}),
    S.QUEUED: frozenset({S.QUEUED, S.PROCESSING, S.FAILED, S.CANCELLED}),
    S.PROCESSING: frozenset({S.PROCESSING, S.QUEUED, S.COMPLETED, S.FAILED, S.CANCELLED}),
    S.COMPLETED: frozenset({S.ARCHIVED}),
    S.FAILED: frozenset({S.QUEUED, S.ARCHIVED}),
    S.CANCELLED: frozenset({S.QUEUED, S.ARCHIVED}),
    S.ARCHIVED: frozenset({S.COMPLETED}),
}

FINAL = frozenset({S.COMPLETED, S.FAILED, S.CANCELLED, S.ARCHIVED})
ACTIVE = frozenset({S.PENDING, S.QUEUED, S.PROCESSING})




def is_legal(source: JobState | None, target: JobState) -> bool:
    return target in LEGAL[source]


def sources_of(target: JobState) -> frozenset[JobState]:
    """Every state from which ``target`` may be reached."""
    return frozenset(s for s, targets in LEGAL.items() if s is not None and target in targets)
