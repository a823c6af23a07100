"""The monitoring pieces on their own: percentiles, durations, logs, exporter text, webhook
errors, heartbeats, history remarks, Flower's options."""

from __future__ import annotations

import io
import json
import logging
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import pytest

from orchestrator.monitoring import exporter, flower, heartbeat, notify, stats
from orchestrator.runtime import logs
from orchestrator.settings import Settings
from orchestrator.store import jobs as store

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_percentiles_interpolate_between_ranks():
    assert stats.percentile([], 50) is None
    assert stats.percentile([4.0], 95) == 4.0
    assert stats.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert stats.percentile(list(map(float, range(101))), 95) == 95.0


def _event(seconds: float, source: str | None, target: str, step: str | None = None) -> Any:
    return SimpleNamespace(at=T0 + timedelta(seconds=seconds), from_state=source,
                           to_state=target, step=step)


def test_step_durations_come_from_consecutive_events_and_skip_remarks():
    # Given a job that waited 2 s, validated in 1 s, retried optimize once, then archived
    history = [_event(0, None, "pending"), _event(0, "pending", "queued"),
               _event(2, "queued", "processing", "validate"),
               _event(3, "processing", "processing", "optimize"),
               _event(4, "processing", "queued", "optimize"),
               _event(7, "queued", "processing", "optimize"),
               _event(9, "processing", "processing", "archive"),
               _event(9.5, "processing", "completed", "archive"),
               _event(20, "completed", "completed")]  # a notification remark
    durations = stats.step_durations([history])
    assert durations == {"queued": [2.0, 3.0], "validate": [1.0], "optimize": [1.0, 2.0],
                         "archive": [0.5]}


def _record(message: str, **extra: Any) -> logging.LogRecord:
    record = logging.makeLogRecord({"name": "tasks.base", "levelname": "INFO", "msg": message,
                                    "levelno": logging.INFO, **extra})
    logs.JobFilter().filter(record)
    return record


def test_json_lines_carry_the_job_and_step_of_the_context():
    with logs.job_context("a" * 32, "optimize"):
        inside = json.loads(logs.JsonFormatter().format(_record("solving", rows=5)))
    outside = json.loads(logs.JsonFormatter().format(_record("idle")))
    assert inside["job_id"] == "a" * 32 and inside["step"] == "optimize"
    assert inside["message"] == "solving" and inside["rows"] == 5
    assert outside["job_id"] is None and outside["step"] is None


def test_celerys_own_lines_get_the_job_from_the_task_id():
    record = _record("Task received", data={"id": f"{'b' * 32}.archive.2"})
    assert (record.job_id, record.step) == ("b" * 32, "archive")
    text = logging.Formatter(logs.TEXT_FORMAT).format(record)
    assert f"[job {'b' * 32} archive] Task received" in text
    assert _record("Task", data={"id": "not-a-job-task"}).job == ""


def test_configure_installs_the_format_once(monkeypatch):
    stream = io.StringIO()
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", root.level)
    logs.configure("INFO", "json", stream=stream)
    logs.configure("INFO", "json", stream=stream)
    with logs.job_context("c" * 32, "validate"):
        logging.getLogger("orchestrator.test").info("hello %s", "there")
    [line] = stream.getvalue().splitlines()
    assert json.loads(line)["message"] == "hello there"
    assert len(root.handlers) == 1 and len(root.handlers[0].filters) == 1


def test_exporter_text_is_prometheus_exposition():
    figures = {
        "jobs_by_state": {"completed": 3, "failed": 1}, "finished": {"completed": 3,
                                                                      "failed": 1, "total": 4},
        "window_seconds": 3600.0, "throughput_per_minute": 0.0667, "failure_rate": 0.25,
        "durations": {"validate": {"count": 4, "p50": 0.2, "p95": None}},
        "oldest_queued_seconds": None, "queues": {'va"l': 2}, "workers": ["w1@h"],
        "errors": {"broker": "down"},
    }
    text = exporter.render(figures)
    assert 'pipeline_jobs{state="completed"} 3' in text
    assert 'pipeline_jobs_finished_window{state="total"}' not in text
    assert 'pipeline_duration_seconds{phase="validate",quantile="0.5"} 0.2' in text
    assert 'quantile="0.95"' not in text  # no value, no sample
    assert 'pipeline_queue_depth{queue="va\\"l"} 2' in text
    assert "pipeline_workers_online 1" in text and 'pipeline_up{part="broker"} 0' in text
    assert text.endswith("\n") and all(
        line.startswith("#") or " " in line for line in text.splitlines())


