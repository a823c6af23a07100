"""Signed task messages with a real worker: only holders of a trusted key make it run anything.

Someone who reaches the broker (a leaked Redis password, a host on the broker's network) can
publish any message. With PIPELINE_SECURITY_* set, the worker verifies each task message's
signature against the certificate store and refuses, and logs, every other one: unsigned JSON
from Celery itself or from a plain kombu producer, a message signed by a key outside the store,
and a genuine message changed on the way.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from celery.security.certificate import Certificate
from celery.security.key import PrivateKey
from celery.security.serialization import SecureSerializer
from kombu import Connection, Exchange

from orchestrator.access.keys import signing_keys
from orchestrator.celery import create_app
from orchestrator.jobs.canvas import Orchestrator
from orchestrator.store import jobs as store
from orchestrator.store.states import JobState
from tests.conftest import Env, Process

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]


def role_env(env: Env, keys: Path, role: str) -> Env:
    """The installation's settings plus one role's signing key."""
    return Env(env.root, {**env.variables,
                          "PIPELINE_SECURITY_KEY": str(keys / f"{role}.key"),
                          "PIPELINE_SECURITY_CERTIFICATE": str(keys / f"{role}.crt"),
                          "PIPELINE_SECURITY_CERT_STORE": str(keys / "certs")})


def task_body(job_id: str) -> list[object]:
    """What Celery's protocol 2 carries for pipeline.validate (args, kwargs, embed)."""
    return [[{"job_id": job_id, "batch_id": None, "outcome": "ok", "metrics": {}}], {},
            {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]


def publish(url: str, body: object, step: str = "validate", **options: object) -> None:
    """A plain kombu producer: no Celery, no key, straight onto ``step``'s queue, with a
    ``task`` header naming that step."""
    task_id = str(uuid.uuid4())
    headers = {"lang": "py", "task": f"pipeline.{step}", "id": task_id, "root_id": task_id,
               "parent_id": None, "group": None, "retries": 0, "origin": "forger@elsewhere"}
    with Connection(url) as conn:
        conn.Producer().publish(body, exchange=Exchange(step, type="direct"),
                                routing_key=step, headers=headers, declare=[],
                                **options)


def signed_by(keys: Path, role: str, body: object) -> bytes:
    serializer = SecureSerializer(PrivateKey((keys / f"{role}.key").read_text()),
                                  Certificate((keys / f"{role}.crt").read_text()), None,
                                  "sha256")
    return serializer.serialize(body)


def wait_count(process: Process, text: str, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while process.output().count(text) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    assert process.output().count(text) >= count, process.output()[-4000:]


def test_only_signed_task_messages_run(servers_env: Env, worker: Callable[..., Process],
                                       sample_csv: Path, tmp_path: Path) -> None:
    # given lab keys for the installation, a key pair made elsewhere, and a signing worker
    keys, rogue = tmp_path / "keys", tmp_path / "rogue"
    signing_keys(keys, ("worker", "cli"))
    signing_keys(rogue, ("cli",))
    running = worker(role_env(servers_env, keys, "worker"), concurrency=1)
    broker = servers_env.settings.broker

    # when a publisher without the key submits a job (Celery itself, plain JSON)
    unsigned = Orchestrator(servers_env.settings, app=create_app(servers_env.settings))
    victim = unsigned.submit(sample_csv, {"portfolio_size": 12})
    wait_count(running, "Refusing to deserialize untrusted content of type json", 1)
    # and a plain kombu producer forges pipeline.validate for that job
    publish(broker, task_body(victim), serializer="json")
    # and a key outside the certificate store signs one
    publish(broker, signed_by(rogue, "cli", task_body(victim)),
            content_type="application/data", content_encoding="utf-8")
    # and a genuine signed message for another job is changed on the way to name this one
    genuine = signed_by(keys, "cli", task_body("0" * 32))
    tampered = base64.b64encode(base64.b64decode(genuine).replace(b"0" * 32, victim.encode()))
    publish(broker, tampered, content_type="application/data", content_encoding="utf-8")

    # then the worker refuses and logs each one
    wait_count(running, "Refusing to deserialize untrusted content of type json", 2)
    wait_count(running, "Unknown certificate", 1)
    wait_count(running, "Can't decode message body", 2)
    assert running.proc.poll() is None, "the worker must survive forged messages"
    # and the job did not move: still queued, its history only what the submission wrote
    job = store.get_job(victim)
    assert job.state is JobState.QUEUED and job.attempts == 0
    assert [e.to_state for e in store.history(victim)] == ["pending", "queued"]
    assert not (servers_env.share / "completed" / victim).exists()

    # while a job submitted with a trusted key runs to the end on the same worker
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "submit", str(sample_csv), "--size", "15", "--wait",
         "--json", "--force"], env=role_env(servers_env, keys, "cli").environ(),
        cwd=servers_env.root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    states = json.loads(done.stdout)["states"]
    assert list(states.values()) == ["completed"]


def test_a_signed_message_relabelled_for_another_step_is_refused(
        servers_env: Env, worker: Callable[..., Process], sample_csv: Path,
        tmp_path: Path) -> None:
    # given a signing worker, and a queued job whose own (unsigned) message it refused
    keys = tmp_path / "keys"
    signing_keys(keys, ("worker", "cli"))
    running = worker(role_env(servers_env, keys, "worker"), concurrency=1)
    orchestrator = Orchestrator(servers_env.settings, app=create_app(servers_env.settings))
    victim = orchestrator.submit(sample_csv, {"portfolio_size": 12})
    wait_count(running, "Refusing to deserialize untrusted content of type json", 1)
    # when someone holding a genuine, signed validate message for it (the body the
    # orchestrator composes, signed by a trusted key) relabels it pipeline.archive
    first = orchestrator.job_chain(victim).tasks[0]
    body = [list(first.args), dict(first.kwargs),
            {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    publish(servers_env.settings.broker, signed_by(keys, "cli", body), step="archive",
            content_type="application/data", content_encoding="utf-8")

    # then the archive task refuses it, and says why
    wait_count(running, "the message is for step 'validate', but was delivered to archive", 1)
    assert running.proc.poll() is None
    # and the job is untouched: still queued, its history only what the submission wrote
    job = store.get_job(victim)
    assert (job.state, job.step, job.attempts) == (JobState.QUEUED, None, 0)
    assert [e.to_state for e in store.history(victim)] == ["pending", "queued"]
