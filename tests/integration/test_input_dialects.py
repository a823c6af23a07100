"""Price files as users export them, through a real ``celery worker`` on the embedded default:
a European Excel file, a long vendor file with a job parameter, a binary file (issue 14.4,
14.5, 13)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from orchestrator.celery import create_app
from orchestrator.jobs.canvas import Orchestrator
from orchestrator.store.states import JobState
from tests.support import wait_final

pytestmark = pytest.mark.slow


def test_european_long_and_binary_files_through_a_worker(env, worker, sample_csv, tmp_path):
    # Given a worker, the sample as a European Excel saves it, the sample in long form with a
    # job asking to drop late listings, and a file whose bytes are not text after its header
    worker(env)
    orch = Orchestrator(env.settings, app=create_app(env.settings))
    european = tmp_path / "europe.csv"
    european.write_text(sample_csv.read_text().replace(",", ";").replace(".", ","))
    long = tmp_path / "long.csv"
    pd.read_csv(sample_csv, dtype=str).melt(id_vars="date", var_name="Symbol",
                                            value_name="Adj_Close").dropna().to_csv(
        long, index=False)
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"date,A\n2020-01-02,1\n" + bytes(range(256)))
    # When they are submitted
    ids = [orch.submit(european), orch.submit(long, {"late_listing": "drop_ticker"}),
           orch.submit(binary)]
    jobs = wait_final(ids)
    # Then the two exports complete with the same portfolio as the comma file would give
    assert [j.state for j in jobs] == [JobState.COMPLETED, JobState.COMPLETED, JobState.FAILED]
    reports = [json.loads((env.share / "completed" / i / "report.json").read_text())
               for i in ids[:2]]
    assert (reports[0]["quality"]["separator"], reports[0]["quality"]["decimal"]) == (";", ",")
    assert reports[1]["quality"]["layout"] == "long"
    assert reports[0]["portfolio"]["weights"] == reports[1]["portfolio"]["weights"]
    assert (env.share / "completed" / ids[0] / "prices.npz").is_file()
    # and the binary file fails naming the byte, not showing it
    error = json.loads((env.share / "failed" / ids[2] / "error.json").read_text())
    assert error["step"] == "validate"
    assert "not a text CSV file (binary content at byte 20)" in error["message"], error
