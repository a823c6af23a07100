"""The /v1 endpoints: submit, read, follow, fetch, cancel and retry jobs; batches; health.

Each one calls what the CLI calls (the orchestrator, the store, the monitoring checks); the
database and broker calls are blocking, so they run in Starlette's thread pool.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from orchestrator import safeopen
from orchestrator.access.auth import Principal, Role
from orchestrator.api import models, queries, submit, uploads
from orchestrator.api.errors import ApiError
from orchestrator.api.security import requires
from orchestrator.jobs.canvas import Orchestrator
from orchestrator.store import jobs as store
from orchestrator.store.states import JobState

router = APIRouter(prefix="/v1")
Viewer = Annotated[Principal, Depends(requires(Role.VIEWER))]
Submitter = Annotated[Principal, Depends(requires(Role.SUBMITTER))]
Operator = Annotated[Principal, Depends(requires(Role.OPERATOR))]
READ_ERRORS = models.error_responses(401, 403, 404, 503)
MAX_RESULT = 256 << 20  # bytes of one result file served (they are a few MB at most)


def orchestrator(request: Request) -> Orchestrator:
    return request.app.state.orchestrator  # type: ignore[no-any-return]


def accepted(job: store.Job) -> JSONResponse:
    body = models.Job.of(job).model_dump(mode="json")
    return JSONResponse(body, 202, headers={"Location": f"/v1/jobs/{job.id}"})


# -- submitting ----------------------------------------------------------------------------

@router.post("/jobs", status_code=202, response_model=models.Job, tags=["jobs"],
             summary="Submit one price file (multipart upload) or a file on the share (JSON)",
             openapi_extra=models.upload_schema(batch=False),
             responses=models.error_responses(400, 401, 403, 409, 413, 415, 422, 503))
async def submit_job(request: Request, _who: Submitter) -> JSONResponse:
    orch = orchestrator(request)
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            body = await request.json()
        except ValueError as error:
            raise ApiError(400, "bad_json", f"the JSON body cannot be read: {error}") from None
        path, params, force = submit.on_share(orch, body)
        await run_in_threadpool(submit.check_params, orch, params, path.name)
        return accepted(await _run(orch, path, params, force))
    return accepted(await upload_one(request, orch))


async def upload_one(request: Request, orch: Orchestrator) -> store.Job:
    """A multipart upload of one price file, through the intake; the page's form uses it too.
    Raises ApiError (or the project's errors) for every refusal, leaving nothing behind."""
    form = await receive_form(request, orch)
    try:
        if len(form.files) != 1:
            raise ApiError(400, "one_file", f"send exactly one file part (got "
                           f"{len(form.files)}); several files are a batch: POST /v1/batches")
        path = form.files[0][1]
        params, force = submit.form_params(form.fields, path.name)
        await run_in_threadpool(_prepare, orch, params, [path])
        return await _run(orch, path, params, force)
    finally:
        uploads.discard(form.folder)


async def receive_form(request: Request, orch: Orchestrator) -> uploads.Form:
    limit = request.app.state.settings.api_max_upload_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + 1_000_000:  # room for the form's fields
        raise uploads.too_large(limit)
    return await uploads.receive(request.stream(), request.headers.get("content-type", ""),
                                 orch.share, limit)


def _prepare(orch: Orchestrator, params: dict[str, Any], paths: list[Any]) -> None:
    for path in paths:
        uploads.check_content(path)
    submit.check_params(orch, params, paths[0].name if len(paths) == 1 else "request")
    submit.check_broker_up(orch)


async def _run(orch: Orchestrator, path: Any, params: dict[str, Any], force: bool,
               ) -> store.Job:
    done = await run_in_threadpool(submit.submit_file, orch, path, params, force)
    refused = submit.refusal(done)
    if refused is not None:
        raise refused
    return done.job


@router.post("/batches", status_code=202, response_model=models.BatchAccepted,
             tags=["batches"], summary="Submit several price files as one batch (a chord)",
             openapi_extra=models.upload_schema(batch=True),
             responses=models.error_responses(400, 401, 403, 413, 415, 422, 503))
async def submit_batch(request: Request, _who: Submitter) -> JSONResponse:
    orch = orchestrator(request)
    form = await receive_form(request, orch)
    try:
        paths = [p for _, p in form.files]
        if not paths:
            raise ApiError(400, "no_files", "send one or more file parts named 'files'")
        if len(paths) > orch.settings.api_max_batch_files:
            raise ApiError(400, "too_many_files", f"{len(paths)} files; at most "
                           f"{orch.settings.api_max_batch_files} (PIPELINE_API_MAX_BATCH_FILES)")
        params, force = submit.form_params(form.fields, "request")
        await run_in_threadpool(_prepare, orch, params, paths)
        name = form.fields.get("name") or None
        batch_id = await run_in_threadpool(
            lambda: orch.submit_batch(paths, params, name=name, dedupe=not force))
        members = await run_in_threadpool(store.list_jobs, None, None, batch_id, 1_000_000)
    finally:
        uploads.discard(form.folder)
    body = {"batch_id": batch_id,
            "jobs": [models.Job.of(j).model_dump(mode="json") for j in members[::-1]]}
    return JSONResponse(body, 202, headers={"Location": f"/v1/batches/{batch_id}"})


# -- reading -------------------------------------------------------------------------------

@router.get("/jobs/{job_id}", response_model=models.Job, tags=["jobs"],
            summary="A job (by id, or a unique prefix): state, step, progress, result or error",
            responses=READ_ERRORS)
async def get_job(job_id: str, _who: Viewer) -> JSONResponse:
    # the hot path: a read by primary key, and no second validation of the answer; an id
    # shorter than a whole one is a prefix (people type short ids, as with the CLI)
    read = store.get_job if len(job_id) == 32 else store.find_job
    job = await run_in_threadpool(read, job_id)
    return JSONResponse(models.Job.of(job).model_dump(mode="json"))


@router.get("/jobs", response_model=models.JobPage, tags=["jobs"],
            summary="Jobs, newest first, filtered; follow `next` for the next page",
            responses=models.error_responses(401, 403, 422, 503))
async def list_jobs(_who: Viewer, state: JobState | None = None,
                    batch: Annotated[str | None, Query(max_length=64)] = None,
                    since: datetime | None = None,
                    input_name: Annotated[str | None, Query(max_length=255)] = None,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
                    cursor: Annotated[str | None, Query(max_length=200)] = None,
                    ) -> models.JobPage:
    filters = queries.Filters(state, batch, since, input_name)
    found, cursor_next = await run_in_threadpool(queries.page_of_jobs, filters, limit, cursor)
    return models.JobPage(jobs=[models.Job.of(j) for j in found], next=cursor_next)


@router.get("/jobs/{job_id}/history", response_model=list[models.Event], tags=["jobs"],
            summary="Every state change of a job (append-only)", responses=READ_ERRORS)
async def job_history(job_id: str, _who: Viewer) -> list[dict[str, Any]]:
    def read() -> list[dict[str, Any]]:
        store.get_job(job_id)  # 404 for an unknown job, not an empty list
        return [e.to_dict() for e in store.history(job_id)]

    return await run_in_threadpool(read)


@router.get("/batches/{batch_id}", response_model=models.Batch, tags=["batches"],
            summary="A batch, its jobs and (once they all ended) its summary",
            responses=READ_ERRORS)
async def get_batch(batch_id: str, _who: Viewer) -> models.Batch:
    def read() -> models.Batch:
        row = queries.get_batch(batch_id)
        members = store.list_jobs(batch_id=batch_id, limit=1_000_000)[::-1]
        by_state: dict[str, int] = {}
        for job in members:
            by_state[job.state.value] = by_state.get(job.state.value, 0) + 1
        return models.Batch(**row, by_state=by_state, jobs=[models.Job.of(j) for j in members])

    return await run_in_threadpool(read)


@router.get("/jobs/{job_id}/files/{name}", tags=["jobs"],
            summary="A result file: weights.csv, report.json, report.html, quality.json",
            responses={200: {"content": {"text/csv": {}, "application/json": {},
                                         "text/html": {}}},
                       **models.error_responses(401, 403, 404, 409, 410, 503)})
async def job_file(job_id: str, name: str, request: Request, _who: Viewer) -> Response:
    if name not in models.RESULT_FILES:
        raise ApiError(404, "not_found", f"no result file {name!r}; a job has "
                       + ", ".join(models.RESULT_FILES))
    orch = orchestrator(request)
    job = await run_in_threadpool(store.get_job, job_id)
    if job.state is JobState.ARCHIVED:
        raise ApiError(410, "archived", f"job {job_id} was rotated into the archive "
                       f"({job.archive_path}); an operator restores it with `pipeline restore "
                       f"{job_id}`, then its files are here again", archive=job.archive_path)
    folder = orch.share.locate(job_id)
    path = folder / name if folder is not None else None
    if path is None or not path.is_file():
        if job.state in (JobState.PENDING, JobState.QUEUED, JobState.PROCESSING):
            raise ApiError(409, "not_ready", f"job {job_id} is {job.state.value}; its files "
                           "are here once it completed")
        raise ApiError(404, "not_found", f"job {job_id} ({job.state.value}) has no {name}")
    headers = {"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
               "img-src data:; sandbox"} if name.endswith(".html") else {}
    media = {"csv": "text/csv", "json": "application/json", "html": "text/html"}
    # Read by the share's rules (orchestrator/safeopen.py): a result file a share user swapped
    # for a link to a file outside the share, a hard link or a FIFO is refused, not served.
    try:
        data = await run_in_threadpool(safeopen.read_all, orch.share.root, path, MAX_RESULT)
    except safeopen.Refused as refused:
        raise ApiError(404, "not_found", f"job {job_id}'s {name} is not served: {refused}",
                       ) from None
    except FileNotFoundError:
        raise ApiError(404, "not_found", f"job {job_id} ({job.state.value}) has no {name}",
                       ) from None
    disposition = "inline" if name.endswith(".html") else "attachment"
    headers["Content-Disposition"] = f'{disposition}; filename="{name}"'
    return Response(data, media_type=media[name.rsplit(".", 1)[1]], headers=headers)


# -- operator actions ----------------------------------------------------------------------

@router.post("/jobs/{job_id}/cancel", response_model=models.Job, tags=["jobs"],
             summary="Cancel a pending, queued or running job",
             responses=models.error_responses(401, 403, 404, 409, 503))
async def cancel_job(job_id: str, request: Request, _who: Operator) -> models.Job:
    orch = orchestrator(request)
    await run_in_threadpool(store.get_job, job_id)
    return models.Job.of(await run_in_threadpool(orch.cancel, job_id))


@router.post("/jobs/{job_id}/retry", status_code=202, response_model=models.Job,
             tags=["jobs"], summary="Run a failed or cancelled job again",
             responses=models.error_responses(401, 403, 404, 409, 503))
async def retry_job(job_id: str, request: Request, _who: Operator,
                    from_step: Annotated[str | None, Query(
                        description="a step's name (default: the step that failed)")] = None,
                    ) -> JSONResponse:
    orch = orchestrator(request)
    await run_in_threadpool(store.get_job, job_id)
    return accepted(await run_in_threadpool(orch.retry, job_id, from_step))


# -- health and statistics -----------------------------------------------------------------

@router.get("/health", tags=["service"], responses={503: {"description": "a part failed"}},
            summary="Broker, results, database, share, workers, beat (`pipeline health`)")
async def health(request: Request, _who: Viewer) -> JSONResponse:
    from orchestrator.monitoring import health as checks

    orch = orchestrator(request)
    results = await run_in_threadpool(checks.run, orch.app, orch.settings, checks.PARTS)
    found = checks.as_dict(results)
    return JSONResponse(found, 200 if found["healthy"] else 503)


@router.get("/stats", tags=["service"], summary="Queues, states, throughput (`pipeline stats`)")
async def stats(request: Request, _who: Viewer,
                since: Annotated[str, Query(max_length=20)] = "1h") -> dict[str, Any]:
    from datetime import timedelta

    from orchestrator.monitoring.stats import collect
    from orchestrator.settings import parse_duration

    seconds = parse_duration(since)
    if not isinstance(seconds, float) or seconds <= 0:
        raise ApiError(422, "invalid_parameter", f"field 'since': {since!r}: use e.g. 30m, "
                       "1h, 7d")
    orch = orchestrator(request)
    return await run_in_threadpool(collect, timedelta(seconds=seconds), orch.app)
