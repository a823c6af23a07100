"""A rotation run: settings logged, interrupted work finished, jobs planned into batches, the
batches dispatched (a Celery group, by default), counters followed in ``rotation_runs``.

Used by the beat task ``pipeline.rotate`` and by ``pipeline rotate``; a dry run only plans.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

from orchestrator.paths import Share
from orchestrator.rotation import journal, plan, prune
from orchestrator.rotation.resume import finish_interrupted
from orchestrator.settings import Settings
from orchestrator.store.jobs import now

log = logging.getLogger(__name__)
Dispatch = Callable[[str, dict[str, str], list[plan.BatchSpec], Settings], None]


def log_settings(settings: Settings, what: str) -> dict[str, Any]:
    """Every run starts with the settings it runs with, passwords masked (also kept in the
    run's record)."""
    shown = settings.public_dict()
    log.info("%s with settings %s", what, json.dumps(shown, sort_keys=True, default=str))
    return shown


def preview(settings: Settings, older_than: timedelta | None = None, limit: int | None = None,
            ) -> Iterator[plan.Candidate]:
    """What a run would rotate now, oldest first (a dry run: reads only)."""
    log_settings(settings, "rotation dry run")
    cutoffs = plan.cutoffs_for(settings, now(), older_than)
    return plan.candidates(Share(settings.share_dir), cutoffs, limit)


def start_run(settings: Settings, *, trigger: str, actor: str | None = None,
              older_than: timedelta | None = None, limit: int | None = None,
              window_key: str | None = None, dispatch: Dispatch | None = None) -> journal.Run:
    """Plan and dispatch a run; returns its record (the batches run on the workers).

    Raises journal.WindowTaken when another beat already runs this schedule window.
    """
    at = now()
    run_id = journal.new_run_id(at)
    shown = log_settings(settings, f"rotation run {run_id} ({trigger})")
    cutoffs = plan.cutoffs_for(settings, at, older_than)
    journal.create_run(run_id, trigger=trigger, actor=actor, limit=limit, settings=shown,
                       cutoffs=plan.encode_cutoffs(cutoffs), window_key=window_key)
    try:
        specs = _prepare(settings, run_id, cutoffs, limit)
        if specs:
            (dispatch or _celery_dispatch)(run_id, plan.encode_cutoffs(cutoffs), specs, settings)
    except Exception as error:  # recorded on the run (else it would look alive), re-raised
        journal.abort_run(run_id, f"{type(error).__name__}: {error}")
        raise
    log.info("rotation run %s: %d jobs, %d bytes in %d batches", run_id,
             sum(s.jobs for s in specs), sum(s.bytes for s in specs), len(specs))
    return journal.get_run(run_id)


def _prepare(settings: Settings, run_id: str, cutoffs: dict[str, Any], limit: int | None,
             ) -> list[plan.BatchSpec]:
    """Finish interrupted work, prune if asked, plan the batches and record the totals."""
    share = Share(settings.share_dir)
    finish_interrupted(settings, share)
    if settings.history_retention_days:
        pruned = prune.prune_history(settings.history_retention_days)
        log.info("rotation run %s: pruned %d history events of archived jobs", run_id, pruned)
    specs = list(plan.plan_batches(plan.candidates(share, cutoffs, limit),
                                   settings.rotation_batch_size))
    journal.planned(run_id, sum(s.jobs for s in specs), sum(s.bytes for s in specs), len(specs))
    return specs


def _celery_dispatch(run_id: str, cutoffs: dict[str, str], specs: list[plan.BatchSpec],
                     settings: Settings) -> None:
    from orchestrator.rotation.dispatch import dispatch_group

    dispatch_group(run_id, cutoffs, specs, settings)


def run_here(run_id: str, cutoffs: dict[str, str], specs: list[plan.BatchSpec],
             settings: Settings) -> None:
    """Run the batches in this process, one after the other (tests, and a worker-less check)."""
    from orchestrator.rotation.batch import run_batch

    for spec in specs:
        run_batch(run_id, plan.decode_cutoffs(cutoffs), spec, settings,
                  rate=settings.rotation_bytes_per_second or None)
