"""The CLI's remote mode: with ``PIPELINE_API_URL`` set, ``submit``, ``status``, ``list``,
``history``, ``cancel`` and ``retry`` go through the HTTP API with a token instead of to the
database, with the same output and exit codes.

Remote users and operators then need a token, not the database's credentials (which are full
power over every row). The API's refusals come back as the project's own errors
(401 → Unauthorized, 404 → JobNotFound, 409 → IllegalTransition, 4xx → DataError,
503 or no answer → TransientError), so the CLI's error line and exit codes apply unchanged.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import fields
from datetime import datetime
from pathlib import Path
from typing import Any

import click
import httpx

from cli import render
from cli.auth import read_token_file
from cli.common import PipelineGroup, parse_since
from cli.exit_codes import Exit, epilog
from orchestrator import errors
from orchestrator.store.jobs import Job, JobEvent
from orchestrator.store.states import FINAL, JobState

COMMANDS = ("submit", "status", "list", "history", "cancel", "retry")
STATUS_ERRORS: dict[int, type[errors.PipelineError]] = {
    401: errors.Unauthorized, 403: errors.Forbidden, 404: errors.JobNotFound,
    409: errors.IllegalTransition, 410: errors.JobNotFound, 503: errors.TransientError}


def wanted(args: list[str]) -> bool:
    """Remote mode: PIPELINE_API_URL is set and the command is one the API serves."""
    return bool(os.environ.get("PIPELINE_API_URL")) and bool(args) and args[0] in COMMANDS


class Api:
    """The API at PIPELINE_API_URL, with the token of --token or PIPELINE_TOKEN."""

    def __init__(self, token: str | None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=os.environ["PIPELINE_API_URL"].rstrip("/"),
                                 headers=headers, timeout=120)

    def call(self, method: str, path: str, **options: Any) -> Any:
        try:
            answer = self.http.request(method, path, **options)
        except httpx.TransportError as error:
            raise errors.TransientError(f"the API at {self.http.base_url} does not answer: "
                                 f"{error}") from None
        if answer.status_code < 400:
            return answer.json()
        try:
            detail = answer.json()["error"]
        except (ValueError, KeyError, TypeError):
            detail = {"message": answer.text[:300]}
        kind = STATUS_ERRORS.get(answer.status_code, errors.DataError
                                 if answer.status_code < 500 else errors.TransientError)
        if detail.get("code") == "duplicate":
            return {"duplicate": detail}
        raise kind(str(detail.get("message")))

    def job(self, prefix: str) -> Job:
        return as_job(self.call("GET", f"/v1/jobs/{prefix}"))


def as_job(data: dict[str, Any]) -> Job:
    known = {f.name for f in fields(Job)}
    values = {k: v for k, v in data.items() if k in known}
    for key in ("created_at", "updated_at", "started_at", "finished_at", "lease_until"):
        if values.get(key):
            values[key] = datetime.fromisoformat(values[key])
    values["state"] = JobState(values["state"])
    return Job(**values)


def as_event(data: dict[str, Any]) -> JobEvent:
    return JobEvent(**{**data, "at": datetime.fromisoformat(data["at"])})


def _group(local: click.Group) -> click.Group:
    """The remote group: ``local``'s commands (cli/main.py), answered through the API."""

    @click.group(cls=PipelineGroup, epilog=epilog())
    def remote() -> None:
        """Pipeline Orchestrator through its HTTP API (PIPELINE_API_URL)."""

    for name, callback in (("submit", submit), ("status", status), ("list", list_),
                           ("history", history), ("cancel", cancel), ("retry", retry)):
        remote.add_command(_mirror(local.commands[name], callback))
    return remote


def _mirror(local: click.Command, callback: Any) -> click.Command:
    """The local command's arguments, options (--token and --token-file included) and help;
    our callback. Both modes parse the same command line because it is one declaration."""

    def run(token: str | None = None, token_file: Path | None = None, **options: Any) -> Any:
        return callback(token=token or (read_token_file(token_file) if token_file else None),
                        **options)

    return click.Command(local.name, params=local.params, callback=run, help=local.help,
                         epilog=local.epilog)


def main(local: click.Group) -> None:
    _group(local)(prog_name="pipeline")


# -- commands ------------------------------------------------------------------------------

def submit(files: tuple[Path, ...], batch: bool, wait: bool, force: bool, as_json: bool,
           token: str | None, **options: Any) -> None:
    """Submit price files through the API (uploaded). A folder is submitted as one batch."""
    api = Api(token)
    form = {k: str(v) for k, v in options.items() if v is not None}
    if force:
        form["force"] = "true"
    job_ids, batches, lines = _send(api, files, batch, form)
    if not as_json:
        for line in lines:
            click.echo(line)
    members = job_ids + [j for _, ids in batches for j in ids]
    ended = [_until_final(api, j) for j in members] if wait else []
    if as_json:
        render.emit_json({"jobs": job_ids, "batches": [b for b, _ in batches],
                          "states": {j.id: j.state.value for j in ended} if wait else None})
    if wait:
        raise SystemExit(Exit.OK if all(j.state is JobState.COMPLETED for j in ended)
                         else Exit.JOB_FAILED)


