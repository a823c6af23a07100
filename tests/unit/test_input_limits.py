"""Hostile inputs, one story each: huge files, gzip bombs, odd job files.

Every input is accepted or refused with a DataError that says why; nothing else escapes (an
escaping ValueError or RecursionError ends a worker's step as a crash, or stalls the watcher).
"""

from __future__ import annotations

import gzip
import json
import os
import resource
import time
from pathlib import Path

import pytest

from orchestrator.errors import DataError
from orchestrator.jobs.jobspec import MAX_JOB_FILE_BYTES, read_job_file
from orchestrator.paths import Share
from orchestrator.settings import Settings
from orchestrator.steps.validate import ValidationRules, validate_prices

SAMPLE = Path(__file__).resolve().parents[2] / "orchestrator" / "examples" / "sp500_sample.csv"
RULES = ValidationRules(min_tickers=20)


def test_a_gzipped_price_file_gives_the_same_prices_as_the_plain_one(tmp_path: Path) -> None:
    packed = tmp_path / "prices.csv.gz"
    packed.write_bytes(gzip.compress(SAMPLE.read_bytes()))
    plain, plain_report = validate_prices(SAMPLE, RULES)
    unpacked, report = validate_prices(packed, RULES)
    assert unpacked.equals(plain) and report == plain_report


def test_a_5_gb_drop_is_refused_at_once_without_being_read(tmp_path: Path) -> None:
    # given a 5 GB file (sparse: no disk used) dropped as a CSV
    huge = tmp_path / "huge.csv"
    with open(huge, "wb") as handle:
        handle.truncate(5 * 1024**3)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # when it is validated
    started = time.perf_counter()
    with pytest.raises(DataError) as raised:
        validate_prices(huge, RULES)
    # then it is refused in well under a second, by its size, with no memory spent on it
    assert time.perf_counter() - started < 1.0
    assert "5,368,709,120 bytes, more than the limit of 200,000,000" in str(raised.value)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KiB


def test_a_gzip_bomb_is_refused_naming_the_limit(tmp_path: Path) -> None:
    # given 4 MB of gzip that would expand to 1 GB
    bomb = tmp_path / "prices.csv.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as out:
        chunk = b"0" * (1 << 20)
        for _ in range(1024):
            out.write(chunk)
    assert bomb.stat().st_size < 5_000_000
    # when it is validated with a 50 MB limit
    started = time.perf_counter()
    with pytest.raises(DataError) as raised:
        validate_prices(bomb, ValidationRules(min_tickers=20, max_input_bytes=50_000_000))
    # then it stops at the limit, says so, and leaves no temporary file behind
    assert "decompressed, the file is larger than the limit of 50,000,000 bytes" in \
        str(raised.value)
    assert "PIPELINE_MAX_INPUT_BYTES" in str(raised.value)
    assert time.perf_counter() - started < 5.0
    assert not list(Path(os.environ.get("TMPDIR", "/tmp")).glob("pipeline-gunzip-*/prices.csv.gz"))


@pytest.mark.parametrize(("name", "data", "reason"), [
    ("prices.csv.gz", b"date,A\n2018-01-02,1\n", "named .gz but not a gzip file"),
    ("prices.csv.gz", gzip.compress(b"date,A\n" * 100)[:-4], "not a readable gzip file"),
    ("prices.csv.gz", gzip.compress(b""), "the file is empty (decompressed)"),
    ("prices.csv.gz", gzip.compress(b"\x00\x01binary"), "binary content at byte"),
    # pandas would unzip a .zip by its name, with no limit: we never let it guess
    ("prices.zip", b"PK\x03\x04" + b"\x00" * 40, "binary content at byte"),
])
def test_broken_compressed_files_are_refused_with_a_reason(tmp_path: Path, name: str,
                                                           data: bytes, reason: str) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(DataError) as raised:
        validate_prices(path, RULES)
    assert reason in str(raised.value) and name in str(raised.value)


def test_a_date_with_a_negative_year_is_refused_as_not_a_date(tmp_path: Path) -> None:
    # found by the fuzzer: pandas reads "-25" as the year -25, and the report could not print it
    lines = SAMPLE.read_text().splitlines()
    lines[40] = "-25" + lines[40][len("2018-01-02"):]
    path = tmp_path / "prices.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"row 41, column 'date': not a date .*'-25'"):
        validate_prices(path, ValidationRules(min_tickers=5, max_gap_days=0))


# ----------------------------------------------------------------------------- job files


@pytest.fixture
def share(tmp_path: Path) -> Share:
    share = Share(tmp_path / "share")
    share.input.mkdir(parents=True)
    (share.input / "prices.csv").write_text("date,A\n")
    return share


def read(share: Share, data: bytes | str) -> None:
    path = share.input / "job.json"
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    read_job_file(path, share, Settings(share_dir=share.root, var_dir=share.root / "var"))


@pytest.mark.parametrize(("data", "reason"), [
    ("[" * 200_000, "not a usable JSON job file: maximum recursion depth"),
    ('{"portfolio_size": ' + "9" * 5000 + "}", "not a usable JSON job file: Exceeds the limit"),
    (json.dumps({"input_file": "a\x00b.csv"}), "is not a usable path: embedded null byte"),
    (json.dumps({"input_file": "x" * 300}), "is not a usable path: File name too long"),
    (json.dumps({"input_file": "loop.csv"}), "is refused: a symbolic link"),
    (" " * (MAX_JOB_FILE_BYTES + 1), "larger than 1,048,576 bytes"),
    (json.dumps({"input_file": "prices.csv", "max_weight": float("nan")}), "max_weight"),
    # found by the fuzzer: a denormal cap made the error message itself overflow
    ('{"input_file": "prices.csv", "portfolio_size": 10, "max_weight": 2.225073858507e-311}',
     "raise max_weight to at least 0.1"),
])
def test_hostile_job_files_are_refused_with_a_reason(share: Share, data: str,
                                                     reason: str) -> None:
    (share.input / "loop.csv").symlink_to(share.input / "loop.csv")
    with pytest.raises(DataError) as raised:
        read(share, data)
    assert reason in str(raised.value) and "job.json" in str(raised.value)


def test_a_fifo_named_like_a_job_file_is_refused_without_blocking(share: Share) -> None:
    fifo = share.input / "job.json"
    os.mkfifo(fifo)
    started = time.perf_counter()
    with pytest.raises(DataError, match="not a regular file"):
        read_job_file(fifo, share, Settings(share_dir=share.root, var_dir=share.root / "var"))
    assert time.perf_counter() - started < 1.0


def test_the_watchers_early_look_at_a_job_file_survives_deep_nesting(tmp_path: Path) -> None:
    from orchestrator.intake.watch.jobrefs import named_csv

    deep = tmp_path / "deep.json"
    deep.write_text("[" * 200_000)
    assert named_csv(deep) is None
