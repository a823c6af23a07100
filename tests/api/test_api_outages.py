"""The broker or the database away: 503 with Retry-After, nothing recorded, nothing claimed,
and the upload's file removed. Each server is the test's own (tests/own_servers.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from orchestrator.store import jobs as store
from tests.api.conftest import Api, prices, start_api
from tests.conftest import Env, Process, _activate
from tests.own_servers import PG_BIN, free_port, socket_url, start_postgres, start_redis

pytestmark = [pytest.mark.slow]


def post(api: Api, path: Path) -> httpx.Response:
    with api.client("submitter") as http, open(path, "rb") as handle:
        return http.post("/v1/jobs", files={"file": (path.name, handle, "text/csv")})


def unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "unavailable"
    assert int(response.headers["retry-after"]) > 0


def nothing_claimed(api: Api) -> None:
    assert api.staged() == []
    assert [p for p in (api.env.share / "processing").iterdir()
            if not p.name.startswith(".")] == []


def test_broker_away(env: Env, spawn: Callable[..., Process], monkeypatch: pytest.MonkeyPatch,
                     sample_csv: Path, tmp_path: Path) -> None:
    # given the API on a Redis broker of its own (and the embedded database)
    port = free_port()
    redis = start_redis(tmp_path / "redis", port)
    try:
        url = f"redis://127.0.0.1:{port}/0"
        env.variables.update({"PIPELINE_BROKER_URL": url, "PIPELINE_RESULT_BACKEND": url})
        _activate(env, monkeypatch)
        api = start_api(spawn, env, {})
        csv = prices(sample_csv, tmp_path, "p.csv")
        # when the broker stops
        redis.stop()
        # then an upload is refused with 503 and nothing is recorded or claimed
        unavailable(post(api, csv))
        assert store.list_jobs(limit=10) == []
        nothing_claimed(api)
    finally:
        redis.stop()


@pytest.mark.skipif(PG_BIN is None, reason="no PostgreSQL server binaries")
def test_database_away(env: Env, spawn: Callable[..., Process],
                       monkeypatch: pytest.MonkeyPatch, sample_csv: Path,
                       tmp_path: Path) -> None:
    # given the API on a PostgreSQL of its own, with tokens (auth in force)
    port = free_port()
    postgres = start_postgres(port)
    try:
        env.variables["PIPELINE_DATABASE_URL"] = socket_url(postgres, port)
        _activate(env, monkeypatch)
        from tests.api.conftest import make_tokens

        api = start_api(spawn, env, make_tokens())
        csv = prices(sample_csv, tmp_path, "p.csv")
        # when the database stops
        postgres.stop()
        # then reads and uploads get 503, and the upload leaves no file anywhere
        with api.client("viewer") as http:
            unavailable(http.get("/v1/jobs"))
        unavailable(post(api, csv))
        nothing_claimed(api)
    finally:
        postgres.stop()