@pytest.fixture
def answering() -> Any:
    replies: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(replies.pop(0))
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/", replies
    server.shutdown()
    server.server_close()


def test_webhook_errors_say_whether_another_attempt_may_help(answering):
    url, replies = answering
    body = {"event": "job.completed", "id": "x.completed.1"}
    replies.extend([204, 503, 404, 429])
    assert notify.post_webhook(url, body, 5) == "HTTP 204"
    for retry in (True, False, True):
        with pytest.raises(notify.DeliveryError) as error:
            notify.post_webhook(url, body, 5)
        assert error.value.retry is retry
    with pytest.raises(notify.DeliveryError, match="URLError") as refused:
        notify.post_webhook("http://127.0.0.1:9/", body, 2)
    assert refused.value.retry


def test_channels_follow_the_settings():
    # (the notifications' backoff is the task policy's: tests/unit/test_policy.py)
    assert notify.channels(Settings()) == []
    both = Settings(webhook_url="http://h/x", smtp_host="mail", smtp_to="a@b.c")
    assert notify.channels(both) == ["webhook", "email"]


def test_heartbeats_and_remarks_are_recorded(env):
    assert heartbeat.last("beat") is None
    before = store.now()
    heartbeat.record("beat", "sent pipeline.recover_stuck")
    heartbeat.record("beat", "sent pipeline.rotate")
    at, detail = heartbeat.last("beat")  # type: ignore[misc]
    assert detail == "sent pipeline.rotate" and before <= at <= store.now()  # no time budget
    store.create_jobs([store.NewJob("d" * 32, "p.csv", "0" * 64, 1, {})])
    store.note("d" * 32, "notified webhook: HTTP 200")
    last = store.history("d" * 32)[-1]
    assert (last.from_state, last.to_state, last.detail) == ("queued", "queued",
                                                             "notified webhook: HTTP 200")
    assert store.get_job("d" * 32).state == "queued"


def test_flower_options_come_from_the_settings(tmp_path):
    settings = Settings(var_dir=tmp_path, flower_user="ops", flower_password="long-enough",
                        flower_basic_auth="a:b1,c:d2", flower_port=5601)
    assert flower.credentials(settings) == ["a:b1", "c:d2", "ops:long-enough"]
    options = flower.options(settings)
    assert options["address"] == "127.0.0.1" and options["port"] == 5601
    assert options["persistent"] is True and options["db"] == str(tmp_path / "flower.db")
    assert "args" in options["tasks_columns"]
    assert flower.is_loopback("127.0.0.1") and flower.is_loopback("::1")
    assert flower.is_loopback("localhost") and not flower.is_loopback("0.0.0.0")


def test_flowers_leftover_event_binding_is_removed(tmp_path):
    (tmp_path / "control").mkdir()
    (tmp_path / "queue").mkdir()
    table = tmp_path / "control" / "celeryev.exchange"
    table.write_text(json.dumps([["#", "", "celeryev.old"], ["#", "", "celeryev.flower"]]))
    (tmp_path / "queue" / "0001_x.celeryev.flower.msg").write_text("{}")
    (tmp_path / "queue" / "0002_x.validate.msg").write_text("{}")
    assert flower.event_queues(tmp_path) == {"celeryev.old", "celeryev.flower"}
    assert flower.drop_event_queues(tmp_path, {"celeryev.flower"}) == 1
    assert flower.event_queues(tmp_path) == {"celeryev.old"}
    assert [p.name for p in (tmp_path / "queue").iterdir()] == ["0002_x.validate.msg"]


def test_the_grafana_dashboard_reads_metrics_the_exporter_writes():
    import re
    from pathlib import Path

    board = json.loads((Path(__file__).resolve().parents[2] / "deploy" / "grafana"
                        / "pipeline-dashboard.json").read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\bpipeline_[a-z_]+", e)}
    figures = {"jobs_by_state": {}, "finished": {}, "window_seconds": 1.0,
               "throughput_per_minute": 0.0, "failure_rate": None, "durations": {},
               "oldest_queued_seconds": None, "queues": {}, "workers": [], "errors": {}}
    written = set(re.findall(r"# TYPE (\S+)", exporter.render(figures)))
    assert used and used <= written, used - written
