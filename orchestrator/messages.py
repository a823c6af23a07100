"""The small JSON message that the steps pass along a job's chain (never the data)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

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
