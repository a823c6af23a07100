"""`pipeline health`, `exporter`, `flower` and `config` as an operator runs them (embedded)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest


def run(env, *args: str, timeout: float = 60, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.main", *args],
                          env={**env.environ(), **extra}, cwd=env.root, capture_output=True,
                          text=True, timeout=timeout)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_health_names_each_missing_part_and_exits_6(env):
    # Given the embedded default (share mounted) with no worker and no beat running
    env.share.mkdir()
    result = run(env, "health")
    # Then health exits 6 with a line per part: the files are fine, no worker, no beat
    assert result.returncode == 6
    assert "broker: ok: connected to the embedded broker" in result.stdout
    assert "database: ok" in result.stdout and "results: ok" in result.stdout
    assert "share: ok:" in result.stdout and " MB free" in result.stdout
    assert "workers: FAIL: 0 worker(s) answered a ping, 1 wanted" in result.stderr
    assert "beat: FAIL: beat has never ticked" in result.stderr
    # And leaving those parts out (a host without them) it is healthy
    assert run(env, "health", "--skip", "workers", "--skip", "beat").returncode == 0


def test_health_reports_a_full_or_missing_share(env, tmp_path):
    env.share.mkdir()
    full = run(env, "health", "--skip", "workers", "--skip", "beat", "--json",
               PIPELINE_HEALTH_MIN_FREE_MB=str(10**12))
    assert full.returncode == 6
    share = json.loads(full.stdout)["parts"]["share"]
    assert not share["ok"] and "below PIPELINE_HEALTH_MIN_FREE_MB" in share["detail"]
    gone = run(env, "health", "--skip", "workers", "--skip", "beat",
               PIPELINE_SHARE_DIR=str(tmp_path / "not-mounted"))
    assert gone.returncode == 6 and "not-mounted is not a folder" in gone.stderr


def test_exporter_serves_prometheus_text_and_writes_a_textfile(env, spawn):
    port = free_port()
    # Given the exporter on a loopback port
    exporter = spawn([sys.executable, "-m", "cli.main", "exporter", "--port", str(port)], env,
                     "exporter")
    exporter.wait_for("pipeline exporter: http://127.0.0.1")
    # When Prometheus scrapes it
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=20) as response:
        text = response.read().decode()
        kind = response.headers["Content-Type"]
    # Then it gets gauges for jobs, queues, durations and workers
    assert kind.startswith("text/plain; version=0.0.4")
    for line in ('pipeline_jobs{state="completed"} 0', 'pipeline_queue_depth{queue="validate"} 0',
                 "pipeline_workers_online 0", "# TYPE pipeline_duration_seconds gauge",
                 'pipeline_up{part="broker"} 1'):
        assert line in text, text
    # And the textfile mode writes the same figures for node_exporter
    target = env.root / "pipeline.prom"
    assert run(env, "exporter", "--textfile", str(target), "--once").returncode == 0
    assert 'pipeline_jobs{state="queued"} 0' in target.read_text()


def test_flower_refuses_an_open_public_address(env):
    # Given no Flower credentials, when Flower is asked to listen on every address
    result = run(env, "flower", "--address", "0.0.0.0")
    # Then it refuses, saying how to set credentials
    assert result.returncode == 2
    assert "without authentication" in result.stderr and "PIPELINE_FLOWER_USER" in result.stderr


@pytest.mark.slow
def test_flower_on_the_embedded_broker_cleans_up_after_itself(env, spawn):
    port = free_port()
    flower = spawn([sys.executable, "-m", "cli.main", "flower", "--port", str(port)],
                   env, "flower")  # loopback without credentials: allowed, with a warning
    control = env.root / "var" / "broker" / "control" / "celeryev.exchange"
    deadline = time.monotonic() + 60
    while not (control.exists() and "celeryev." in control.read_text()):
        assert time.monotonic() < deadline and flower.proc.poll() is None, flower.output()
        time.sleep(0.2)
    # When Flower stops
    assert flower.stop() == 0
    # Then its event queue is no longer bound: nobody would read what lands there
    assert json.loads(control.read_text()) == []


def test_config_masks_flower_and_smtp_secrets(env):
    shown = run(env, "config", "--json", PIPELINE_FLOWER_PASSWORD="very-secret-1",
                PIPELINE_SMTP_PASSWORD="smtp-secret", PIPELINE_WEBHOOK_URL="https://h.example/T/s3cr3tpath")
    values = json.loads(shown.stdout)
    assert values["flower_password"] == values["smtp_password"] == "***"
    assert values["webhook_url"] == "https://h.example/***"
    assert "very-secret-1" not in shown.stdout and "s3cr3tpath" not in shown.stdout
