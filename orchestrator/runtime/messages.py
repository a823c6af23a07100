"""The small JSON message that the steps pass along a job's chain (never the data).

Each step's task message also names, in its keyword arguments, the step it is for
(:data:`STEP_KWARG`). Celery's signing covers the body (args, kwargs, the rest of the chain)
but not the headers, where the task's name travels: without this, a signed validate message
relabelled ``pipeline.archive`` would run as archive. The worker refuses a message whose
signed step is not its task's (:func:`misaddressed`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

#: The keyword argument of a step's task message that names the step it is for.
STEP_KWARG = "step"

Outcome = Literal["ok", "failed", "cancelled"]


@dataclass(frozen=True)
class JobMessage:
    job_id: str
    batch_id: str | None = None
    outcome: Outcome = "ok"
    metrics: dict[str, Any] = field(default_factory=dict)

    def encode(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def decode(cls, payload: dict[str, Any] | JobMessage) -> JobMessage:
        if isinstance(payload, JobMessage):
            return payload
        return cls(**payload)

    def with_metrics(self, **metrics: Any) -> JobMessage:
        return replace(self, metrics={**self.metrics, **metrics})

    def ended(self, outcome: Outcome) -> JobMessage:
        return replace(self, outcome=outcome)


def addressed_to(step: str) -> dict[str, str]:
    """The keyword arguments that bind a step's task message to that step."""
    return {STEP_KWARG: step}


def misaddressed(task_step: str, signed_step: object) -> str | None:
    """Why a message received by ``task_step``'s task must not run (None: it may).

    ``signed_step`` is what the message's body says it is for; a message that names no step
    is refused too, since only its header would then say which task it is for.
    """
    if signed_step == task_step:
        return None
    if signed_step is None:
        return f"the message names no step, and its header says {task_step}"
    return f"the message is for step {signed_step!r}, but was delivered to {task_step}"
