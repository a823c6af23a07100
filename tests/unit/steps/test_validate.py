"""Unit tests of orchestrator.steps.validate: each test is a short story (given, when, then)."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from orchestrator.errors import DataError, ParameterError
from orchestrator.steps import dialect as dialect_module
from orchestrator.steps import fastread as fastread_module
from orchestrator.steps import validate as validate_module
from orchestrator.steps.validate import (
    MIN_ROWS,
    QualityReport,
    ValidationRules,
    read_clean,
    read_reference,
    validate_prices,
    write_clean,
)

SAMPLE = Path("/work/shared/data/sp500_sample.csv")
RULES = ValidationRules()


# ----------------------------------------------------------------------------- helpers


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    """A private copy of the real S&P 500 sample, free to damage."""
    target = tmp_path / "prices.csv"
    shutil.copyfile(SAMPLE, target)
    return target


def lines_of(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def set_cell(path: Path, line: int, column: str, value: str) -> None:
    """Put ``value`` in ``column`` on editor line ``line`` (header = line 1)."""
    lines = lines_of(path)
    header = lines[0].split(",")
    fields = lines[line - 1].split(",")
    fields[header.index(column)] = value
    lines[line - 1] = ",".join(fields)
    write_lines(path, lines)


def cell(path: Path, line: int, column: str) -> str:
    lines = lines_of(path)
    return lines[line - 1].split(",")[lines[0].split(",").index(column)]


def synthetic(path: Path, rows: int = 40, tickers: int = 12) -> Path:
    """A small clean price file: business days from 2020-01-01, tickers T00, T01…"""
    dates = pd.bdate_range("2020-01-01", periods=rows, name="date")
    values = 100.0 + np.arange(rows * tickers, dtype=float).reshape(rows, tickers)
    frame = pd.DataFrame(values, index=dates, columns=[f"T{i:02d}" for i in range(tickers)])
    frame.to_csv(path, date_format="%Y-%m-%d")
    return path


def refused(path: Path, rules: ValidationRules = RULES) -> DataError:
    with pytest.raises(DataError) as caught:
        validate_prices(path, rules)
    assert path.name in str(caught.value)
    assert caught.value.file == path.name
    return caught.value


# ----------------------------------------------------------------------------- the real sample


def test_the_real_sample_validates_into_a_clean_table(sample: Path) -> None:
    # given the real sample of 60 tickers, when it is validated
    prices, report = validate_prices(sample, RULES)
    # then the table is clean: unique ascending dates, float64, no NaN, enough tickers
    assert report.tickers_read == 60
    assert len(report.tickers_kept) >= 10
    assert list(prices.columns) == report.tickers_kept
    assert isinstance(prices.index, pd.DatetimeIndex) and prices.index.name == "date"
    assert prices.index.is_unique and prices.index.is_monotonic_increasing
    assert (prices.dtypes == np.float64).all()
    assert not prices.isna().to_numpy().any()
    assert (report.first_date, report.last_date) == ("2018-01-02", "2020-12-31")
    assert report.rows_read == report.rows_kept == 756


def test_late_listings_of_the_sample_are_dropped_as_too_sparse(sample: Path) -> None:
    # given AMCR, FOX and LIN listed long after the sample starts (AMCR on 2019-06-11)
    # when the sample is validated with the default 10% missing limit
    prices, report = validate_prices(sample, RULES)
    # then they are dropped with the reason, and the full history of the others is kept
    assert set(report.tickers_dropped) == {"AMCR", "FOX", "LIN"}
    assert report.tickers_dropped["AMCR"] == (
        "47.8% missing (max 10.0%); first price on 2019-06-11")
    assert report.missing_by_ticker["AMCR"] == 361
    assert "AMCR" not in prices.columns
    assert len(prices) == 756 and report.edge_rows_dropped == 0
    assert report.cells_filled == 0


def test_a_late_listing_within_the_missing_limit_is_kept_and_earlier_dates_trimmed(
        tmp_path: Path) -> None:
    # given a ticker whose first price comes on the 4th of 40 dates (7.5% missing)
    path = synthetic(tmp_path / "late.csv")
    for line in (2, 3, 4):
        set_cell(path, line, "T05", "")
    # when validated
    prices, report = validate_prices(path, RULES)
    # then the ticker stays and the three dates before its listing go for everyone
    assert "T05" in report.tickers_kept
    assert report.edge_rows_dropped == 3 and len(prices) == 37
    assert report.first_date == str(prices.index[0].date())
    assert report.rows_read == (report.rows_kept + report.duplicate_dates_removed
                                + report.edge_rows_dropped)


def test_a_clean_file_is_read_once_by_the_fast_path(sample: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # given the real sample, and a careful (pandas) path that must not be needed
    def careful(*_args: object) -> None:
        raise AssertionError("a clean file was read twice")

    monkeypatch.setattr(validate_module, "careful_read", careful)
    # when validated, then the fast path alone gives the table (no clock involved: how fast
    # is bench/validate.py's business)
    prices, _ = validate_prices(sample, RULES)
    assert prices.shape == (756, 57)


def test_progress_is_reported_a_few_times_up_to_one(sample: Path) -> None:
    # given a progress callback, when the sample is validated
    seen: list[float] = []
    validate_prices(sample, RULES, progress=seen.append)
    # then it hears a few increasing fractions, ending at 1
    assert 2 <= len(seen) <= 5
    assert seen == sorted(seen) and seen[-1] == 1.0 and seen[0] > 0.0


# ----------------------------------------------------------------------------- unreadable files


def test_an_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    assert "the file is empty" in str(refused(path))


def test_a_header_without_rows_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "header.csv"
    path.write_text("date,AAPL,MSFT\n", encoding="utf-8")
    assert "no data rows" in str(refused(path))


def test_a_file_over_the_size_limit_is_refused_before_reading(tmp_path: Path) -> None:
    # given a file that would fail any other check, but is too large
    path = tmp_path / "huge.csv"
    path.write_bytes(b"\x00" * 2000)
    # when validated with a 1000-byte limit, then the size is the reason given
    error = refused(path, ValidationRules(max_input_bytes=1000))
    assert "2,000 bytes" in error.reason and "limit of 1,000" in error.reason


@pytest.mark.parametrize("content", [
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4,
    bytes(np.random.default_rng(7).integers(0, 256, 3000, dtype=np.uint8)),
    b"date,AAPL\n2020-01-02,1\x002\n",
], ids=["png", "random-bytes", "nul-byte"])
def test_a_binary_file_is_not_a_text_csv(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "image.csv"
    path.write_bytes(content)
    assert "not a text CSV file" in refused(path).reason


def test_invalid_utf8_beyond_the_first_kilobytes_is_not_a_text_csv(sample: Path) -> None:
    # given a Latin-1 byte deep inside the sample, past the sniffed head
    data = bytearray(sample.read_bytes())
    position = data.index(b"\n2020-06-01")
    data[position + 1:position + 1] = b"\xe9"
    sample.write_bytes(bytes(data))
    # then the file is refused as not UTF-8 text, not with a UnicodeDecodeError
    assert "not UTF-8" in refused(sample).reason


# ----------------------------------------------------------------------------- header


def test_a_header_without_date_column_lists_what_it_found(tmp_path: Path) -> None:
    path = tmp_path / "nodate.csv"
    path.write_text("day,a,b,c\n2020-01-02,1,2,3\n", encoding="utf-8")
    error = refused(path)
    assert error.reason == (
        "no date column; the header must have a 'date' column (wide: date, then one column "
        "per ticker; long: date, ticker, close), found: 'day', 'a', 'b', 'c' "
        "(read as ','-separated, decimal '.', detected)")


def test_the_date_column_name_is_case_insensitive(tmp_path: Path) -> None:
    path = synthetic(tmp_path / "upper.csv")
    lines = lines_of(path)
    lines[0] = lines[0].replace("date", "Date", 1)
    write_lines(path, lines)
    prices, _ = validate_prices(path, RULES)
    assert prices.index.name == "date" and len(prices) == 40


def test_duplicate_column_names_are_named(sample: Path) -> None:
    lines = lines_of(sample)
    lines[0] = lines[0].replace(",ALK,", ",AIZ,")
    write_lines(sample, lines)
    error = refused(sample)
    assert "duplicate column names: 'AIZ'" in error.reason and error.row == 1


# ----------------------------------------------------------------------------- cells


def test_an_unparseable_date_names_its_row_and_value(sample: Path) -> None:
    set_cell(sample, 25, "date", "2018/02/30")
    error = refused(sample)
    assert (error.row, error.column) == (25, "date")
    assert "'2018/02/30'" in error.reason and "row 25" in str(error)


def test_a_non_numeric_cell_names_row_column_and_value(sample: Path) -> None:
    set_cell(sample, 17, "AIZ", "abc")
    error = refused(sample)
    assert error.reason == "not a number: 'abc'"
    assert (error.row, error.column) == (17, "AIZ")
    assert "row 17" in str(error) and "'AIZ'" in str(error)


def test_the_first_of_several_bad_cells_is_named_with_the_total(sample: Path) -> None:
    set_cell(sample, 300, "AMZN", "n/a?")
    set_cell(sample, 40, "YUM", "1.2.3")
    error = refused(sample)
    assert (error.row, error.column) == (40, "YUM")
    assert "'1.2.3'" in error.reason and "2 non-numeric cells in total" in error.reason


@pytest.mark.parametrize(("value", "shown"), [("0", "0.0"), ("-12.5", "-12.5")])
def test_a_price_that_is_not_positive_is_refused(sample: Path, value: str, shown: str) -> None:
    set_cell(sample, 101, "HD", value)
    error = refused(sample)
    assert (error.row, error.column) == (101, "HD")
    assert error.reason == f"price must be positive, got {shown}"


def test_blank_lines_do_not_shift_the_reported_row(sample: Path) -> None:
    # given a blank line inserted as line 10, and a bad cell now on line 50
    lines = lines_of(sample)
    lines.insert(9, "")
    write_lines(sample, lines)
    set_cell(sample, 50, "MU", "x")
    # then the error names line 50, as an editor shows it
    assert refused(sample).row == 50


def test_a_row_with_too_many_fields_is_named(sample: Path) -> None:
    lines = lines_of(sample)
    lines[32] += ",99"
    write_lines(sample, lines)
    error = refused(sample)
    assert error.row == 33 and "62 fields, but the header has 61" in error.reason


# ----------------------------------------------------------------------------- dates


def test_duplicate_dates_are_dropped_keeping_the_first_and_counted(sample: Path) -> None:
    # given line 10 repeated (with another price) as line 21
    lines = lines_of(sample)
    original = cell(sample, 10, "AIZ")
    copy = lines[9].split(",")
    copy[1] = "1.0"
    lines.insert(20, ",".join(copy))
    write_lines(sample, lines)
    # when validated
    prices, report = validate_prices(sample, RULES)
    # then one date is removed and the first occurrence's price kept
    assert report.duplicate_dates_removed == 1
    assert report.rows_read == 757 and report.rows_kept == 756
    assert prices.loc[copy[0], "AIZ"] == float(original)
    assert prices.index.is_unique


def test_dates_out_of_order_are_sorted(sample: Path) -> None:
    lines = lines_of(sample)
    body = lines[1:]
    write_lines(sample, [lines[0], *reversed(body)])
    prices, report = validate_prices(sample, RULES)
    assert prices.index.is_monotonic_increasing and report.first_date == "2018-01-02"
    assert prices.iloc[0]["AIZ"] == float(cell(SAMPLE, 2, "AIZ"))


def test_too_few_rows_say_how_many_there_are_and_are_needed(sample: Path) -> None:
    write_lines(sample, lines_of(sample)[:21])
    error = refused(sample)
    assert "only 20 dates" in error.reason and f"at least {MIN_ROWS}" in error.reason


# ----------------------------------------------------------------------------- gaps, tickers


def test_a_short_gap_is_filled_forward_and_counted(sample: Path) -> None:
    # given three missing AIZ prices on lines 100 to 102
    before = float(cell(sample, 99, "AIZ"))
    for line in (100, 101, 102):
        set_cell(sample, line, "AIZ", "")
    # when validated
    prices, report = validate_prices(sample, RULES)
    # then the last known price fills them, and the report counts them
    assert report.cells_filled == 3 and report.missing_by_ticker["AIZ"] == 3
    assert "AIZ" in report.tickers_kept
    np.testing.assert_array_equal(prices["AIZ"].iloc[97:101].to_numpy(), [before] * 4)


def test_a_long_gap_drops_the_ticker_with_its_dates(sample: Path) -> None:
    # given ten consecutive missing ALK prices (lines 100 to 109; max 5 filled)
    for line in range(100, 110):
        set_cell(sample, line, "ALK", "")
    _, report = validate_prices(sample, RULES)
    first, last = cell(sample, 100, "date"), cell(sample, 109, "date")
    assert report.tickers_dropped["ALK"] == (
        f"10 consecutive missing prices from {first} to {last} (at most 5 are filled)")
    assert report.cells_filled == 0


def test_too_few_usable_tickers_explain_what_was_dropped(sample: Path) -> None:
    # given a portfolio of 58 assets, and only 57 usable tickers in the sample
    error = refused(sample, ValidationRules(min_tickers=58))
    # then the message counts, and lists the dropped tickers with their reasons
    assert error.reason.startswith(
        "only 57 usable tickers (need at least 58 for the portfolio): dropped AMCR (47.8%")
    assert "FOX (" in error.reason and "LIN (" in error.reason


def test_reference_tickers_missing_and_unexpected_are_reported(sample: Path) -> None:
    reference = frozenset({"AIZ", "ALGN", "AAPL", "MSFT"})
    _, report = validate_prices(sample, ValidationRules(reference_tickers=reference))
    assert report.reference_missing == ["AAPL", "MSFT"]
    assert len(report.reference_unexpected) == 58 and "AMCR" in report.reference_unexpected


def test_rules_out_of_range_are_parameter_errors() -> None:
    with pytest.raises(ParameterError, match="max_missing_fraction"):
        ValidationRules(max_missing_fraction=1.5)
    with pytest.raises(ParameterError, match="min_tickers"):
        ValidationRules(min_tickers=0)


# ----------------------------------------------------------------------------- outputs


def test_write_clean_and_read_clean_round_trip_exactly(sample: Path, tmp_path: Path) -> None:
    # given validated prices, when written then read back
    prices, _ = validate_prices(sample, RULES)
    target = tmp_path / "out" / "prices.clean.csv"
    target.parent.mkdir()
    write_clean(prices, target)
    back = read_clean(target)
    # then they are identical, bit for bit, and no temporary file is left behind
    pd.testing.assert_frame_equal(back, prices, check_exact=True)
    np.testing.assert_array_equal(back.to_numpy(), prices.to_numpy())
    assert [p.name for p in target.parent.iterdir()] == ["prices.clean.csv"]


def test_awkward_floats_round_trip_exactly(tmp_path: Path) -> None:
    # given prices that have no short decimal form, or sit at the ends of the float range
    index = pd.DatetimeIndex(pd.to_datetime(["2020-01-02", "2020-01-03", "2020-01-06"]),
                             name="date")
    values = np.array([[1 / 3, 5e-324, 1e300], [0.1 + 0.2, 2 / 3, 123456789.123456789],
                       [np.nextafter(1.0, 2.0), 1e-10, 7.0]])
    prices = pd.DataFrame(values, index=index, columns=["A", "B.X", "C-1"])
    # when written and read back, then every bit is the same
    write_clean(prices, tmp_path / "clean.csv")
    back = read_clean(tmp_path / "clean.csv")
    np.testing.assert_array_equal(back.to_numpy(), values)
    assert list(back.columns) == ["A", "B.X", "C-1"] and back.index.equals(index)


def test_the_quality_report_is_json_serializable(sample: Path) -> None:
    set_cell(sample, 50, "AIZ", "")
    _, report = validate_prices(sample, ValidationRules(reference_tickers=frozenset({"X"})))
    data = json.loads(json.dumps(report.to_dict()))
    assert data["tickers_read"] == 60 and data["cells_filled"] == 1
    assert set(data) == {field.name for field in QualityReport.__dataclass_fields__.values()}


@pytest.mark.parametrize(("text", "expected"), [
    ("AAPL\nMSFT\n\n# comment\nGOOG\n", {"AAPL", "MSFT", "GOOG"}),
    ("ticker,name\nAAPL,Apple Inc\nMSFT,Microsoft\n", {"AAPL", "MSFT"}),
    ("date,AAPL,MSFT\n2020-01-02,1,2\n", {"AAPL", "MSFT"}),
], ids=["one-per-line", "first-column", "header"])
def test_read_reference_accepts_lists_and_csv(tmp_path: Path, text: str,
                                              expected: set[str]) -> None:
    path = tmp_path / "reference.csv"
    path.write_text(text, encoding="utf-8")
    assert read_reference(path) == frozenset(expected)


@pytest.mark.parametrize("content", [b"", b"\n# nothing\n", b"\x89PNG\r\n\x1a\n\x00\x00"],
                         ids=["empty", "comments-only", "binary"])
def test_read_reference_refuses_unusable_files(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "reference.txt"
    path.write_bytes(content)
    with pytest.raises(DataError, match=r"reference\.txt"):
        read_reference(path)


@pytest.mark.parametrize("module", [validate_module, dialect_module, fastread_module],
                         ids=lambda module: module.__name__)
def test_the_module_imports_no_celery_and_no_database(module: object) -> None:
    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))  # type: ignore[attr-defined]
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom)}
    assert not {name for name in imported if name.split(".")[0] in {"celery", "sqlalchemy"}}
    assert {name for name in imported if name.startswith("orchestrator")} <= {
        "orchestrator.errors", "orchestrator.steps", "orchestrator.steps.dialect",
        "orchestrator.steps.fastread",
        "orchestrator.jobs.params"}  # the job parameters' declaration: pydantic only, no I/O
