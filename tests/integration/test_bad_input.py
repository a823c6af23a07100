"""Every kind of bad input ends as a failed job with a precise reason, through the real watcher
and worker; the good file dropped among them still completes."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.store import jobs as store
from orchestrator.store.states import FINAL, JobState

pytestmark = pytest.mark.slow


def _edit_cell(text: str, line: int, column: str, value: str) -> str:
    lines = text.splitlines()
    header = lines[0].split(",")
    cells = lines[line - 1].split(",")
    cells[header.index(column)] = value
    lines[line - 1] = ",".join(cells)
    return "\n".join(lines) + "\n"


def _few_tickers(text: str) -> str:
    return "\n".join(",".join(row.split(",")[:9]) for row in text.splitlines()) + "\n"


def _csv_cases(sample: str) -> dict[str, tuple[bytes, list[str]]]:
    """file name -> (content, words the failure reason must contain)."""
    header = sample.splitlines()[0]
    return {
        "empty.csv": (b"", ["empty.csv", "empty"]),
        "header_only.csv": ((header + "\n").encode(), ["header_only.csv", "no data rows"]),
        "no_date.csv": (sample.replace("date,", "day,", 1).encode(), ["no date column"]),
        "bad_date.csv": (sample.replace("2018-01-05", "2018-13-45", 1).encode(),
                         ["bad_date.csv", "row 5", "2018-13-45"]),
        "text_cell.csv": (_edit_cell(sample, 20, "AMZN", "twelve").encode(),
                          ["row 20", "AMZN", "twelve"]),
        "zero_price.csv": (_edit_cell(sample, 30, "CAT", "0").encode(), ["row 30", "CAT"]),
        "negative.csv": (_edit_cell(sample, 31, "HD", "-5.5").encode(), ["row 31", "HD"]),
        "few_tickers.csv": (_few_tickers(sample).encode(), ["usable tickers"]),
        "binary.csv": (bytes(range(256)) * 40, ["binary.csv", "not a text CSV"]),
    }


def _job_cases(share: Path, sample_name: str) -> dict[str, tuple[str, list[str]]]:
    good = {"input_file": sample_name}
    return {
        "size5.json": (json.dumps({**good, "portfolio_size": 5}), ["portfolio_size", "10"]),
        "size500.json": (json.dumps({**good, "portfolio_size": 500}), ["portfolio_size", "100"]),
        "objective.json": (json.dumps({**good, "objective": "max_fun"}), ["objective", "max_fun"]),
        "infeasible.json": (json.dumps({**good, "portfolio_size": 10, "max_weight": 0.05}),
                            ["max_weight", "at least 0.1"]),
        "syntax.json": ('{"input_file": "x.csv",, }', ["syntax.json", "JSON syntax error",
                                                       "row 1"]),
        "no_input.json": (json.dumps({"portfolio_size": 20}), ["input_file", "Field required"]),
        "wrong_type.json": (json.dumps({**good, "portfolio_size": "twenty"}),
                            ["portfolio_size", "twenty"]),
        "escape.json": (json.dumps({"input_file": "../../etc/passwd"}), ["outside the share"]),
        "absolute.json": (json.dumps({"input_file": "/etc/passwd"}), ["absolute"]),
        "symlink.json": (json.dumps({"input_file": "link_out.csv"}),
                         ["link_out.csv", "symbolic link", "never followed"]),
        "missing.json": (json.dumps({"input_file": "nowhere.csv"}), ["nowhere.csv",
                                                                     "does not exist"]),
    }


def test_each_bad_input_fails_with_its_reason_and_the_good_file_completes(
        env, worker, spawn: Callable, sample_csv: Path, tmp_path: Path):
    # Given a worker and the watcher running
    worker(env)
    spawn([sys.executable, "-m", "cli.main", "watch"], env, "watch")
    sample = sample_csv.read_text()
    inbox = env.share / "input"
    inbox.mkdir(parents=True, exist_ok=True)
    expected: dict[str, list[str]] = {}
    # When bad CSVs, bad job files, a link out of the share and one good file are dropped
    for name, (content, words) in _csv_cases(sample).items():
        (tmp_path / name).write_bytes(content)
        env.drop(tmp_path / name)
        expected[name] = words
    shared = env.share / "data"
    shared.mkdir()
    (shared / "prices.csv").write_text(sample)
    os.symlink("/etc/passwd", inbox / "link_out.csv")
    for name, (content, words) in _job_cases(env.share, "../data/prices.csv").items():
        (tmp_path / name).write_text(content)
        env.drop(tmp_path / name)
        expected[name] = words
    env.drop(sample_csv, "good.csv")
    # Then every file became a job, the good one completed and each bad one failed saying why
    jobs = _wait_jobs(len(expected) + 2, timeout=120)
    by_name = {j.input_name: j for j in jobs}
    assert by_name["good.csv"].state is JobState.COMPLETED, by_name["good.csv"].error
    assert by_name["link_out.csv"].state is JobState.FAILED
    assert "symbolic link" in by_name["link_out.csv"].error["message"]
    for name, words in expected.items():
        job = by_name[name]
        assert job.state is JobState.FAILED, (name, job.state)
        message = job.error["message"]
        assert all(w in message for w in words), (name, message)
        saved = json.loads((env.share / "failed" / job.id / "error.json").read_text())
        assert saved["message"] == message
    assert sorted(p.name for p in inbox.iterdir()) == []


def _wait_jobs(count: int, timeout: float) -> list[store.Job]:
    deadline = time.monotonic() + timeout
    jobs: list[store.Job] = []
    while time.monotonic() < deadline:
        jobs = store.list_jobs(limit=1000)
        if len(jobs) >= count and all(j.state in FINAL for j in jobs):
            return jobs
        time.sleep(0.2)
    raise AssertionError(f"{len(jobs)} jobs, states {[(j.input_name, j.state) for j in jobs]}")
