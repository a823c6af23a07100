"""Listing with keyset pagination, cancel and retry, batches, events resumed with
Last-Event-ID, archived results (410), /docs without internet, and the bind rule."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from orchestrator.store import jobs as store
from orchestrator.store.states import JobState
from tests.api.conftest import Api, make_tokens, prices, start_api
from tests.api.test_api_flow import read_events
from tests.conftest import Env, Process
from tests.support import wait_final

pytestmark = [pytest.mark.slow]


def submit(http: httpx.Client, path: Path, **fields: str) -> dict[str, object]:
    with open(path, "rb") as handle:
        sent = http.post("/v1/jobs", files={"file": (path.name, handle, "text/csv")},
                         data={"force": "true", **fields})
    assert sent.status_code == 202, sent.text
    return dict(sent.json())


def test_pages_of_jobs_follow_the_cursor_without_gaps_or_repeats(api: Api, sample_csv: Path,
                                                                 tmp_path: Path) -> None:
    # given seven jobs (no worker: they stay queued), two of them named alike
    with api.client("submitter") as http:
        ids = [submit(http, prices(sample_csv, tmp_path, f"p{i % 5}.csv"))["id"]
               for i in range(7)]
        # when the list is read three at a time, following `next`
        seen: list[str] = []
        cursor: str | None = None
        while True:
            page = http.get("/v1/jobs", params={"limit": 3, **(
                {"cursor": cursor} if cursor else {})}).json()
            seen += [j["id"] for j in page["jobs"]]
            cursor = page["next"]
            if cursor is None:
                break
        # then every job comes once, newest first
        assert seen == ids[::-1]
        # and the filters apply
        assert len(http.get("/v1/jobs", params={"input_name": "p1.csv"}).json()["jobs"]) == 2
        assert http.get("/v1/jobs", params={"state": "completed"}).json()["jobs"] == []
        assert len(http.get("/v1/jobs", params={"state": "queued", "since":
                                                "2000-01-01T00:00:00Z"}).json()["jobs"]) == 7
        bad = http.get("/v1/jobs", params={"state": "done"})
        assert bad.status_code == 422 and "field 'state'" in bad.json()["error"]["message"]
        assert http.get("/v1/jobs", params={"cursor": "garbage"}).status_code == 422


def test_an_operator_cancels_and_retries(api: Api, sample_csv: Path, tmp_path: Path) -> None:
    with api.client("submitter") as http:
        job = submit(http, prices(sample_csv, tmp_path, "c.csv"))
    with api.client("operator") as ops:
        cancelled = ops.post(f"/v1/jobs/{job['id']}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
        again = ops.post(f"/v1/jobs/{job['id']}/cancel")
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "illegal_transition"
        retried = ops.post(f"/v1/jobs/{job['id']}/retry")
        assert retried.status_code == 202 and retried.json()["state"] == "queued"
        assert ops.post("/v1/jobs/nope/retry").status_code == 404
    history = [e.to_state for e in store.history(str(job["id"]))]
    assert history == ["pending", "queued", "cancelled", "queued"]


def test_events_resume_after_the_last_event_id(api: Api, sample_csv: Path,
                                               tmp_path: Path) -> None:
    with api.client("submitter") as http:
        job = submit(http, prices(sample_csv, tmp_path, "r.csv"))
        store_id = str(job["id"])
        # the first connection sees pending and queued, then the client goes away
        first: list[dict[str, object]] = []
        with http.stream("GET", f"/v1/jobs/{store_id}/events") as stream:
            for event in read_events(stream):
                first.append(event)
                if len(first) == 2:
                    break
        # meanwhile the job is cancelled
        store.transition(store_id, JobState.CANCELLED, detail="test")
        # reconnecting with Last-Event-ID gives only what was missed, then the end
        with http.stream("GET", f"/v1/jobs/{store_id}/events",
                         headers={"Last-Event-ID": str(first[-1]["id"])}) as stream:
            rest = list(read_events(stream))
    assert [e["data"]["to_state"] for e in first] == ["pending", "queued"]  # type: ignore[index]
    assert [(e["event"], e["data"].get("to_state")) for e in rest] == [  # type: ignore[union-attr]
        ("transition", "cancelled"), ("end", None)]


def test_a_batch_runs_as_one_chord_and_is_summarized(env: Env, spawn: Callable[..., Process],
                                                     worker: Callable[..., Process],
                                                     sample_csv: Path, tmp_path: Path) -> None:
    worker(env)
    api = start_api(spawn, env, make_tokens())
    files = [prices(sample_csv, tmp_path, f"b{i}.csv", salt=10 + i) for i in range(2)]
    with api.client("submitter") as http:
        handles = [open(f, "rb") for f in files]  # noqa: SIM115 - closed below
        try:
            sent = http.post("/v1/batches", data={"name": "two", "portfolio_size": "12"},
                             files=[("files", (f.name, h, "text/csv"))
                                    for f, h in zip(files, handles, strict=True)])
        finally:
            for h in handles:
                h.close()
        assert sent.status_code == 202, sent.text
        batch = sent.json()
        assert sent.headers["location"] == f"/v1/batches/{batch['batch_id']}"
        assert sorted(j["input_name"] for j in batch["jobs"]) == ["b0.csv", "b1.csv"]
        wait_final([j["id"] for j in batch["jobs"]])
        summary = None
        for _ in range(100):
            found = http.get(f"/v1/batches/{batch['batch_id']}").json()
            if found["summary"] is not None:
                summary = found
                break
            import time

            time.sleep(0.2)
        assert summary is not None and summary["name"] == "two"
        assert summary["by_state"] == {"completed": 2}
        assert summary["summary"]["by_state"] == {"completed": 2}
        assert http.get("/v1/batches/nope").status_code == 404


def test_files_of_an_archived_job_say_how_to_restore(api: Api, sample_csv: Path,
                                                      tmp_path: Path) -> None:
    with api.client("submitter") as http:
        job = submit(http, prices(sample_csv, tmp_path, "a.csv"))
        # while it has not run: not ready
        assert http.get(f"/v1/jobs/{job['id']}/files/weights.csv").status_code == 409
        assert http.get(f"/v1/jobs/{job['id']}/files/secrets.txt").status_code == 404
        # once rotated into the archive: gone, with how to restore it
        store.transition(str(job["id"]), JobState.CANCELLED, detail="test")
        store.transition(str(job["id"]), JobState.ARCHIVED, archive_path="archive/x.tar.gz")
        gone = http.get(f"/v1/jobs/{job['id']}/files/weights.csv")
        assert gone.status_code == 410
        assert f"pipeline restore {job['id']}" in gone.json()["error"]["message"]


def test_docs_work_without_internet(api: Api) -> None:
    page = httpx.get(api.url + "/docs").text
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert assets and all(a.startswith("/") for a in assets), assets
    for asset in assets:
        assert httpx.get(api.url + asset).status_code == 200, asset
    document = httpx.get(api.url + "/openapi.json").json()
    assert "/v1/jobs/{job_id}/events" in document["paths"]
    assert "HTTPBearer" in document["components"]["securitySchemes"]
    assert "ErrorBody" in document["components"]["schemas"]


def test_a_public_address_is_refused_while_auth_is_not_in_force(env: Env) -> None:
    # given no token (auth not in force), when the API is asked to bind every address
    done = subprocess.run([sys.executable, "-m", "cli.main", "api", "--host", "0.0.0.0",
                           "--port", "1"], env=env.environ(), cwd=env.root,
                          capture_output=True, text=True, timeout=60)
    # then it refuses, saying why and what to do
    assert done.returncode == 3, done.stderr
    assert "0.0.0.0" in done.stderr and "pipeline token create" in done.stderr


def test_an_admin_manages_tokens_over_http(api: Api) -> None:
    with api.client("admin") as admin:
        # create: the value once, then it works
        made = admin.post("/v1/tokens", json={"role": "viewer", "name": "dash"})
        assert made.status_code == 201 and made.json()["token"].startswith("pot_")
        assert made.headers["cache-control"] == "no-store"
        listed = admin.get("/v1/tokens").json()
        assert "dash" in [t["name"] for t in listed]
        assert all("token" not in t for t in listed)
        bad = admin.post("/v1/tokens", json={"role": "emperor"})
        assert bad.status_code == 422 and "field 'role'" in bad.json()["error"]["message"]
        # revoke
        revoked = admin.post(f"/v1/tokens/{made.json()['id']}/revoke")
        assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    with api.client("operator") as operator:
        assert operator.get("/v1/tokens").status_code == 403
