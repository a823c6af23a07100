"""``pipeline``: submit jobs, watch the share, read the status history, retry and cancel."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

import click

from cli import render
from cli.auth import requires
from cli.common import PipelineGroup, orchestrator, parse_since, quiet_broken_pipe
from cli.exit_codes import Exit, epilog, exit_code_table
from cli.params import parameter_options
from orchestrator.access.auth import Role
from orchestrator.errors import ConfigError, DataError, JobNotFound
from orchestrator.store import jobs as store
from orchestrator.store.states import FINAL, STEPS, JobState


@click.group(cls=PipelineGroup, epilog=exit_code_table())
@click.version_option(package_name="pipeline-orchestrator")
def pipeline() -> None:
    """Pipeline Orchestrator: price files in, optimized portfolios out, every step recorded."""


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


# -- submitting ----------------------------------------------------------------------------

@pipeline.command(epilog=epilog())
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@parameter_options  # one option per job parameter, from orchestrator/jobs/params.py (cli/params.py)
@click.option("--batch", is_flag=True, help="Submit the files as one batch (a folder always is).")
@click.option("--wait", is_flag=True, help="Wait for the jobs to end; exit 7 if one failed.")
@click.option("--force", is_flag=True,
              help="Run even if the same input and parameters ran within PIPELINE_DEDUPE_WINDOW.")
@json_option
@requires(Role.SUBMITTER)
def submit(files: tuple[Path, ...], batch: bool, wait: bool, force: bool, as_json: bool,
           **options: Any) -> None:
    """Submit price files (CSV) or job files (JSON). A folder is submitted as one batch.

    A parameter option given overrides the job file's value and the default; one not given
    is not sent. Example: pipeline submit prices.csv --size 20 --objective max_sharpe --wait
    """
    params = {k: v for k, v in options.items() if v is not None}  # only what the user gave
    orch = orchestrator()
    job_ids, batch_ids, lost = _submit(orch, files, params, batch, dedupe=not force)
    refused = _report(job_ids, batch_ids, as_json)
    for path in lost:
        click.echo(f"error: {path}: gone before it could be claimed (another watcher or "
                   "submitter took it first); not submitted", err=True)
    members = job_ids + [j.id for b in batch_ids for j in store.list_jobs(batch_id=b,
                                                                          limit=100_000)]
    ended = _wait(members, quiet=as_json) if wait else []
    if as_json:
        render.emit_json({"jobs": job_ids, "batches": batch_ids,
                          "states": {j.id: j.state.value for j in ended} if wait else None})
    if wait:
        unfinished = [j for j in ended if j.state is not JobState.COMPLETED]
        if not as_json:
            for job in unfinished:
                render.line(_ended_badly(job))
        raise SystemExit(Exit.JOB_FAILED if unfinished else Exit.OK)
    if refused or lost:  # as the API (422) and `pipeline submit` through it (cli/remote.py)
        raise SystemExit(Exit.BAD_INPUT)


def _submit(orch: Any, files: tuple[Path, ...], params: dict[str, Any], batch: bool,
            dedupe: bool) -> tuple[list[str], list[str], list[Path]]:
    from orchestrator.intake.watch.jobrefs import batch_members

    folders = [f for f in files if f.is_dir()]
    singles = [f for f in files if f.is_file()]
    neither = [f for f in files if f not in folders and f not in singles]
    if neither:  # a FIFO, socket or device was dropped in silence, exit 0, nothing recorded
        raise DataError("not a regular file or a folder (a FIFO, socket or device is never "
                        "read)", file=str(neither[0]))
    batch_ids = [orch.submit_batch(batch_members(d), params, name=d.name, dedupe=dedupe)
                 for d in folders]
    if batch and singles:
        return [], [*batch_ids, orch.submit_batch(singles, params, dedupe=dedupe)], []
    if not singles:
        return [], batch_ids, []
    job_ids, lost = orch.submit_many(singles, params, dedupe=dedupe)
    return job_ids, batch_ids, lost


def _submitted(job_id: str) -> str:
    """One line per job; a duplicate says which job it repeats and how to run it anyway."""
    job = store.get_job(job_id)
    if job.state is JobState.CANCELLED and (job.error or {}).get("type") == "DuplicateInput":
        return f"job {job_id} not run: {job.error['message']}"  # type: ignore[index]
    return f"submitted job {job_id}"


def _report(job_ids: list[str], batch_ids: list[str], as_json: bool) -> list[str]:
    """One line per job and batch; the jobs the intake refused (a bad parameter in a job
    file, a file the share's rules refuse) on stderr, with the reason. Returns those."""
    refused = [job for job in map(store.get_job, job_ids) if _refused(job)]
    for job in refused:
        click.echo(f"error: job {job.id} refused: {(job.error or {}).get('message')}", err=True)
    if not as_json:
        for job_id in job_ids:
            if job_id not in {job.id for job in refused}:
                click.echo(_submitted(job_id))
        for batch_id in batch_ids:
            click.echo(f"submitted batch {batch_id}")
    return [job.id for job in refused]


def _refused(job: store.Job) -> bool:
    """Failed before any step ran: the intake refused it (its parameters, or the file)."""
    return job.state is JobState.FAILED and job.step is None and bool(job.error)


def _ended_badly(job: store.Job) -> str:
    """Why a waited-for job did not complete: its step and its whole reason."""
    error = job.error or {}
    step = error.get("step") or job.step
    where = f" in {step}" if step else ""
    return f"job {job.id} {job.state.value}{where}: {render.outcome(job) or 'no reason recorded'}"


def _wait(job_ids: list[str], quiet: bool) -> list[store.Job]:
    from rich.progress import BarColumn, Progress, TextColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[s]}"),
                  disable=quiet, console=render.console) as bar:
        tasks = {j: bar.add_task(j[:12], total=100, s="queued") for j in job_ids}
        while True:
            current = [store.get_job(j) for j in job_ids]
            for job in current:
                bar.update(tasks[job.id], completed=job.progress,
                           s=f"{job.state.value} {job.step or ''}")
            if all(job.state in FINAL for job in current):
                return current
            time.sleep(0.2)


