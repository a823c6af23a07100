"""What the CLI prints, as a user reads it: whole error messages, help without repetition.

Jobs are recorded straight into the status store (no worker needed to read them back); the
CLI runs as a real process, its output piped as in a script or a log.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

from orchestrator.store import jobs as store
from orchestrator.store.states import JobState

ROOT = Path(__file__).resolve().parents[2]
#: Longer than any table column, with words too long to wrap, a tail a cut would lose, and
#: what rich would take for markup ('[b]') if it were not printed as plain text.
LONG = ("file prices.csv, row 20, column '[b]AMZN': not a date (expected YYYY-MM-DD): "
        "'01/02/2020' - and a very long explanation that goes on, naming "
        "/srv/pipeline/share/input/some/deeply/nested/folder/with/a/long/name/prices.csv "
        "and ending with the advice that matters: Submit with --force to run it anyway. END")


def run(env, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], env=env.environ(),
                          cwd=env.root, capture_output=True, text=True, timeout=120)


def squeeze(text: str) -> str:
    """The text without table borders and line breaks: what is left when wrapping is undone."""
    for border in "│┃║|":
        text = text.replace(border, "")
    return "".join(text.split())


def failed_job(job_id: str) -> str:
    store.create_jobs([store.NewJob(job_id, "prices.csv", "0" * 64, 10, {})])
    store.transition(job_id, JobState.PROCESSING, step="validate",
                     detail=f"a long detail: {LONG}")
    store.transition(job_id, JobState.FAILED, step="validate", detail=LONG,
                     error={"step": "validate", "type": "DataError", "message": LONG})
    return job_id


def test_status_list_and_history_show_the_whole_error(env):
    # Given a job that failed with a message longer than any column
    job_id = failed_job("a1" * 16)
    whole = squeeze(LONG)
    # Then status, list and history each show all of it (wrapped, not cut)
    for args in (("status", job_id[:8]), ("list",), ("history", job_id[:8])):
        shown = run(env, *args)
        assert shown.returncode == 0, shown.stderr
        assert whole in squeeze(shown.stdout), (args, shown.stdout)
        assert "…" not in shown.stdout, (args, shown.stdout)
    # And --json always carries it whole
    listed = json.loads(run(env, "list", "--json").stdout)
    assert listed[0]["error"]["message"] == LONG
    history = json.loads(run(env, "history", job_id, "--json").stdout)
    assert history[-1]["detail"] == LONG


def test_status_follow_of_an_ended_job_prints_the_whole_reason(env):
    job_id = failed_job("b2" * 16)
    shown = run(env, "status", job_id, "--follow")
    assert shown.returncode == 7
    assert whole_line(shown.stdout, job_id) == f"{job_id} failed: {LONG}"


def whole_line(text: str, start: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(start))


def test_the_exit_code_table_is_shown_once_under_pipeline_help(env):
    top = run(env, "--help").stdout
    assert top.count("Exit codes:") == 1 and "130  interrupted" in top
    for command in (("submit",), ("status",), ("list",), ("health",), ("rotate",),
                    ("token", "create"), ("db", "upgrade")):
        text = run(env, *command, "--help").stdout
        assert "130  interrupted" not in text, command
        assert "Exit codes: see `pipeline --help`" in text, (command, text)


def test_flower_is_installed_with_the_project():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert any(d.replace(" ", "").startswith("flower>=") for d in project["dependencies"])
    # the old extra stays, empty, so `pip install '.[flower]'` (and .ci/run) keep working
    assert project["optional-dependencies"]["flower"] == []


def test_submit_wait_on_a_failed_job_prints_the_reason(env, worker, tmp_path):
    # Given a worker and a file whose dates cannot be read
    worker(env)
    bad = tmp_path / "bad_dates.csv"
    bad.write_text("date,A\n" + "".join(f"01/{d:02d}/2020,{d}\n" for d in range(1, 40)))
    # When it is submitted and waited for
    done = run(env, "submit", str(bad), "--wait")
    # Then it exits 7 and says which job failed, in which step, and why: the stored reason whole
    assert done.returncode == 7, done.stdout + done.stderr
    job = store.list_jobs()[0]
    message = job.error["message"]
    assert "bad_dates.csv" in message
    assert f"job {job.id} failed in validate: {message}" in done.stdout.splitlines()


def test_submit_of_a_fifo_is_refused_saying_so_not_dropped_in_silence(env, tmp_path):
    # given a FIFO where a price file should be (it would block whoever opens it)
    import os

    fifo = tmp_path / "prices.csv"
    os.mkfifo(fifo)
    # when it is submitted, then it is refused naming the file, exit 5, and nothing recorded
    result = run(env, "submit", str(fifo))
    assert result.returncode == 5, (result.returncode, result.stdout, result.stderr)
    assert "prices.csv" in result.stderr and "not a regular file" in result.stderr
    assert store.list_jobs() == []
