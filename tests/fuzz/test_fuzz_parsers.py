"""Fuzzing the two parsers that read what users drop: price CSVs and JSON job files.

The contract: every input is either accepted (and then the result is sound) or refused with a
DataError that says why. Any other exception would crash a worker's step into "ended by
ValueError" or, in the watcher, stall the intake. Hypothesis generates structured CSVs,
mutations of the real sample, raw bytes, gzip wrappers (valid, truncated, corrupted), and JSON
job files (well formed, mutated, deeply nested, huge numbers, hostile paths).

Budget: ``PIPELINE_FUZZ_SECONDS`` (default 20) seconds in total, split evenly over the
targets; each target runs Hypothesis again and again, with fresh random seeds, until its share
is spent. CI runs the default; the issue's report ran ``PIPELINE_FUZZ_SECONDS=600``.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.errors import DataError
from orchestrator.jobs.jobspec import JobParams, read_job_file
from orchestrator.paths import Share
from orchestrator.settings import Settings
from orchestrator.steps import fastread
from orchestrator.steps.validate import (
    MIN_ROWS,
    ValidationRules,
    careful_read,
    read_form,
    validate_prices,
)

pytestmark = pytest.mark.fuzz

SAMPLE = Path(__file__).resolve().parents[2] / "orchestrator" / "examples" / "sp500_sample.csv"
TARGETS = 3
BUDGET = float(os.environ.get("PIPELINE_FUZZ_SECONDS", "20")) / TARGETS
ROUND = settings(max_examples=60, deadline=None, database=None,
                 suppress_health_check=list(HealthCheck))


def fuzz_for(seconds: float, target: Callable[[], None], counter: list[int]) -> None:
    """Run a Hypothesis test repeatedly (new random seed each time) until the time is spent."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        target()
    print(f"\n{target.__name__}: {counter[0]} inputs in {seconds:.0f} s "
          f"({counter[1]} accepted, {counter[0] - counter[1]} refused with DataError)")
    assert counter[0] > 0


# ----------------------------------------------------------------------------- CSV inputs

TICKERS = ["AAPL", "MSFT", "GOOG", "date", "Date", " date ", "", "AAPL", "x,y", 'q"t', "é",
           "\ufeffdate", "nan", "1", "\x00"]
