"""A batch: several jobs submitted together, summarized when all of them have ended.

A batch keeps the name of the folder it came from (the ``batches`` table, summary.json), since
that, not its id, is what the people who dropped it know it by.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select

from orchestrator.paths import Share, write_json
from orchestrator.settings import get_settings
from orchestrator.store import jobs as store
from orchestrator.store.db import statement
from orchestrator.store.tables import batches


def batch_names(batch_ids: Iterable[str | None]) -> dict[str, str]:
    """Each batch's name (its folder's, or the id for files submitted together)."""
    wanted = sorted({b for b in batch_ids if b})
    if not wanted:
        return {}
    with statement() as conn:
        rows = conn.execute(select(batches.c.id, batches.c.name)
                            .where(batches.c.id.in_(wanted))).all()
    return {row.id: row.name for row in rows}


def summarize_batch(batch_id: str) -> dict[str, Any]:
    """Write ``completed/batches/<batch_id>/summary.json`` and record it on the batch."""
    members = store.list_jobs(batch_id=batch_id, limit=1_000_000)
    summary = {
        "batch_id": batch_id,
        "name": batch_names([batch_id]).get(batch_id, batch_id),
        "jobs": len(members),
        "by_state": store.count_by_state([j.id for j in members]),
        "members": [{"job_id": j.id, "input": j.input_name, "state": j.state.value,
                     "error": (j.error or {}).get("message"), "result": j.result}
                    for j in sorted(members, key=lambda j: j.input_name)],
    }
    folder = Share(get_settings().share_dir).completed / "batches" / batch_id
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "summary.json", summary)
    store.finish_batch(batch_id, {k: summary[k] for k in ("jobs", "by_state")})
    return summary
