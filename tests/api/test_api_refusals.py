"""Every bad request of the issue's part 4 gets a clear 4xx with a stable code, and leaves
nothing recorded and no file behind; 401 and 403 as HTTP means them, refusals audited."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest

from orchestrator.access import audit
from orchestrator.errors import ParameterError
from orchestrator.jobs.jobspec import read_job_file
from orchestrator.paths import Share
from orchestrator.settings import get_settings
from orchestrator.store import jobs as store
from tests.api import multipart as mp
from tests.api.conftest import Api, make_tokens, prices, start_api
from tests.conftest import Env, Process

pytestmark = [pytest.mark.slow]


def upload(http: httpx.Client, path: Path, name: str | None = None, **fields: str,
           ) -> httpx.Response:
    with open(path, "rb") as handle:
        return http.post("/v1/jobs", files={"file": (name or path.name, handle, "text/csv")},
                         data=fields)


def raw(http: httpx.Client, data: bytes | object) -> httpx.Response:
    return http.post("/v1/jobs", content=data, headers={"Content-Type": mp.CONTENT_TYPE})


def error_of(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code, response.text
    return str(response.json()["error"]["message"])


def nothing_left(api: Api) -> None:
    assert store.list_jobs(limit=10) == []
    assert api.staged() == []
    assert [p.name for p in (api.env.share / "processing").iterdir()
            if not p.name.startswith(".")] == []


def test_tokens_and_roles_as_http_means_them(env: Env, spawn: Callable[..., Process],
                                             sample_csv: Path) -> None:
    # given auth in force (tokens exist), reads too (an admin set viewers to token)
    api = start_api(spawn, env, make_tokens(viewers="token"))
    with api.client(None) as anonymous:
        # when no token is sent: 401, with the scheme to use
        refused = anonymous.get("/v1/jobs")
        assert "Bearer" in error_of(refused, 401, "unauthorized")
        assert refused.headers["www-authenticate"] == "Bearer"
        # an unknown token: 401
        fake = "pot_00000000_" + "x" * 43
        assert anonymous.get("/v1/jobs", headers={"Authorization": f"Bearer {fake}"}
                             ).status_code == 401
        # a cookie does not authorize a POST (only the page's forms, with their CSRF field)
        anonymous.cookies.set("pipeline_token", api.tokens["admin"])
        error_of(upload(anonymous, sample_csv), 401, "unauthorized")
    # a viewer reads but may not submit: 403
    with api.client("viewer") as viewer:
        assert viewer.get("/v1/jobs").status_code == 200
        assert "submitter" in error_of(upload(viewer, sample_csv), 403, "forbidden")
    # a submitter may not cancel: 403 (for an unknown job too: the role is checked first)
    with api.client("submitter") as submitter:
        error_of(submitter.post("/v1/jobs/abc/cancel"), 403, "forbidden")
    # then each refusal is in the audit log, with the action
    refusals = [e for e in audit.recent(20) if e["outcome"] == "refused"]
    actions = {e["action"] for e in refusals}
    assert {"api GET /v1/jobs", "api POST /v1/jobs", "api POST /v1/jobs/{job_id}/cancel"} \
        <= actions, refusals
    # and the request log names each token by its id, never by its value
    log = api.process.output()
    assert f"token={api.tokens['viewer'].split('_')[1]}" in log
    assert not any(token in log for token in api.tokens.values())
    nothing_left(api)


def test_bad_uploads_are_refused_and_leave_nothing(api: Api, sample_csv: Path,
                                                   tmp_path: Path) -> None:
    with api.client("submitter") as http:
        # empty
        empty = tmp_path / "empty.csv"
        empty.write_bytes(b"")
        assert "empty" in error_of(upload(http, empty), 400, "empty_file")
        # not a CSV (a PNG named .csv)
        png = tmp_path / "picture.csv"
        png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 10)
        assert "picture.csv" in error_of(upload(http, png), 422, "wrong_content")
        # a job file is not uploaded: it names a file on the share
        assert "input_file" in error_of(upload(http, sample_csv, "job.json"), 415,
                                        "unsupported_file")
        # filenames: a path, a NUL, 300 characters
        data = sample_csv.read_bytes()
        for name, why in (("../../etc/cron.d/x.csv", "path"), ("in/../../x.csv", "path"),
                          ("/etc/x.csv", "path"), ("dir\\x.csv", "path"),
                          ("a\x00b.csv", "NUL"), ("x" * 296 + ".csv", "300 bytes")):
            sent = raw(http, mp.body(mp.part("file", data, name)))
            assert why in error_of(sent, 400, "bad_filename"), name
        # a bad parameter: 422 naming the field, in the words a job file gets
        bad = error_of(upload(http, sample_csv, portfolio_size="3"), 422, "invalid_parameter")
        job_file = api.env.share / "job.json"
        job_file.write_text(json.dumps({"input_file": "x.csv", "portfolio_size": 3}))
        with pytest.raises(ParameterError) as share_words:
            read_job_file(job_file, Share(api.env.share), get_settings())
        assert share_words.value.reason in bad
        assert "field 'portfolio_size'" in bad
        unknown = error_of(upload(http, sample_csv, sizee="30"), 422, "invalid_parameter")
        assert "field 'sizee'" in unknown
        typed = error_of(upload(http, sample_csv, max_weight="heavy"), 422,
                         "invalid_parameter")
        assert "field 'max_weight'" in typed and "'heavy'" in typed
        # not multipart nor JSON
        error_of(http.post("/v1/jobs", content=b"x", headers={"Content-Type": "text/plain"}),
                 415, "unsupported_media_type")
        # an unknown job
        assert "no job nope" in error_of(http.get("/v1/jobs/nope"), 404, "not_found")
        error_of(http.get("/v1/jobs/nope/files/weights.csv"), 404, "not_found")
        error_of(http.get("/v1/jobs/nope/events"), 404, "not_found")
    nothing_left(api)


def test_too_large_is_refused_while_streaming(env: Env, spawn: Callable[..., Process],
                                              sample_csv: Path) -> None:
    # given a cap of 100 kB, below the sample's 533 kB
    env.variables["PIPELINE_API_MAX_UPLOAD_BYTES"] = "100000"
    api = start_api(spawn, env, make_tokens())
    body = mp.body(mp.part("file", sample_csv.read_bytes(), "big.csv"))
    with api.client("submitter") as http:
        # with a Content-Length: refused before reading
        error_of(raw(http, body), 413, "too_large")
        # chunked, no Content-Length: refused once 100 kB arrived
        assert "100,000 bytes" in error_of(raw(http, mp.chunks(body)), 413, "too_large")
    nothing_left(api)


def test_a_client_that_hangs_up_mid_upload_leaves_nothing(api: Api, sample_csv: Path) -> None:
    # when a client sends half of an upload and goes away
    address = urlparse(api.url)
    body = mp.body(mp.part("file", sample_csv.read_bytes(), "half.csv"))
    mp.send_half_and_hang_up(address.hostname or "", address.port or 0, "/v1/jobs",
                             api.tokens["submitter"], body)
    # then the server saw the request end, and recorded nothing, and removed the file
    deadline = time.monotonic() + 20
    while "POST /v1/jobs" not in api.process.output():
        assert time.monotonic() < deadline, api.process.output()
        time.sleep(0.1)
    nothing_left(api)
    # and the next upload works
    with api.client("submitter") as http:
        assert http.post("/v1/jobs", content=body,
                         headers={"Content-Type": mp.CONTENT_TYPE}).status_code == 202


def test_duplicates_follow_the_share_rule_and_force_overrides(api: Api, sample_csv: Path,
                                                             tmp_path: Path) -> None:
    csv = prices(sample_csv, tmp_path, "same.csv", salt=7)
    with api.client("submitter") as http:
        first = upload(http, csv, portfolio_size="25")
        assert first.status_code == 202
        # the same content and parameters again: 409 naming the original
        again = upload(http, csv, portfolio_size="25")
        error_of(again, 409, "duplicate")
        assert again.json()["error"]["original_job"] == first.json()["id"]
        assert "force=true" in again.json()["error"]["message"]
        # other parameters are another job
        assert upload(http, csv, portfolio_size="26").status_code == 202
        # force runs it anyway
        forced = upload(http, csv, portfolio_size="25", force="true")
        assert forced.status_code == 202 and forced.json()["id"] != first.json()["id"]


def test_a_file_on_the_share_is_named_by_json_and_resolved_inside_it(api: Api,
                                                                     sample_csv: Path) -> None:
    inside = prices(sample_csv, api.env.share / "input", "named.csv", salt=3)
    with api.client("submitter") as http:
        sent = http.post("/v1/jobs", json={"input_file": "input/named.csv",
                                           "portfolio_size": 15})
        assert sent.status_code == 202, sent.text
        assert sent.json()["input_name"] == "named.csv" and not inside.exists()  # claimed
        for outside in ("../../../etc/passwd", "/etc/passwd", "input/missing.csv"):
            error_of(http.post("/v1/jobs", json={"input_file": outside}), 422,
                     "invalid_parameter")
        taken = f"processing/{sent.json()['id']}/input/named.csv"
        assert "processing/" in error_of(http.post("/v1/jobs", json={"input_file": taken}),
                                         422, "invalid_parameter")
        bad = error_of(http.post("/v1/jobs", json={"input_file": "input/x.csv",
                                                   "objective": "max_fun"}), 422,
                       "invalid_parameter")
        assert "field 'input_file'" in bad or "does not exist" in bad


def test_a_revoked_token_is_refused(env: Env, spawn: Callable[..., Process]) -> None:
    # given verified tokens not remembered (PIPELINE_API_AUTH_CACHE_SECONDS=0), reads guarded
    from orchestrator.access.auth import revoke

    env.variables["PIPELINE_API_AUTH_CACHE_SECONDS"] = "0"
    api = start_api(spawn, env, make_tokens(viewers="token"))
    with api.client("viewer") as http:
        assert http.get("/v1/jobs").status_code == 200
        # when the token is revoked, then the next request is refused
        revoke(api.tokens["viewer"].split("_")[1], "tests")
        error_of(http.get("/v1/jobs"), 401, "unauthorized")