def _send(api: Api, files: tuple[Path, ...], batch: bool, form: dict[str, str],
          ) -> tuple[list[str], list[tuple[str, list[str]]], list[str]]:
    """Upload singles as jobs, folders (and --batch files) as batches: job ids, (batch id,
    member ids), and the lines `pipeline submit` prints (jobs first, then batches)."""
    from orchestrator.intake.watch.jobrefs import batch_members

    groups = [batch_members(f) for f in files if f.is_dir()]
    singles = [f for f in files if f.is_file()]
    if batch and singles:
        groups, singles = [*groups, singles], []
    job_ids, job_lines = [], []
    for single in singles:
        found = _upload(api, "/v1/jobs", "file", [single], form)
        duplicate = found.get("duplicate")
        job_ids.append(duplicate["job_id"] if duplicate else found["id"])
        job_lines.append(f"job {duplicate['job_id']} not run: {_cli_words(duplicate)}"
                         if duplicate else f"submitted job {found['id']}")
    batches = []
    for group in groups:
        found = _upload(api, "/v1/batches", "files", group, form)
        batches.append((found["batch_id"], [j["id"] for j in found["jobs"]]))
    return job_ids, batches, job_lines + [f"submitted batch {b}" for b, _ in batches]


def _cli_words(duplicate: dict[str, Any]) -> str:
    """The API tells its clients to send force=true; this CLI's users pass --force."""
    return str(duplicate["message"]).replace(
        "Send force=true", 'Submit with --force, or set "force": true in a job file')


def _upload(api: Api, path: str, field: str, sources: list[Path], form: dict[str, str],
            ) -> dict[str, Any]:
    with ExitStack() as stack:
        parts = [(field, (p.name, stack.enter_context(open(p, "rb")), "text/csv"))
                 for p in sources]
        return dict(api.call("POST", path, files=parts, data=form))


def _until_final(api: Api, job_id: str, interval: float = 0.25) -> Job:
    while (job := api.job(job_id)).state not in FINAL:
        time.sleep(interval)
    return job


def status(job: str, follow: bool, interval: float, as_json: bool, token: str | None) -> None:
    """Show one job (an id or a unique prefix of it)."""
    api = Api(token)
    found = api.job(job)
    if follow:
        found = _until_final(api, found.id, interval)
        if as_json:
            render.emit_json([found.to_dict()])
        else:
            render.console.print(f"{found.id} {found.state.value}: {render.outcome(found)}")
        raise SystemExit(Exit.OK if found.state is JobState.COMPLETED else Exit.JOB_FAILED)
    if as_json:  # the folder is the server's business: not shown remotely
        render.emit_json({**found.to_dict(), "folder": None})
    else:
        render.console.print(render.job_panel(found, None))


def history(job: str, as_json: bool, token: str | None) -> None:
    """Every state change of a job, with its time."""
    api = Api(token)
    found = api.job(job)
    events = [as_event(e) for e in api.call("GET", f"/v1/jobs/{found.id}/history")]
    if as_json:
        render.emit_json([e.to_dict() for e in events])
    else:
        render.console.print(f"job {found.id} ({found.input_name})")
        render.console.print(render.history_table(events))


def list_(state: str | None, since: str | None, limit: int, as_json: bool,
          token: str | None) -> None:
    """List jobs, newest first."""
    api = Api(token)
    query: dict[str, Any] = {"state": state} if state else {}
    after = parse_since(since)
    if after is not None:
        query["since"] = after.isoformat()
    found = list(_pages(api, query, limit))
    names = {batch: api.call("GET", f"/v1/batches/{batch}")["name"]  # as the local list shows
             for batch in {j.batch_id for j in found if j.batch_id}}
    if as_json:
        render.emit_json([{**j.to_dict(), "batch_name": names.get(j.batch_id or "")}
                          for j in found])
    else:
        render.console.print(render.jobs_table(found, names))


def _pages(api: Api, query: dict[str, Any], limit: int) -> Iterator[Job]:
    cursor, given = None, 0
    while given < limit:
        page = api.call("GET", "/v1/jobs", params={**query, "limit": min(limit - given, 1000),
                                                   **({"cursor": cursor} if cursor else {})})
        for data in page["jobs"]:
            given += 1
            yield as_job(data)
        cursor = page["next"]
        if cursor is None:
            return


def retry(job: str, from_step: str | None, token: str | None) -> None:
    """Run a failed or cancelled job again."""
    api = Api(token)
    found = api.job(job)
    params = {"from_step": from_step} if from_step else {}
    queued = as_job(api.call("POST", f"/v1/jobs/{found.id}/retry", params=params))
    click.echo(f"job {queued.id} queued again (attempt {queued.attempts + 1})")


def cancel(job: str, token: str | None) -> None:
    """Cancel a pending, queued or running job."""
    api = Api(token)
    found = api.job(job)
    click.echo(f"job {as_job(api.call('POST', f'/v1/jobs/{found.id}/cancel')).id} cancelled")