# -- reading -------------------------------------------------------------------------------

@pipeline.command(epilog=epilog())
@click.argument("job")
@click.option("--follow", is_flag=True,
              help="Live progress until the end; exit 0 if completed, 7 if failed/cancelled.")
@click.option("--interval", type=click.FloatRange(0.05, 60), default=0.25, show_default=True,
              help="Seconds between looks with --follow.")
@json_option
@requires(Role.VIEWER)
def status(job: str, follow: bool, interval: float, as_json: bool) -> None:
    """Show one job or batch (an id or a unique prefix of it). Example: pipeline status 3f2a"""
    from cli.monitor import show_status

    orchestrator()
    show_status(job, follow, interval, as_json)


@pipeline.command(epilog=epilog())
@click.argument("job")
@json_option
@requires(Role.VIEWER)
def history(job: str, as_json: bool) -> None:
    """Every state change of a job, or of each job of a batch, with its time.

    Example: pipeline history 3f2a
    """
    orchestrator()
    found = _job_or_batch(job)
    if isinstance(found, store.Job):
        events = store.history(found.id)
        if as_json:
            render.emit_json([e.to_dict() for e in events])
            return
        render.line(f"job {found.id} ({found.input_name})")
        render.console.print(render.history_table(events))
        return
    _batch_history(found, as_json)


def _batch_history(batch_id: str, as_json: bool) -> None:
    from orchestrator.jobs.batches import batch_names

    name = batch_names([batch_id]).get(batch_id, batch_id)
    members = sorted(store.list_jobs(batch_id=batch_id, limit=1_000_000),
                     key=lambda j: (j.input_name, j.id))
    if as_json:
        render.emit_json({"batch_id": batch_id, "name": name, "jobs": [
            {"job_id": j.id, "input": j.input_name,
             "events": [e.to_dict() for e in store.history(j.id)]} for j in members]})
        return
    render.line(f"batch {batch_id} ({name}): {len(members)} jobs")
    for member in members:
        render.line(f"job {member.id} ({member.input_name})")
        render.console.print(render.history_table(store.history(member.id)))


