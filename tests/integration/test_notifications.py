"""Notifications when jobs end: a webhook on loopback and a small SMTP server, real worker."""

from __future__ import annotations

import email
import email.policy
import json
import socketserver
import statistics
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from orchestrator.celery import create_app
from orchestrator.jobs.canvas import Orchestrator
from orchestrator.settings import reset_settings
from orchestrator.store import jobs as store
from orchestrator.store.states import JobState
from tests.support import wait_final

pytestmark = pytest.mark.slow
SHORT_CSV = "date,AAA,BBB\n2020-01-01,1,2\n2020-01-02,1.1,2.1\n"


class Receiver:
    """A webhook receiver on a free loopback port, recording every POST."""

    def __init__(self) -> None:
        posts: list[dict[str, Any]] = []
        self.posts = posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                posts.append({"body": json.loads(body), "key": self.headers["Idempotency-Key"]})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _use(env: Any, monkeypatch: pytest.MonkeyPatch, **variables: str) -> None:
    for key, value in variables.items():
        env.variables[key] = value
        monkeypatch.setenv(key, value)
    reset_settings()


def _submit(orch: Orchestrator, sample: Path, short: Path) -> list[str]:
    return [orch.submit(sample, {"portfolio_size": 10 + i}) for i in range(2)] + [
        orch.submit(short, {})]


def _notes(job_id: str) -> list[str]:
    return [e.detail or "" for e in store.history(job_id) if e.from_state == e.to_state
            and e.step is None]


def _wait(condition: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def _seconds(job_ids: list[str]) -> float:
    jobs = [store.get_job(j) for j in job_ids]
    return statistics.median((j.finished_at - j.created_at).total_seconds() for j in jobs)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    yield made
    made.stop()


def test_a_webhook_gets_one_post_per_finished_job_and_a_dead_one_delays_nothing(
        env, worker, monkeypatch, sample_csv, tmp_path, receiver):
    # Given a worker whose settings name a webhook on loopback, retrying once when it fails
    _use(env, monkeypatch, PIPELINE_WEBHOOK_URL=receiver.url, PIPELINE_NOTIFY_RETRIES="1",
         PIPELINE_WEBHOOK_TIMEOUT="2")
    worker(env)
    short = tmp_path / "short.csv"
    short.write_text(SHORT_CSV)
    orch = Orchestrator(env.settings, app=create_app(env.settings))
    # When two good jobs and a bad one run
    first = _submit(orch, sample_csv, short)
    wait_final(first)
    _wait(lambda: len(receiver.posts) >= 3)
    time.sleep(1.5)  # any extra POST would arrive by now
    # Then the receiver got exactly one POST per job, saying how it ended
    assert sorted(p["body"]["job_id"] for p in receiver.posts) == sorted(first)
    states = {p["body"]["job_id"]: p["body"]["state"] for p in receiver.posts}
    assert states == {first[0]: "completed", first[1]: "completed", first[2]: "failed"}
    failed = next(p["body"] for p in receiver.posts if p["body"]["state"] == "failed")
    assert failed["error"]["step"] == "validate" and failed["input_name"] == "short.csv"
    assert {p["key"] for p in receiver.posts} == {f"{j}.{states[j]}.1" for j in first}
    # And each job's history records the delivery, without changing the job
    for job_id in first:
        _wait(lambda job_id=job_id: _notes(job_id))
        assert _notes(job_id) == ["notified webhook: HTTP 200"]
    assert store.get_job(first[0]).state is JobState.COMPLETED
    # When the receiver is down and the same work runs again
    receiver.stop()
    second = _submit(orch, sample_csv, short)
    wait_final(second)
    # Then the jobs finish as fast as with a live receiver
    assert _seconds(second) <= 2 * _seconds(first) + 1.0, (_seconds(first), _seconds(second))
    assert [store.get_job(j).state for j in second] == [
        JobState.COMPLETED, JobState.COMPLETED, JobState.FAILED]
    # And the failed deliveries are retried once, then recorded
    for job_id in second:
        _wait(lambda job_id=job_id: _notes(job_id))
        [note] = _notes(job_id)
        assert note.startswith("webhook notification failed after 2 attempt(s): URLError")


class _SMTP(socketserver.StreamRequestHandler):
    """Just enough SMTP for smtplib: every message lands in ``server.mails``."""

    def handle(self) -> None:
        self.wfile.write(b"220 test ESMTP\r\n")
        lines: list[str] | None = None
        for raw in self.rfile:
            line = raw.decode().rstrip("\r\n")
            if lines is not None:
                if line == ".":
                    self.server.mails.append("\n".join(lines))  # type: ignore[attr-defined]
                    lines = None
                    self.wfile.write(b"250 queued\r\n")
                else:
                    lines.append(line)
                continue
            verb = line[:4].upper()
            if verb == "DATA":
                lines = []
                self.wfile.write(b"354 go on\r\n")
            elif verb == "QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:
                self.wfile.write(b"250 ok\r\n")


def test_an_email_goes_out_once_for_a_finished_job(env, worker, monkeypatch, sample_csv):
    # Given a small SMTP server on loopback named in the settings
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _SMTP)
    server.mails = []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        _use(env, monkeypatch, PIPELINE_SMTP_HOST="127.0.0.1",
             PIPELINE_SMTP_PORT=str(server.server_address[1]),
             PIPELINE_SMTP_TO="ops@example.com, lead@example.com")
        worker(env)
        # When a job completes
        job_id = Orchestrator(env.settings, app=create_app(env.settings)).submit(sample_csv, {})
        wait_final([job_id])
        _wait(lambda: _notes(job_id))
        time.sleep(1.0)
    finally:
        server.shutdown()
        server.server_close()
    # Then one mail went to both recipients, saying what ended and where its results are
    [raw] = server.mails  # type: ignore[attr-defined]
    mail = email.message_from_string(raw, policy=email.policy.default)
    assert mail["Subject"] == f"[pipeline] job {job_id[:12]} completed: {sample_csv.name}"
    assert mail["To"] == "ops@example.com, lead@example.com"
    text = mail.get_content()
    assert f"Folder: {env.share / 'completed' / job_id}" in text
    assert _notes(job_id) == ["notified email: mail to 2 of 2 recipient(s)"]


def test_no_notification_setting_means_no_task(env, monkeypatch):
    from orchestrator.monitoring import notify

    sent: list[Any] = []
    monkeypatch.setattr("orchestrator.celery.app.send_task", lambda *a, **k: sent.append(a))
    notify.job_ended("nothing-configured")
    assert sent == []


def test_a_broker_that_refuses_the_notification_does_not_raise(env, monkeypatch):
    from orchestrator.monitoring import notify

    _use(env, monkeypatch, PIPELINE_WEBHOOK_URL="http://127.0.0.1:9/hook")

    def refuse(*_: Any, **__: Any) -> None:
        raise ConnectionError("broker away")

    monkeypatch.setattr("orchestrator.celery.app.send_task", refuse)
    notify.job_ended("any")  # logged, not raised: the job has ended whatever happens here

