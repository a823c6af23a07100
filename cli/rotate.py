"""``pipeline rotate``, ``restore`` and ``rotations``: storage rotation by hand."""

from __future__ import annotations

import logging
import re
import sys
import time
from datetime import timedelta
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cli import render
from cli.auth import actor, requires
from cli.exit_codes import Exit, epilog
from orchestrator.access.auth import Role
from orchestrator.settings import Settings

log = logging.getLogger(__name__)
POLL = 0.25
HINT_AFTER = 30.0  # seconds without a batch counted before saying workers may be missing
#: A failed run exits with the code of its most serious kind of failure.
EXIT_BY_KIND = (("storage_full", Exit.STORAGE_FULL), ("permission", Exit.PERMISSION),
                ("corrupt", Exit.CORRUPT_ARCHIVE), ("database", Exit.UNAVAILABLE))
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def older_than_option(text: str | None) -> timedelta | None:
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if not match:
        raise click.BadParameter(f"{text!r}: use e.g. 30d, 12h, 90m (a bare number is days)",
                                 param_hint="--older-than")
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks",
            "": "days"}[match[2]]
    return timedelta(**{unit: float(match[1])})


def _settings() -> Settings:
    from cli.common import orchestrator

    return orchestrator().settings  # type: ignore[no-any-return]


def _log_to_stderr(settings: Settings) -> None:
    """The run's log lines (settings, plan, problems) on stderr; the bars and summary apart."""
    logger = logging.getLogger("orchestrator")
    logger.setLevel(settings.log_level)
    if not any(isinstance(h, _Stderr) for h in logger.handlers):
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Whatever sys.stderr is now (a test runner swaps it between invocations)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


@click.command(epilog=epilog())
@click.option("--dry-run", is_flag=True, help="List what would move and its bytes; change nothing.")
@click.option("--older-than", help="Jobs finished longer ago than this (30d, 12h), every state. "
                                   "Default: PIPELINE_RETENTION_DAYS (per state).")
@click.option("--limit", type=click.IntRange(1), help="At most this many jobs.")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Follow the run with progress bars until it ends.")
@json_option
@requires(Role.OPERATOR)
def rotate(dry_run: bool, older_than: str | None, limit: int | None, wait: bool,
           as_json: bool) -> None:
    """Move finished jobs past their retention into archive/, in verified batches.

    The batches run on the workers of the maintenance queue; this command plans the run,
    shows its progress (jobs and bytes) and a summary. Example: pipeline rotate --dry-run
    """
    older = older_than_option(older_than)
    settings = _settings()
    _log_to_stderr(settings)
    if dry_run:
        _dry_run(settings, older, limit, as_json)
        return
    from orchestrator.access import audit
    from orchestrator.rotation.runner import start_run

    run = start_run(settings, trigger="cli", actor=actor(), older_than=older, limit=limit)
    audit.record("rotate", "ok", actor=actor(), detail=f"run {run.id}: {run.planned_jobs} "
                 f"jobs, {run.planned_bytes} bytes, {run.planned_batches} batches")
    if not wait:
        if as_json:
            render.emit_json(run.to_dict())
        else:
            click.echo(f"rotation run {run.id}: {run.planned_jobs:,} jobs in "
                       f"{run.planned_batches} batches dispatched; follow it with "
                       f"`pipeline rotations {run.id}`")
        return
    final = _follow(run, quiet=as_json)
    if as_json:
        render.emit_json(final.to_dict())
    else:
        render.console.print(summary_table(final))
    raise SystemExit(exit_code(final))


