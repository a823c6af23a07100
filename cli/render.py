"""How jobs and their history look on a terminal (rich) and to scripts (--json)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from orchestrator.store.jobs import Job, JobEvent

# Piped output (logs, CI) gets a wide fixed width instead of rich's 80 columns.
console = Console(width=None if sys.stdout.isatty() else 160)
STATE_STYLE = {"completed": "green", "failed": "red", "cancelled": "yellow",
               "processing": "cyan", "queued": "blue", "archived": "dim"}


def emit_json(payload: Any) -> None:
    click_echo(json.dumps(payload, indent=2, default=str))


def click_echo(text: str) -> None:
    import click

    click.echo(text)


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if value else ""


def _state(state: str) -> str:
    style = STATE_STYLE.get(state, "")
    return f"[{style}]{state}[/]" if style else state


def jobs_table(jobs: Sequence[Job]) -> Table:
    table = Table("job", "input", "state", "step", "progress", "created", "result / error")
    for job in jobs:
        table.add_row(job.id[:12], job.input_name, _state(job.state.value), job.step or "",
                      f"{job.progress:.0f}%", _when(job.created_at), outcome(job))
    return table


def outcome(job: Job) -> str:
    if job.error:
        return str(job.error.get("message", ""))[:80]
    if job.result:
        r = job.result
        return (f"{r.get('holdings')} holdings, return {r.get('expected_return', 0):.1%}, "
                f"vol {r.get('volatility', 0):.1%}, Sharpe {r.get('sharpe', 0):.2f}")
    return ""


def job_panel(job: Job, folder: str | None) -> Table:
    table = Table(show_header=False, box=None)
    rows = [("job", job.id), ("input", job.input_name), ("state", _state(job.state.value)),
            ("step", job.step or ""), ("progress", f"{job.progress:.0f}%"),
            ("attempts", str(job.attempts)), ("batch", job.batch_id or ""),
            ("created", _when(job.created_at)), ("finished", _when(job.finished_at)),
            ("folder", folder or ""), ("params", json.dumps(job.params)),
            ("outcome", outcome(job))]
    if job.archive_path:  # where rotation put it (and, once restored, where it was)
        rows.append(("archive", f"{job.archive_path} (sha256 {job.archive_sha256})"))
    for key, value in rows:
        table.add_row(f"[bold]{key}[/]", value)
    return table


def history_table(events: Sequence[JobEvent]) -> Table:
    table = Table("time (UTC)", "from", "to", "step", "attempt", "worker", "detail")
    for e in events:
        moved = ("", "note") if e.is_note else (e.from_state or "", _state(e.to_state))
        table.add_row(_when(e.at), *moved, e.step or "",
                      str(e.attempt), e.worker or "", (e.detail or "")[:100])
    return table
