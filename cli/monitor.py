"""Watching the pipeline from a terminal: ``pipeline flower``, ``stats``, ``exporter``,
``health``, and the live progress of ``pipeline status --follow``."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import click
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from cli import render
from cli.auth import requires
from cli.exit_codes import Exit, epilog
from orchestrator.access.auth import Role
from orchestrator.errors import JobNotFound
from orchestrator.store import jobs as store
from orchestrator.store.states import FINAL, JobState

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def _window(text: str) -> timedelta:
    from orchestrator.settings import parse_duration

    seconds = parse_duration(text)
    if not isinstance(seconds, float) or seconds <= 0:
        raise click.BadParameter(f"{text!r}: use e.g. 30m, 1h, 7d", param_hint="--since")
    return timedelta(seconds=seconds)


# -- live progress -------------------------------------------------------------------------

def follow(job_ids: Sequence[str], interval: float = 0.25, quiet: bool = False,
           ) -> list[store.Job]:
    """Progress bars until every job has ended: one per job, and a total for several."""
    columns = (TextColumn("{task.description}"), BarColumn(),
               TextColumn("{task.percentage:>5.1f}%"), TextColumn("{task.fields[state]}"),
               TimeElapsedColumn())
    with Progress(*columns, console=render.console, disable=quiet) as bars:
        rows = {j: bars.add_task(_label(j), total=100, state="") for j in job_ids}
        total = (bars.add_task(f"[bold]total ({len(job_ids)} jobs)", total=100 * len(job_ids),
                               state="") if len(job_ids) > 1 else None)
        while True:
            current = [store.get_job(j) for j in job_ids]
            _show(bars, rows, total, current)
            if all(job.state in FINAL for job in current):
                return current
            time.sleep(interval)


def _label(job_id: str) -> str:
    job = store.get_job(job_id)
    return f"{job.id[:12]} {job.input_name[:28]}"


def _show(bars: Progress, rows: dict[str, TaskID], total: TaskID | None,
          current: list[store.Job]) -> None:
    for job in current:
        done = 100.0 if job.state in FINAL else job.progress
        bars.update(rows[job.id], completed=done, state=_state_text(job))
    if total is not None:
        ended = sum(job.state in FINAL for job in current)
        failed = sum(job.state in (JobState.FAILED, JobState.CANCELLED) for job in current)
        bars.update(total, completed=sum(100.0 if j.state in FINAL else j.progress
                                         for j in current),
                    state=f"{ended}/{len(current)} ended, {failed} failed or cancelled")


def _state_text(job: store.Job) -> str:
    style = render.STATE_STYLE.get(job.state.value, "")
    text = f"{job.state.value} {job.step or ''}".strip()
    return f"[{style}]{text}[/]" if style else text


def outcome_code(jobs: Sequence[store.Job]) -> Exit:
    return Exit.OK if all(j.state is JobState.COMPLETED for j in jobs) else Exit.JOB_FAILED


def batch_table(batch_id: str, members: Sequence[store.Job]) -> Table:
    table = render.jobs_table(members)
    ended = sum(j.state in FINAL for j in members)
    overall = sum(100.0 if j.state in FINAL else j.progress for j in members) / max(
        len(members), 1)
    from orchestrator.jobs.batches import batch_names

    name = batch_names([batch_id]).get(batch_id, batch_id)
    named = f" ({name})" if name != batch_id else ""  # files submitted together: no name
    table.title = (f"batch {batch_id}{named}: {len(members)} jobs, {ended} ended, "
                   f"{overall:.0f}% done")
    return table


def _batch(prefix: str) -> str:
    try:
        return store.find_batch(prefix)
    except JobNotFound as missing:
        if "several" in str(missing):
            raise
        raise JobNotFound(f"no job {prefix} (nor a batch)") from None


def show_status(prefix: str, follow_it: bool, interval: float, as_json: bool) -> None:
    """``pipeline status`` for a job or a batch; with ``follow_it``, live until the end and
    exit with the outcome (0 completed, 7 failed or cancelled)."""
    try:
        found: store.Job | None = store.find_job(prefix)
        batch_id = found.batch_id if found else None
        ids = [found.id]
    except JobNotFound:
        found, batch_id = None, _batch(prefix)
        ids = [j.id for j in store.list_jobs(batch_id=batch_id, limit=1_000_000)][::-1]
    if follow_it:
        ended = follow(ids, interval, quiet=as_json)
        if as_json:
            render.emit_json([j.to_dict() for j in ended])
        else:
            for job in ended:
                render.line(f"{job.id} {job.state.value}: {render.outcome(job)}")
        raise SystemExit(outcome_code(ended))
    if found is None:
        members = [store.get_job(j) for j in ids]
        if as_json:
            render.emit_json({"batch_id": batch_id, "jobs": [j.to_dict() for j in members]})
        else:
            render.console.print(batch_table(str(batch_id), members))
        return
    from orchestrator.paths import Share
    from orchestrator.settings import get_settings

    folder = Share(get_settings().share_dir).locate(found.id)
    if as_json:
        render.emit_json({**found.to_dict(), "folder": str(folder) if folder else None})
    else:
        render.console.print(render.job_panel(found, str(folder) if folder else None))


# -- pipeline stats ------------------------------------------------------------------------

@click.command(epilog=epilog())
@click.option("--since", "since", default="1h", show_default=True,
              help="The window: jobs that finished within it (30m, 1h, 7d).")
@json_option
@requires(Role.VIEWER)
def stats(since: str, as_json: bool) -> None:
    """Queue depths, jobs by state, throughput, failure rate, p50/p95 durations, workers.

    From the status database and the broker, so it works without Flower.
    Example: pipeline stats --since 30m
    """
    from cli.common import orchestrator
    from orchestrator.monitoring.stats import collect

    orch = orchestrator()
    figures = collect(_window(since), orch.app)
    if as_json:
        render.emit_json(figures)
        return
    render.console.print(stats_tables(figures, since))
    for part, reason in figures["errors"].items():
        click.echo(f"warning: {part} not read: {reason}", err=True)


def stats_tables(figures: dict[str, Any], since: str) -> Table:
    outer = Table.grid(padding=(0, 4))
    states = Table("state", "jobs", title="jobs by state")
    for state, count in figures["jobs_by_state"].items():
        states.add_row(render._state(state), str(count))
    queues = Table("queue", "waiting", title="broker queues")
    for queue, depth in (figures["queues"] or {}).items():
        queues.add_row(queue, str(depth))
    durations = Table("phase", "n", "p50 s", "p95 s", title=f"durations (last {since})")
    for phase, row in figures["durations"].items():
        durations.add_row(phase, str(row["count"]), _num(row["p50"]), _num(row["p95"]))
    finished = figures["finished"]
    rate = figures["failure_rate"]
    oldest = figures["oldest_queued_seconds"]
    workers = figures["workers"]
    summary = Table(show_header=False, title=f"last {since}")
    for key, value in (
            ("finished", f"{finished['total']} ({finished['completed']} completed, "
                         f"{finished['failed']} failed, {finished['cancelled']} cancelled)"),
            ("throughput", f"{figures['throughput_per_minute']:.2f} jobs/min"),
            ("failure rate", "-" if rate is None else f"{rate:.1%}"),
            ("oldest queued", "-" if oldest is None else f"{oldest:.0f} s"),
            ("workers online", "?" if workers is None else
             f"{len(workers)} {' '.join(workers)}")):
        summary.add_row(key, value)
    outer.add_row(summary, states, queues)
    outer.add_row(durations)
    return outer


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


# -- pipeline exporter ---------------------------------------------------------------------

@click.command(epilog=epilog())
@click.option("--port", type=click.IntRange(1, 65_535), default=9808, show_default=True)
@click.option("--address", default="127.0.0.1", show_default=True)
@click.option("--since", default="1h", show_default=True, help="Window of the figures.")
@click.option("--textfile", type=click.Path(path_type=Path),
              help="Write node_exporter's textfile (e.g. /var/lib/node_exporter/pipeline.prom) "
                   "instead of serving HTTP.")
@click.option("--interval", type=click.FloatRange(1, 3600), default=15.0, show_default=True,
              help="Seconds between textfile writes; the HTTP endpoint caches this long at most.")
@click.option("--once", is_flag=True, help="With --textfile: write once and exit (cron).")
@requires(Role.VIEWER)
def exporter(port: int, address: str, since: str, textfile: Path | None, interval: float,
             once: bool) -> None:
    """Export the statistics for Prometheus: GET /metrics, or a textfile.

    Example: pipeline exporter --port 9808
    """
    from cli.common import orchestrator
    from orchestrator.monitoring import exporter as export
    from orchestrator.runtime.logs import configure

    orch = orchestrator()
    configure(orch.settings.log_level)
    produce = export.producer(_window(since))
    if textfile is not None:
        while True:
            export.write_textfile(textfile, produce())
            if once:
                return
            time.sleep(interval)
    server = export.serve(address, port, export.Cache(produce, min(interval, 5.0)))
    click.echo(f"pipeline exporter: http://{address}:{server.server_port}/metrics", err=True)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


# -- pipeline health -----------------------------------------------------------------------

@click.command(epilog=epilog())
@click.option("--skip", "skipped", multiple=True,
              type=click.Choice(["broker", "results", "database", "share", "workers", "beat",
                                 "disk_waits"]),
              help="Leave a part out (repeat), e.g. --skip beat on a worker-only host.")
@json_option
@requires(Role.VIEWER)
def health(skipped: tuple[str, ...], as_json: bool) -> None:
    """Check broker, result backend, database, share, workers and beat; exit 6 if one fails.

    One line per part (`part: ok|FAIL: why`): usable as a container health check.
    """
    from orchestrator.celery import app
    from orchestrator.monitoring import health as checks
    from orchestrator.settings import get_settings

    parts = tuple(p for p in checks.PARTS if p not in skipped)
    results = checks.run(app, get_settings(), parts)
    if as_json:
        render.emit_json(checks.as_dict(results))
    else:
        for check in results:
            click.echo(check.line(), err=not check.ok)
    if not all(c.ok for c in results):
        raise SystemExit(Exit.UNAVAILABLE)


# -- pipeline flower -----------------------------------------------------------------------

@click.command(epilog=epilog(), context_settings={"ignore_unknown_options": True})
@click.option("--address", help="Default: PIPELINE_FLOWER_ADDRESS (127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65_535), help="Default: PIPELINE_FLOWER_PORT.")
@click.option("--open", "allow_open", is_flag=True,
              help="Allow no authentication on a non-loopback address (not recommended).")
@click.argument("flower_args", nargs=-1, type=click.UNPROCESSED)
@requires(Role.OPERATOR)
def flower(address: str | None, port: int | None, allow_open: bool,
           flower_args: tuple[str, ...]) -> None:
    """Run Flower against the pipeline: basic auth, loopback, persistent, task events on.

    Extra arguments go to Flower, e.g. `pipeline flower -- --auth_provider=...
    --auth=...`; --address, --port, --conf and --basic_auth are refused there (use the
    options above and PIPELINE_FLOWER_*, which are checked).
    Example: PIPELINE_FLOWER_USER=ops PIPELINE_FLOWER_PASSWORD=... pipeline flower
    """
    import os

    from cli.common import orchestrator
    from orchestrator.monitoring import flower as config

    refused = config.refused_passthrough(flower_args)
    if refused:
        raise click.UsageError("; ".join(refused))
    settings = orchestrator().settings
    users = config.credentials(settings)
    other_auth = config.other_authentication(flower_args, dict(os.environ))
    bind = address or settings.flower_address
    if not users and not other_auth:
        if not (config.is_loopback(bind) or allow_open):
            raise click.UsageError(
                f"refusing to serve Flower on {bind} without authentication: set "
                "PIPELINE_FLOWER_USER and PIPELINE_FLOWER_PASSWORD (or pass --open)")
        click.echo("warning: Flower runs without authentication (loopback only); set "
                   "PIPELINE_FLOWER_USER and PIPELINE_FLOWER_PASSWORD", err=True)
    environ = dict(os.environ)
    if users:
        environ["FLOWER_BASIC_AUTH"] = ",".join(users)
    if not settings.task_events:
        click.echo("note: workers send task events once Flower asks them to; set "
                   "PIPELINE_TASK_EVENTS=true on workers and submitters for task-sent "
                   "events (queued tasks in Flower)", err=True)
    folder = settings.broker_folder if settings.embedded_broker else None
    raise SystemExit(_run_flower(config.command(address, port, flower_args), environ, folder,
                                 events_off=not settings.task_events))


def _run_flower(command: list[str], environ: dict[str, str], embedded: Path | None,
                events_off: bool) -> int:
    """Flower as a child (SIGTERM and Ctrl-C reach it). On the embedded broker, what Flower
    leaves behind is cleared afterwards: see orchestrator/monitoring/flower.py."""
    from orchestrator.monitoring import flower as config

    before = config.event_queues(embedded) if embedded else set()
    # Its own session: a terminal's Ctrl-C reaches only us, and Flower is told to stop once
    # (two SIGINTs, the terminal's and ours, broke its shutdown with a KeyboardInterrupt).
    child = subprocess.Popen(command, env=environ, start_new_session=True)
    signals_seen: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        signals_seen.append(signum)  # first: Flower's clean stop (SIGTERM); again: kill it
        child.send_signal(signal.SIGTERM if len(signals_seen) == 1 else signal.SIGKILL)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = child.wait()
    if code == -signal.SIGKILL and len(signals_seen) > 1:
        code = Exit.INTERRUPTED
    if embedded:
        config.drop_event_queues(embedded, config.event_queues(embedded) - before)
        if events_off:
            _events_off()
    return code


def _events_off() -> None:
    """Workers were told by Flower to send task events; nobody reads them now."""
    from orchestrator.celery import app

    try:
        app.control.disable_events()
    except Exception as error:
        click.echo(f"warning: could not turn task events off: {error}", err=True)