def _dry_run(settings: Settings, older: timedelta | None, limit: int | None,
             as_json: bool) -> None:
    from orchestrator.rotation.plan import plan_batches
    from orchestrator.rotation.runner import preview

    listed: list[dict[str, Any]] = []
    totals = {"jobs": 0, "bytes": 0}

    def shown(found: Any) -> Any:
        for c in found:
            totals["jobs"] += 1
            totals["bytes"] += c.bytes
            row = {"id": c.id, "state": c.state, "finished_at": c.finished_at.isoformat(),
                   "bytes": c.bytes, "archive_folder": "archive/" + c.day.replace("-", "/")}
            if as_json:
                listed.append(row)
            else:
                click.echo(f"{c.id}  {c.state:<9}  {c.finished_at:%Y-%m-%d %H:%M}  "
                           f"{c.bytes:>12,}  {row['archive_folder']}/")
            yield c

    batches = sum(1 for _ in plan_batches(shown(preview(settings, older, limit)),
                                          settings.rotation_batch_size))
    if as_json:
        render.emit_json({"dry_run": True, "jobs": listed, "total_jobs": totals["jobs"],
                          "total_bytes": totals["bytes"], "batches": batches})
        return
    click.echo(f"dry run: would archive {totals['jobs']:,} jobs, {totals['bytes']:,} bytes "
               f"({_mb(totals['bytes'])}), in {batches} batches; nothing was changed")


def _mb(size: float) -> str:
    return f"{size / 1e6:,.1f} MB"


def _follow(run: Any, quiet: bool) -> Any:
    """Progress bars (stderr) from the run's counters until the run ends."""
    from orchestrator.rotation import journal

    columns = (TextColumn("{task.description:>5}"), BarColumn(),
               TextColumn("{task.fields[amount]}"), TimeElapsedColumn())
    started = time.monotonic()
    hinted = False
    with Progress(*columns, console=Console(stderr=True), disable=quiet) as bars:
        jobs = bars.add_task("jobs", total=max(run.planned_jobs, 1), amount="")
        size = bars.add_task("bytes", total=max(run.planned_bytes, 1), amount="")
        while True:
            current = journal.get_run(run.id)
            elapsed = max(time.monotonic() - started, 1e-6)
            bars.update(jobs, completed=current.jobs_done,
                        amount=f"{current.jobs_done:,}/{current.planned_jobs:,} jobs")
            bars.update(size, completed=current.bytes_done,
                        amount=f"{_mb(current.bytes_done)}/{_mb(current.planned_bytes)} "
                               f"({_mb(current.bytes_done / elapsed)}/s)")
            if current.finished:
                return current
            if not hinted and elapsed > HINT_AFTER and current.batches_done == 0:
                hinted = True
                bars.console.print("no batch has finished yet: is a worker consuming the "
                                   "maintenance queue (pipeline up, or celery -A orchestrator "
                                   "worker -Q maintenance)? Ctrl-C stops waiting; the run "
                                   "goes on.")
            time.sleep(POLL)


def exit_code(run: Any) -> Exit:
    if run.status == "completed":
        return Exit.OK
    kinds = run.kinds()
    for kind, code in EXIT_BY_KIND:
        if kinds.get(kind):
            return code
    return Exit.ERROR


def summary_table(run: Any) -> Table:
    seconds = ((run.finished_at or run.updated_at) - run.started_at).total_seconds()
    rate = max(seconds, 1e-6)
    table = Table(show_header=False, box=None)
    rows = [("rotation run", f"{run.id}: {run.status}"),
            ("jobs archived", f"{run.jobs_done:,} of {run.planned_jobs:,}"),
            ("bytes", f"{run.bytes_done:,} ({_mb(run.bytes_done)}) of {_mb(run.planned_bytes)}"),
            ("batches", f"{run.batches_done} done, {run.batches_failed} failed, "
                        f"of {run.planned_batches}"),
            ("time", f"{seconds:.1f} s ({run.jobs_done / rate:,.0f} jobs/s, "
                     f"{_mb(run.bytes_done / rate)}/s)")]
    for message in (run.error or {}).get("messages", []):
        rows.append(("problem", message))
    for key, value in rows:
        table.add_row(f"[bold]{key}[/]", value)
    return table


