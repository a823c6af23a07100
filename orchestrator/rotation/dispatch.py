"""The run's batches as a Celery group on the ``maintenance`` queue, with a concurrency cap.

The group holds ``PIPELINE_ROTATION_CONCURRENCY`` chains ("lanes"); batches are dealt to the
lanes in turn and each lane runs its batches one after the other, so no more batches run at
once than the cap, however many workers listen. Every batch carries the run's bytes-per-second
budget, which they book together on the run's record (orchestrator/rotation/throttle.py).
"""

from __future__ import annotations

from typing import Any

from celery import Celery, chain, group

from orchestrator.rotation import journal
from orchestrator.rotation.plan import BatchSpec
from orchestrator.settings import Settings

TASK = "pipeline.rotate_batch"


def lanes_for(settings: Settings, batches: int) -> int:
    return max(1, min(settings.rotation_concurrency, batches))


def task_id(run_id: str, seq: int) -> str:
    """Known ids: Flower and ``celery result`` show a batch's progress under this name."""
    return f"rotation.{journal.batch_id(run_id, seq)}"


def canvas(app: Celery, run_id: str, cutoffs: dict[str, str], specs: list[BatchSpec],
           settings: Settings) -> Any:
    lanes = lanes_for(settings, len(specs))
    rate = settings.rotation_bytes_per_second or None
    chains = []
    for lane in range(lanes):
        sigs = [app.signature(TASK, args=(run_id, cutoffs, spec.to_dict()), kwargs={"rate": rate},
                              immutable=True, task_id=task_id(run_id, spec.seq))
                for spec in specs[lane::lanes]]
        chains.append(chain(*sigs) if len(sigs) > 1 else sigs[0])
    return group(chains)


def dispatch_group(run_id: str, cutoffs: dict[str, str], specs: list[BatchSpec],
                   settings: Settings, app: Celery | None = None) -> None:
    if app is None:
        from orchestrator.celery import app as default_app

        app = default_app
    canvas(app, run_id, cutoffs, specs, settings).apply_async()