@pipeline.command("list", epilog=epilog())
@click.option("--state", type=click.Choice([s.value for s in JobState]))
@click.option("--since", help="Only jobs created since: 30m, 12h, 7d or an ISO date.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100_000))
@json_option
@requires(Role.VIEWER)
def list_(state: str | None, since: str | None, limit: int, as_json: bool) -> None:
    """List jobs, newest first, with their batch's name. Example: pipeline list --since 1d"""
    from orchestrator.jobs.batches import batch_names

    orchestrator()
    found = store.list_jobs(JobState(state) if state else None, parse_since(since), limit=limit)
    names = batch_names(j.batch_id for j in found)
    if as_json:
        render.emit_json([{**j.to_dict(), "batch_name": names.get(j.batch_id or "")}
                          for j in found])
    else:
        render.console.print(render.jobs_table(found, names))


# -- operator actions ----------------------------------------------------------------------

@pipeline.command(epilog=epilog())
@click.argument("job")
@click.option("--from-step", type=click.Choice(STEPS), help="Default: the step that failed.")
@requires(Role.OPERATOR)
def retry(job: str, from_step: str | None) -> None:
    """Run a failed or cancelled job (or every one of a batch) again.

    Example: pipeline retry 3f2a --from-step optimize
    """
    from orchestrator.jobs.canvas import retry_batch

    orch = orchestrator()
    found = _job_or_batch(job)
    if isinstance(found, store.Job):
        queued = orch.retry(found.id, from_step)
        click.echo(f"job {queued.id} queued again (attempt {queued.attempts + 1})")
    else:
        click.echo(f"batch {found}: {len(retry_batch(orch, found))} jobs queued again")


@pipeline.command(epilog=epilog())
@click.argument("job")
@requires(Role.OPERATOR)
def cancel(job: str) -> None:
    """Cancel a pending, queued or running job, or every unfinished job of a batch.

    Example: pipeline cancel 3f2a
    """
    from orchestrator.jobs.canvas import cancel_batch

    orch = orchestrator()
    found = _job_or_batch(job)
    if isinstance(found, store.Job):
        click.echo(f"job {orch.cancel(found.id).id} cancelled")
    else:
        click.echo(f"batch {found}: {len(cancel_batch(orch, found))} jobs cancelled")


def _job_or_batch(prefix: str) -> store.Job | str:
    try:
        return store.find_job(prefix)
    except JobNotFound:
        return store.find_batch(prefix)


# -- running -------------------------------------------------------------------------------

@pipeline.command(epilog=epilog())
@click.option("--interval", type=float, help="Seconds between scans (PIPELINE_SCAN_INTERVAL).")
@requires(Role.OPERATOR)
def watch(interval: float | None) -> None:
    """Watch <share>/input/ and submit each complete file. Stop with Ctrl-C or SIGTERM."""
    from cli.processes import stop_on_signals
    from orchestrator.intake.watcher import Watcher
    from orchestrator.runtime.logs import configure as configure_logs

    orch = orchestrator()
    configure_logs(orch.settings.log_level)  # PIPELINE_LOG_FORMAT: text or json
    stop = threading.Event()
    stop_on_signals(stop)
    Watcher(orch).run(stop, interval or orch.settings.scan_interval)


@pipeline.command(epilog=epilog())
@click.option("--concurrency", type=int, help="Worker processes (PIPELINE_WORKER_CONCURRENCY).")
@click.option("--workers-by-role", "by_role", is_flag=True,
              help="One worker per role, as on many machines: steps@HOST (validate,archive) "
                   "and optimize@HOST with --concurrency each, maintenance@HOST with 1.")
@requires(Role.OPERATOR)
def up(concurrency: int | None, by_role: bool) -> None:
    """Run worker(s), beat and the watcher together (one machine). Ctrl-C stops them all.

    Works on the embedded default and with Redis/RabbitMQ + PostgreSQL settings alike. A second
    `up` on the same var folder is refused (exit 14) while one runs; if `up` is killed, its
    children stop too.
    """
    from cli.processes import AlreadyRunning, run_all

    orch = orchestrator()
    try:
        code = run_all(orch, concurrency or orch.settings.worker_concurrency, by_role)
    except AlreadyRunning as error:
        click.echo(f"error: {error}", err=True)
        code = Exit.ALREADY_RUNNING
    raise SystemExit(code)


@pipeline.command(epilog=epilog())
@click.option("--jobs", "count", default=4, show_default=True, type=click.IntRange(1, 50))
@requires(Role.SUBMITTER)
def demo(count: int) -> None:
    """Put sample jobs through the real pipeline (a worker is started for the demo)."""
    from cli.demo import run_demo

    raise SystemExit(run_demo(orchestrator(), count))


@pipeline.command(epilog=epilog())
@json_option
@requires(Role.VIEWER)
def config(as_json: bool) -> None:
    """Show the settings in force (passwords masked)."""
    from orchestrator.settings import get_settings

    shown = get_settings().public_dict()
    if as_json:
        render.emit_json(shown)
    else:
        for key, value in shown.items():
            click.echo(f"PIPELINE_{key.upper()}={value}")


@pipeline.group(epilog=epilog())
def db() -> None:
    """The status database."""


@db.command(epilog=epilog())
@requires(Role.ADMIN)
def upgrade() -> None:
    """Create or migrate the schema to the newest revision (run before new workers start)."""
    orchestrator()
    click.echo("database schema is current")


from cli.api import api  # noqa: E402 - `pipeline api` (orchestrator/api/)
from cli.auth import audit, auth, token  # noqa: E402 - registered after the group exists
from cli.keys import keys  # noqa: E402 - lab key material (signed messages, TLS)
from cli.monitor import exporter, flower, health, stats  # noqa: E402
from cli.rotate import restore, rotate, rotations  # noqa: E402

pipeline.add_command(keys)
pipeline.add_command(api)
for _command in (flower, stats, exporter, health):
    pipeline.add_command(_command)

for _command in (rotate, restore, rotations, token, audit, auth):
    pipeline.add_command(_command)


def main() -> None:  # console script: settings errors exit 3
    from cli import remote  # PIPELINE_API_URL: through the HTTP API (cli/remote.py)

    try:
        if remote.wanted(sys.argv[1:]):
            return remote.main(pipeline)
        pipeline()
    except BrokenPipeError:  # raised outside a command (e.g. --help into `head`)
        quiet_broken_pipe()
    except ConfigError as error:
        click.echo(f"error: {error}", err=True)
        raise SystemExit(Exit.CONFIG) from None


if __name__ == "__main__":
    main()
