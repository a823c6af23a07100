"""How jobs and their history look on a terminal (rich) and to scripts (--json)."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Column, Table
from rich.text import Text

from orchestrator.store.jobs import Job, JobEvent

# Piped output (logs, CI) gets a wide fixed width instead of rich's 80 columns.
console = Console(width=None if sys.stdout.isatty() else 160)
STATE_STYLE = {"completed": "green", "failed": "red", "cancelled": "yellow",
               "processing": "cyan", "queued": "blue", "archived": "dim"}


def emit_json(payload: Any) -> None:
    click_echo(json.dumps(payload, indent=2, default=str))


def line(text: str) -> None:
    """One line of plain text, whole: no wrapping, no cut, no rich markup (a message may hold
    brackets from the input file)."""
    console.print(Text(text), soft_wrap=True)


def click_echo(text: str) -> None:
    import click

    click.echo(text)


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if value else ""


def _state(state: str) -> str:
    style = STATE_STYLE.get(state, "")
    return f"[{style}]{state}[/]" if style else state


def _wrapped(header: str) -> Column:
    """A column whose text wraps, and folds words longer than the column: never cut."""
    return Column(header, overflow="fold", ratio=1)


def jobs_table(jobs: Sequence[Job], batch_names: Mapping[str, str] | None = None) -> Table:
    """One row per job; with ``batch_names``, a batch column (the folder's name) if any job
    belongs to a batch."""
    named = bool(batch_names) and any(job.batch_id for job in jobs)
    table = Table("job", *(["batch"] if named else []), "input", "state", "step", "progress",
                  "created", _wrapped("result / error"))
    for job in jobs:
        batch = [Text((batch_names or {}).get(job.batch_id or "", ""))] if named else []
        table.add_row(job.id[:12], *batch, Text(job.input_name), _state(job.state.value),
                      job.step or "", f"{job.progress:.0f}%", _when(job.created_at),
                      Text(outcome(job)))
    return table


def outcome(job: Job) -> str:
    """A job's result in one line, or its whole error message (never cut: the end of a
    message is often the advice, e.g. "Submit with --force")."""
    if job.error:
        return str(job.error.get("message", ""))
    if job.result:
        r = job.result
        return (f"{r.get('holdings')} holdings, return {r.get('expected_return', 0):.1%}, "
                f"vol {r.get('volatility', 0):.1%}, Sharpe {r.get('sharpe', 0):.2f}"
                + "".join(f"; warning: {w}" for w in r.get("warnings") or []))
    return ""


def job_panel(job: Job, folder: str | None) -> Table:
    table = Table(Column(no_wrap=True), _wrapped(""), show_header=False, box=None)
    rows: list[tuple[str, str | Text]] = [
        ("job", job.id), ("input", Text(job.input_name)), ("state", _state(job.state.value)),
        ("step", job.step or ""), ("progress", f"{job.progress:.0f}%"),
        ("attempts", str(job.attempts)), ("batch", job.batch_id or ""),
        ("created", _when(job.created_at)), ("finished", _when(job.finished_at)),
        ("folder", Text(folder or "")), ("params", Text(json.dumps(job.params))),
        ("outcome", Text(outcome(job)))]
    if job.archive_path:  # where rotation put it (and, once restored, where it was)
        rows.append(("archive", f"{job.archive_path} (sha256 {job.archive_sha256})"))
    for key, value in rows:
        table.add_row(f"[bold]{key}[/]", value)
    return table


def history_table(events: Sequence[JobEvent]) -> Table:
    table = Table("time (UTC)", "from", "to", "step", "attempt", "worker", _wrapped("detail"))
    for e in events:
        moved = ("", "note") if e.is_note else (e.from_state or "", _state(e.to_state))
        table.add_row(_when(e.at), *moved, e.step or "",
                      str(e.attempt), e.worker or "", Text(e.detail or ""))
    return table
