"""The CLI's remote mode: with PIPELINE_API_URL and a token, submit, status, list, history,
cancel and retry go through the API (no database reachable from the CLI), with the output
and exit codes the local CLI gives."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cli.exit_codes import Exit
from tests.api.conftest import Api, prices

pytestmark = [pytest.mark.slow]


def pipeline(api: Api, *args: str, role: str = "submitter", local: bool = False,
             ) -> subprocess.CompletedProcess[str]:
    env = api.env.environ()
    env.pop("PIPELINE_TOKEN", None)
    if not local:  # a user with a token and no database: the URL below leads nowhere
        env.update({"PIPELINE_API_URL": api.url, "PIPELINE_TOKEN": api.tokens[role],
                    "PIPELINE_DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none"})
    else:
        env["PIPELINE_TOKEN"] = api.tokens[role]
    code = "import sys; from cli.main import main; sys.argv[0] = 'pipeline'; main()"
    return subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=api.env.root,
                          capture_output=True, text=True, timeout=120)


def test_remote_commands_answer_as_the_local_ones(api: Api, sample_csv: Path,
                                                  tmp_path: Path) -> None:
    csv = prices(sample_csv, tmp_path, "remote.csv", salt=5)
    # submit through the API
    sent = pipeline(api, "submit", str(csv), "--size", "25")
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.startswith("submitted job "), sent.stdout
    job_id = sent.stdout.split()[-1]
    # the same again: not run, naming the original (exit 0, as locally)
    again = pipeline(api, "submit", str(csv), "--size", "25")
    assert again.returncode == 0, again.stderr
    assert f"same content and parameters as job {job_id}" in again.stdout
    assert "Submit with --force" in again.stdout
    # status, list and history by a prefix, as the local CLI prints them
    for args in (["status", job_id[:8]], ["history", job_id[:8]], ["list", "--json"],
                 ["history", job_id, "--json"]):
        remote, local = pipeline(api, *args), pipeline(api, *args, local=True)
        assert remote.returncode == local.returncode == 0, (args, remote.stderr, local.stderr)
        if args[0] != "status":  # status shows the job's folder only to those on the share
            assert remote.stdout == local.stdout, args
    assert "remote.csv" in pipeline(api, "status", job_id[:8]).stdout
    # cancel: a submitter may not (exit 10), an operator may; twice is a conflict (exit 8)
    refused = pipeline(api, "cancel", job_id)
    assert refused.returncode == Exit.FORBIDDEN and refused.stderr.startswith("error: ")
    done = pipeline(api, "cancel", job_id, role="operator")
    assert (done.returncode, done.stdout) == (0, f"job {job_id} cancelled\n")
    assert pipeline(api, "cancel", job_id, role="operator").returncode == Exit.CONFLICT
    retried = pipeline(api, "retry", job_id, role="operator")
    assert retried.stdout == f"job {job_id} queued again (attempt 1)\n", retried.stderr
    # unknown job: exit 4, as locally
    assert pipeline(api, "status", "ffffffff").returncode == Exit.NOT_FOUND
    assert pipeline(api, "status", "ffffffff", local=True).returncode == Exit.NOT_FOUND


def test_an_api_that_does_not_answer_is_unavailable(api: Api) -> None:
    api.url = "http://127.0.0.1:9"
    gone = pipeline(api, "list")
    assert gone.returncode == Exit.UNAVAILABLE and "does not answer" in gone.stderr