CELLS = st.one_of(
    st.sampled_from(["", "NA", "N/A", "nan", "NaN", "null", "#N/A", "inf", "-inf", "0", "-1",
                     "1e308", "1e-320", "1e400", "100", "12.5", "0x10", " 7 ", "1,5", '"3"',
                     "2018-01-02", "2018-02-30", "01/02/2018", "20180102", "9999-12-31",
                     "0001-01-01", "2018-01-02T10:00:00", "2018-01-02 25:00", "\u00a0",
                     "TRUE", "١٢٣", "1_000", "+5", ".5", "5.", "1e", "--1", "NAN", "nan(1)",
                     "Infinity", "-", " - ", "-nan", '"1,234.5"', "1.234,5", "12,5"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.dates().map(str),
    st.text(max_size=12),
)
LINE_ENDINGS = st.sampled_from(["\n", "\r\n", "\r"])


# (separator, decimal mark) pairs as spreadsheets in different locales export them
DIALECTS = st.sampled_from([(",", "."), (",", "."), (";", ","), (";", "."), ("\t", "."),
                            ("|", ",")])


def number(value: float, decimal: str, grouped: bool) -> str:
    """A price as a spreadsheet writes it: its decimal mark, perhaps thousands grouped and
    quoted ("1,234.5000", "1.234,5000")."""
    text = f"{value:,.4f}" if grouped else f"{value:.4f}"
    if decimal == ",":
        text = text.replace(",", "_").replace(".", ",").replace("_", ".")
    return f'"{text}"' if grouped else text


@st.composite
def structured_csv(draw: st.DrawFn) -> bytes:
    """A header and rows built from plausible and hostile cells, in one of the common
    dialects, wide or (one in four) long; often long enough to pass."""
    separator, decimal = draw(DIALECTS)
    long = draw(st.integers(0, 3)) == 0
    header = draw(st.lists(st.one_of(st.sampled_from(TICKERS), st.text(max_size=6)),
                           min_size=0, max_size=8))
    if long:
        header = draw(st.sampled_from([["date", "ticker", "close"], ["Date", "Symbol", "Price"],
                                       ["date", "ticker", "volume", "adj_close"]]))
    elif draw(st.integers(0, 3)):
        header = ["date", *[f"T{i}" for i in range(draw(st.integers(1, 6)))]]
    rows = draw(st.integers(0, 70)) * (draw(st.integers(1, 4)) if long else 1)
    width = max(1, len(header))
    # Per file, how often a row is hostile and how often a price is missing: clean files
    # reach the cleaning (gaps, sparse tickers, duplicates) instead of stopping at row 2.
    hostile = draw(st.sampled_from([0.0, 0.0, 0.0, 0.02, 0.3, 1.0]))
    missing = draw(st.sampled_from([0.0, 0.05, 0.3]))
    grouped = draw(st.sampled_from([0.0, 0.0, 0.1]))
    high = draw(st.sampled_from([500.0, 5000.0]))
    rnd = random.Random(draw(st.integers(0, 2**32)))
    start = np.datetime64("2018-01-01")
    lines = [separator.join(header)]
    for i in range(rows):
        if rnd.random() < hostile:
            cells = draw(st.lists(CELLS, min_size=0, max_size=width + 1))
        elif long:
            day = start + (i // 3 if rnd.random() > 0.02 else rnd.randrange(rows))
            price = "" if rnd.random() < missing else number(
                rnd.uniform(1, high), decimal, rnd.random() < grouped)
            cells = [str(day), f"T{i % 3 if rnd.random() > 0.05 else rnd.randrange(5)}",
                     *(["7"] if width == 4 else []), price]
        else:
            day = start + (i if rnd.random() > 0.05 else rnd.randrange(rows))  # duplicates
            cells = [str(day)] + ["" if rnd.random() < missing else
                                  number(rnd.uniform(1, high), decimal, rnd.random() < grouped)
                                  for _ in range(width - 1)]
        lines.append(separator.join(cells))
    text = draw(LINE_ENDINGS).join(lines)
    prefix = draw(st.sampled_from(["", "\ufeff", "\n", " "]))
    return (prefix + text).encode("utf-8", errors="surrogatepass")


def mutate(data: bytes, rnd: random.Random) -> bytes:
    """Flip, insert, delete, duplicate or truncate, a few times."""
    out = bytearray(data)
    for _ in range(rnd.randint(1, 6)):
        op = rnd.randrange(5)
        at = rnd.randrange(len(out) + 1)
        if op == 0 and out:
            out[min(at, len(out) - 1)] ^= 1 << rnd.randrange(8)
        elif op == 1:
            out[at:at] = rnd.choice([b",", b"\n", b'"', b"\x00", b"\xff", b"-", b"e9", b";"])
        elif op == 2:
            del out[at:at + rnd.randint(1, 200)]
        elif op == 3:
            end = out.find(b"\n", at)
            line = out[at:end + 1] if end >= 0 else b""
            out[at:at] = line * rnd.randint(1, 5)
        else:
            del out[at:]
    return bytes(out)


@st.composite
def mutated_sample(draw: st.DrawFn) -> bytes:
    lines = SAMPLE.read_bytes().splitlines(keepends=True)
    cut = draw(st.integers(1, 80))  # few rows keep each example fast
    data = b"".join(lines[:cut])
    return mutate(data, random.Random(draw(st.integers(0, 2**32))))


@st.composite
def maybe_gzipped(draw: st.DrawFn, inner: st.SearchStrategy[bytes]) -> tuple[str, bytes]:
    data = draw(inner)
    kind = draw(st.sampled_from(["plain", "plain", "gzip", "gzip-truncated",
                                 "gzip-corrupted", "gzip-name-only"]))
    if kind == "plain":
        return "prices.csv", data
    if kind == "gzip-name-only":
        return "prices.csv.gz", data
    packed = gzip.compress(data, compresslevel=1)
    if kind == "gzip-truncated":
        packed = packed[:draw(st.integers(0, len(packed)))]
    elif kind == "gzip-corrupted":
        packed = mutate(packed, random.Random(draw(st.integers(0, 2**32))))
    return "prices.csv.gz", packed


RULES = st.builds(ValidationRules, max_gap_days=st.integers(0, 10),
                  max_missing_fraction=st.floats(0, 1), min_tickers=st.integers(1, 4),
                  max_input_bytes=st.sampled_from([200_000_000] * 4 + [50_000, 300]))
CSV_INPUTS = st.one_of(structured_csv(), structured_csv(), mutated_sample(),
                       st.binary(max_size=3000))


def check_accepted(prices: object, report: object, rules: ValidationRules) -> None:
    frame = prices  # pandas DataFrame
    values = frame.to_numpy()  # type: ignore[attr-defined]
    assert not np.isnan(values).any()
    assert np.isfinite(values).all() and (values > 0).all()
    assert frame.index.is_unique and frame.index.is_monotonic_increasing  # type: ignore[attr-defined]
    assert len(frame) >= MIN_ROWS
    assert frame.shape[1] >= rules.min_tickers  # type: ignore[attr-defined]
    assert report.rows_read == (report.rows_kept + report.duplicate_dates_removed  # type: ignore[attr-defined]
                                + report.edge_rows_dropped)  # type: ignore[attr-defined]


def check_paths_agree(path: Path, rules: ValidationRules) -> None:
    """Whatever the fast path (pyarrow) accepts, the careful path (pandas, the one that names
    bad cells) reads to the same dates, tickers and prices: the fast path never accepts a file
    the careful one would refuse, nor reads it differently."""
    try:
        form = read_form(path, rules)
    except DataError:
        return
    if form.layout == "long":
        fast = fastread.read_long(path, form.dialect, form.raw_names, form.columns)
    else:
        fast = fastread.read_wide(path, form.dialect, form.raw_names, form.columns[0])
    if fast is None:
        return
    careful = careful_read(path, form)
    assert (fast.tickers, fast.rows) == (careful.tickers, careful.rows)
    np.testing.assert_array_equal(fast.values, careful.values)
    assert (np.asarray(fast.dates, "datetime64[us]")
            == np.asarray(careful.dates, "datetime64[us]")).all()


def test_every_csv_is_accepted_soundly_or_refused_with_a_reason(tmp_path: Path) -> None:
    # given generated, mutated, binary and gzipped price files
    counter = [0, 0]

    @ROUND
    @given(maybe_gzipped(CSV_INPUTS), RULES)
    def csv_parser(named: tuple[str, bytes], rules: ValidationRules) -> None:
        name, data = named
        path = tmp_path / name
        path.write_bytes(data)
        counter[0] += 1
        if name == "prices.csv":
            check_paths_agree(path, rules)
        # when validation reads it
        try:
            prices, report = validate_prices(path, rules)
        except DataError as error:
            # then a refusal says why, naming the file
            assert error.reason and name in str(error)
            return
        # or the accepted table is sound
        counter[1] += 1
        check_accepted(prices, report, rules)

    fuzz_for(BUDGET, csv_parser, counter)


# ----------------------------------------------------------------------------- JSON job files

FIELDS = ["input_file", "portfolio_size", "objective", "max_weight", "min_weight",
          "risk_free_rate", "target_volatility", "target_return", "covariance",
          "expected_returns", "ewma_span", "returns", "reference_file", "force", "extra"]
JSON_LEAVES = st.one_of(st.none(), st.booleans(), st.integers(-(10**20), 10**20),
                        st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
                        st.sampled_from(["min_volatility", "max_sharpe", "risk_parity",
                                         "efficient_risk", "efficient_return", "sample",
                                         "ledoit_wolf", "ewma", "log", "mean"]))
JSON_VALUES = st.recursive(JSON_LEAVES, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)
PATHS = st.one_of(st.sampled_from(["prices.csv", "./prices.csv", "sub/../prices.csv",
                                   "../outside.csv", "../../etc/passwd", "/etc/passwd", "",
                                   ".", "input", "missing.csv", "a\x00b.csv", "x" * 300,
                                   "a/" * 3000, "prices.csv/", "link-loop.csv",
                                   "link-out.csv", "\\prices.csv", "prices.csv\n"]),
                  st.text(max_size=40))


@st.composite
def job_spec(draw: st.DrawFn) -> dict[str, object]:
    spec: dict[str, object] = draw(st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES,
                                                   max_size=6))
    if draw(st.booleans()):  # a plausible job file, then perhaps one field made hostile
        spec = {"input_file": draw(st.sampled_from(["prices.csv", "./prices.csv",
                                                    "sub/../prices.csv"])),
                "portfolio_size": draw(st.integers(5, 120)),
                "max_weight": draw(st.floats(0, 1.2)),
                "objective": draw(st.sampled_from(["min_volatility", "max_sharpe",
                                                   "risk_parity", "efficient_risk"])),
                "force": draw(st.booleans())}
        if draw(st.booleans()):
            spec[draw(st.sampled_from(FIELDS))] = draw(JSON_VALUES)
    elif draw(st.integers(0, 3)):
        spec["input_file"] = draw(PATHS)
    return spec


@st.composite
def job_file_bytes(draw: st.DrawFn) -> bytes:
    spec = draw(job_spec())
    text = json.dumps(spec, allow_nan=True, ensure_ascii=draw(st.booleans()))
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return mutate(text.encode(), random.Random(draw(st.integers(0, 2**32))))
    if kind == 1:
        return draw(st.binary(max_size=300))
    if kind == 2:
        depth = draw(st.integers(10, 300_000))
        return (draw(st.sampled_from(["[", '{"a":'])) * depth).encode()
    if kind == 3:
        return ("{\"portfolio_size\": " + "9" * draw(st.integers(10, 20_000)) + "}").encode()
    if kind == 4:
        return json.dumps(draw(JSON_VALUES)).encode()
    return text.encode("utf-8", errors="surrogatepass")


def test_every_job_file_is_accepted_soundly_or_refused_with_a_reason(tmp_path: Path) -> None:
    # given a share with a CSV, a link loop and a link leading out, and generated job files
    share = Share(tmp_path / "share")
    (share.input / "sub").mkdir(parents=True)
    (share.input / "prices.csv").write_text("date,A\n")
    (share.input / "link-loop.csv").symlink_to(share.input / "link-loop.csv")
    (tmp_path / "outside.csv").write_text("date,A\n")
    (share.input / "link-out.csv").symlink_to(tmp_path / "outside.csv")
    settings_ = Settings(share_dir=share.root, var_dir=tmp_path / "var")
    counter = [0, 0]

    @ROUND
    @given(job_file_bytes())
    def job_file_parser(data: bytes) -> None:
        path = share.input / "job.json"
        path.write_bytes(data)
        counter[0] += 1
        # when the job file is read
        try:
            csv_path, params = read_job_file(path, share, settings_)
        except DataError as error:
            # then a refusal names the file and says why
            assert error.reason and "job.json" in str(error)
            return
        # or what it asks for is inside the share, existing, and valid parameters
        counter[1] += 1
        assert csv_path.is_relative_to(share.root.resolve()) and csv_path.is_file()
        assert isinstance(params, JobParams)
        assert math.isfinite(params.max_weight) and 10 <= params.portfolio_size <= 100

    fuzz_for(BUDGET, job_file_parser, counter)


def test_the_gzip_and_size_limits_hold_under_fuzzing(tmp_path: Path) -> None:
    # given gzip files whose content expands by large and random factors, and the sample
    counter = [0, 0]
    sample = SAMPLE.read_bytes()

    @ROUND
    @given(st.integers(1, 2_000_000), st.sampled_from([b"\x00", b"1,", b"date,A\n", sample]),
           st.integers(1_000, 1_000_000))
    def gzip_limits(size: int, unit: bytes, limit: int) -> None:
        content = unit if unit is sample else unit * (size // len(unit) + 1)
        path = tmp_path / "prices.csv.gz"
        path.write_bytes(gzip.compress(content, compresslevel=1))
        counter[0] += 1
        expanded = len(content)
        # when it is validated under a limit
        try:
            validate_prices(path, ValidationRules(min_tickers=1, max_input_bytes=limit))
        except DataError as error:
            # then past the limit the refusal names the limit; below it, the reason is the data
            if expanded > limit:
                assert "limit" in str(error)
            return
        counter[1] += 1
        assert expanded <= limit

    fuzz_for(BUDGET, gzip_limits, counter)