@click.command(epilog=epilog())
@click.argument("job")
@json_option
@requires(Role.OPERATOR)
def restore(job: str, as_json: bool) -> None:
    """Bring an archived job's folder back into completed/, verified by sha256.

    Example: pipeline restore 3f2a
    """
    from orchestrator.access import audit
    from orchestrator.errors import PipelineError
    from orchestrator.paths import Share
    from orchestrator.rotation.restore import restore as restore_job
    from orchestrator.store import jobs as store

    share = Share(_settings().share_dir)
    found = store.find_job(job)
    try:
        done = restore_job(share, found.id)
    except PipelineError as error:
        audit.record("restore", "failed", actor=actor(), detail=f"job {found.id}: {error}")
        raise
    audit.record("restore", "ok", actor=actor(),
                 detail=f"job {done.job_id} from {done.archive}: {done.files} files")
    if as_json:
        render.emit_json({"job": done.job_id, "folder": str(done.folder), "archive": done.archive,
                          "files": done.files, "bytes": done.bytes,
                          "state_before_archiving": done.previous_state})
        return
    click.echo(f"job {done.job_id} restored to {done.folder}: {done.files} files, "
               f"{done.bytes:,} bytes, each verified by sha256 against {done.archive}")


@click.command(epilog=epilog())
@click.argument("run_id", required=False)
@click.option("--limit", default=10, show_default=True, type=click.IntRange(1, 10_000))
@json_option
@requires(Role.VIEWER)
def rotations(run_id: str | None, limit: int, as_json: bool) -> None:
    """Recent rotation runs, or one run with its batches and their live task state.

    Example: pipeline rotations 20250101T030000-1a2b3c
    """
    from orchestrator.rotation import journal

    _settings()
    if run_id is None:
        runs = journal.list_runs(limit)
        if as_json:
            render.emit_json([r.to_dict() for r in runs])
        else:
            render.console.print(_runs_table(runs))
        return
    run = journal.get_run(run_id)
    batches = _batches(run.id)
    if as_json:
        render.emit_json({**run.to_dict(), "batches": batches})
        return
    render.console.print(summary_table(run))
    table = Table("batch", "journal", "task state", "phase", "jobs", "archive")
    for b in batches:
        meta = b["task_meta"] or {}
        table.add_row(str(b["seq"]), b["status"], b["task_state"] or "", meta.get("phase", ""),
                      f"{meta.get('jobs_done', b['jobs'])}/{meta.get('jobs_total', b['jobs'])}",
                      b["archive_path"])
    render.console.print(table)


def _runs_table(runs: list[Any]) -> Table:
    table = Table("run", "trigger", "by", "status", "jobs", "bytes", "batches", "started (UTC)")
    for r in runs:
        table.add_row(r.id, r.trigger, r.actor or "", r.status,
                      f"{r.jobs_done:,}/{r.planned_jobs:,}", _mb(r.bytes_done),
                      f"{r.batches_done}+{r.batches_failed} failed/{r.planned_batches}",
                      r.started_at.strftime("%Y-%m-%d %H:%M:%S"))
    return table


def _batches(run_id: str) -> list[dict[str, Any]]:
    """The run's journal rows, each with its Celery task state and meta (PROGRESS while it
    runs)."""
    from sqlalchemy import select

    from orchestrator.celery import app
    from orchestrator.rotation.dispatch import task_id
    from orchestrator.store.db import transaction
    from orchestrator.store.tables import rotation_batches

    with transaction() as conn:
        rows = conn.execute(select(rotation_batches).where(rotation_batches.c.run_id == run_id)
                            .order_by(rotation_batches.c.seq)).all()
    out = []
    for row in rows:
        result = app.AsyncResult(task_id(run_id, row.seq))
        meta = result.info if isinstance(result.info, dict) else None
        out.append({"seq": row.seq, "status": row.status, "archive_path": row.archive_path,
                    "archive_sha256": row.archive_sha256, "jobs": row.jobs, "bytes": row.bytes,
                    "error": row.error, "task_state": result.state, "task_meta": meta})
    return out
