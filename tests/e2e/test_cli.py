"""The CLI as a user runs it: real processes, real worker, the embedded default."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def run(env, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], env=env.environ(),
                          cwd=env.root, capture_output=True, text=True, timeout=timeout)


def celery(env, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "celery", "-A", "orchestrator", *args],
                          env=env.environ(), cwd=env.root, capture_output=True, text=True,
                          timeout=60)


def test_demo_runs_sample_jobs_to_completion(env):
    # When a user runs the demo on a fresh folder
    result = run(env, "demo", "--jobs", "2", timeout=300)
    # Then it exits 0 and shows completed portfolios whose files exist
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Demo results" in result.stdout and "completed" in result.stdout
    assert len(list((env.share / "completed").glob("*/weights.csv"))) == 2


def test_submit_wait_then_read_it_back_as_json(env, worker, sample_csv: Path, tmp_path: Path):
    # Given a worker
    worker(env)
    # When a file is submitted and waited for
    done = run(env, "submit", str(sample_csv), "--size", "15", "--wait", "--json")
    assert done.returncode == 0, done.stderr
    submitted = json.loads(done.stdout)
    job_id = submitted["jobs"][0]
    assert submitted["states"] == {job_id: "completed"}
    # Then status, history and list agree, by a short prefix too
    status = json.loads(run(env, "status", job_id[:8], "--json").stdout)
    assert status["state"] == "completed" and status["result"]["holdings"] == 15
    history = json.loads(run(env, "history", job_id[:8], "--json").stdout)
    assert [e["to_state"] for e in history] == ["pending", "queued", "processing", "processing",
                                               "processing", "completed"]
    listed = json.loads(run(env, "list", "--state", "completed", "--json").stdout)
    assert [j["id"] for j in listed] == [job_id]
    # And the same group answers through celery
    via_celery = celery(env, "pipeline", "list", "--json")
    assert json.loads(via_celery.stdout)[0]["id"] == job_id
    # And the plain celery commands see the worker
    assert "1 node online" in celery(env, "status").stdout


def test_exit_codes_name_what_went_wrong(env, worker, sample_csv: Path, tmp_path: Path):
    worker(env)
    bad = tmp_path / "bad.csv"
    bad.write_text("date,A\n")
    # A job that fails: --wait exits 7
    failed = run(env, "submit", str(bad), "--wait")
    assert failed.returncode == 7, failed.stdout + failed.stderr
    # No such job: 4
    missing = run(env, "status", "ffffffff")
    assert missing.returncode == 4 and "no job" in missing.stderr and "ffffffff" in missing.stderr
    # Retrying a completed job: 8
    good = run(env, "submit", str(sample_csv), "--wait", "--json")
    job_id = json.loads(good.stdout)["jobs"][0]
    conflict = run(env, "retry", job_id)
    assert conflict.returncode == 8 and "completed" in conflict.stderr
    # A bad setting: 3, naming the variable
    env.variables["PIPELINE_PORTFOLIO_SIZE"] = "500"
    config = run(env, "list")
    assert config.returncode == 3 and "PIPELINE_PORTFOLIO_SIZE" in config.stderr
    # Bad usage: 2
    del env.variables["PIPELINE_PORTFOLIO_SIZE"]
    assert run(env, "submit", str(sample_csv), "--size", "5").returncode == 2


def test_submit_sets_the_estimation_options_a_job_file_could_already_set(env, sample_csv: Path):
    # given a size default from the settings
    env.variables["PIPELINE_PORTFOLIO_SIZE"] = "30"
    # when a user submits with options that `submit` did not have before
    done = run(env, "submit", str(sample_csv), "--covariance", "sample", "--expected-returns",
               "ewma", "--ewma-span", "60", "--returns", "log", "--json")
    assert done.returncode == 0, done.stderr
    job_id = json.loads(done.stdout)["jobs"][0]
    # then the job holds them, and what was not given is the settings' and the model's default
    params = json.loads(run(env, "status", job_id, "--json").stdout)["params"]
    assert (params["covariance"], params["expected_returns"], params["ewma_span"],
            params["returns"]) == ("sample", "ewma", 60, "log")
    assert (params["portfolio_size"], params["objective"]) == (30, "min_volatility")


def test_a_bound_is_refused_in_the_same_words_on_the_command_line_and_in_a_job_file(
        env, sample_csv: Path, tmp_path: Path):
    words = "Input should be greater than or equal to 10 (got 5)"
    # on the command line: a usage error (2) naming the option
    cli = run(env, "submit", str(sample_csv), "--size", "5")
    assert cli.returncode == 2 and "'--size'" in cli.stderr and words in cli.stderr, cli.stderr
    # in a job file: refused (5), not "submitted", naming the field, in the same words
    job = tmp_path / "job.json"
    (tmp_path / "prices.csv").write_bytes(sample_csv.read_bytes())
    job.write_text(json.dumps({"input_file": "prices.csv", "portfolio_size": 5}))
    refused = run(env, "submit", str(job))
    assert refused.returncode == 5, refused.stdout + refused.stderr
    assert "submitted" not in refused.stdout
    assert f"refused: file job.json: field 'portfolio_size': {words}" in refused.stderr
