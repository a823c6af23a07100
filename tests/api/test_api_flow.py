"""The issue's curl flow against a real uvicorn and real workers: upload, status, live events
to the end, the result files, the history, the list; on the embedded default and on Redis +
PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import Api, make_tokens, prices, start_api
from tests.conftest import Env, Process

pytestmark = [pytest.mark.slow]


def read_events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """Server-Sent Events as dicts: id, event, data (parsed JSON)."""
    event: dict[str, Any] = {}
    for line in response.iter_lines():
        if not line:
            if "data" in event:
                yield event
            event = {}
        elif line.startswith(":"):
            continue
        else:
            key, _, value = line.partition(":")
            value = value.removeprefix(" ")
            event[key] = json.loads(value) if key == "data" else value


def flow(api: Api, sample: Path, tmp_path: Path) -> None:
    prices_csv = prices(sample, tmp_path, "prices.csv", salt=1)
    with api.client("submitter") as http:
        # given a price file, when it is uploaded with parameters
        with open(prices_csv, "rb") as handle:
            sent = http.post("/v1/jobs", files={"file": ("prices.csv", handle, "text/csv")},
                             data={"portfolio_size": "30", "objective": "max_sharpe"})
        # then 202, the job's id and its Location
        assert sent.status_code == 202, sent.text
        job = sent.json()
        assert sent.headers["location"] == f"/v1/jobs/{job['id']}"
        assert job["params"]["portfolio_size"] == 30
        assert job["params"]["objective"] == "max_sharpe"
        # when its events are followed, they come live and end at the final state
        with http.stream("GET", f"/v1/jobs/{job['id']}/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            events = list(read_events(stream))
        kinds = [e["event"] for e in events]
        assert kinds[-1] == "end" and events[-1]["data"]["state"] == "completed", events
        states = [e["data"]["to_state"] for e in events if e["event"] == "transition"]
        assert states[:2] == ["pending", "queued"] and states[-1] == "completed", states
        assert [e["data"]["step"] for e in events if e["event"] == "transition"
                and e["data"]["to_state"] == "processing"] == ["validate", "optimize",
                                                                "archive"]
        # and the job says completed at 100 %
        status = http.get(f"/v1/jobs/{job['id']}").json()
        assert (status["state"], status["progress"]) == ("completed", 100.0)
        # and its weights are 30 holdings summing to 1
        weights = http.get(f"/v1/jobs/{job['id']}/files/weights.csv")
        assert weights.status_code == 200
        assert weights.headers["content-type"].startswith("text/csv")
        rows = weights.text.strip().splitlines()[1:]
        assert len(rows) == 30
        assert abs(sum(float(r.split(",")[1]) for r in rows) - 1) < 1e-6
        for name in ("report.json", "report.html", "quality.json"):
            assert http.get(f"/v1/jobs/{job['id']}/files/{name}").status_code == 200, name
        # and the history matches the events; the list finds it by name
        history = http.get(f"/v1/jobs/{job['id']}/history").json()
        assert [h["to_state"] for h in history] == states
        listed = http.get("/v1/jobs", params={"input_name": "prices.csv"}).json()
        assert [j["id"] for j in listed["jobs"]] == [job["id"]]
    assert api.staged() == []


def test_upload_follow_and_fetch_on_the_embedded_default(
        env: Env, spawn: Callable[..., Process], worker: Callable[..., Process],
        sample_csv: Path, tmp_path: Path) -> None:
    worker(env)
    flow(start_api(spawn, env, make_tokens()), sample_csv, tmp_path)


@pytest.mark.redis
@pytest.mark.postgres
def test_upload_follow_and_fetch_on_redis_and_postgresql(
        servers_env: Env, spawn: Callable[..., Process], worker: Callable[..., Process],
        sample_csv: Path, tmp_path: Path) -> None:
    worker(servers_env)
    flow(start_api(spawn, servers_env, make_tokens()), sample_csv, tmp_path)
