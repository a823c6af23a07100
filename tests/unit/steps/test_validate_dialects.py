"""Price files as users export them (issue 14.4, 14.5, 13): European Excel, thousands
separators, long vendor files, missing markers, binary files, late listings; and the binary
hand-off between validate and optimize (issue 16). Each test is a short story."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from orchestrator.errors import DataError, ParameterError
from orchestrator.jobs.jobspec import JobParams, make_params
from orchestrator.settings import Settings
from orchestrator.steps import fastread, run
from orchestrator.steps.validate import (
    ValidationRules,
    careful_read,
    read_form,
    read_handoff,
    validate_prices,
    write_handoff,
)

SAMPLE = Path(__file__).resolve().parents[3] / "orchestrator" / "examples" / "sp500_sample.csv"
RULES = ValidationRules()


@pytest.fixture(scope="module")
def expected() -> pd.DataFrame:
    """The sample as the plain comma file validates: what every dialect must give."""
    prices, _ = validate_prices(SAMPLE, RULES)
    return prices


def sample_frame() -> pd.DataFrame:
    return pd.read_csv(SAMPLE, dtype={"date": str}).set_index("date")


def european(path: Path) -> Path:
    """The sample as a German/French Excel saves it: ';' between fields, ',' in numbers."""
    text = SAMPLE.read_text(encoding="utf-8")
    path.write_text(text.replace(",", ";").replace(".", ","), encoding="utf-8")
    return path


def long_file(path: Path, names: tuple[str, str, str] = ("date", "ticker", "close"),
              extra: bool = False) -> Path:
    """The sample in long form, as data vendors export it: one row per date and ticker."""
    text = pd.read_csv(SAMPLE, dtype=str).rename(columns={"date": names[0]})
    tidy = text.melt(id_vars=names[0], var_name=names[1], value_name=names[2])
    tidy = tidy.dropna(subset=[names[2]])
    if extra:
        tidy.insert(2, "volume", 1000)
    tidy.to_csv(path, index=False)
    return path


# ----------------------------------------------------------------------------- dialects


def test_a_european_excel_export_is_read_as_the_comma_file_is(tmp_path: Path,
                                                               expected: pd.DataFrame) -> None:
    # given the sample saved by a European Excel ("date;AIZ;…", "92,3892232416")
    path = european(tmp_path / "europe.csv")
    # when validated with no setting at all
    prices, report = validate_prices(path, RULES)
    # then it gives the same table as the comma file, and says how it was read
    pd.testing.assert_frame_equal(prices, expected, check_exact=True)
    assert (report.separator, report.decimal) == (";", ",")


def test_separator_and_decimal_can_be_forced(tmp_path: Path, expected: pd.DataFrame) -> None:
    path = european(tmp_path / "europe.csv")
    prices, _ = validate_prices(path, ValidationRules(separator=";", decimal=","))
    pd.testing.assert_frame_equal(prices, expected, check_exact=True)
    # forced wrongly, the refusal says how the file was read and that it was forced
    error = _refused(path, ValidationRules(separator=","))
    assert "read as ','-separated, decimal '.', forced by the separator parameter" in error.reason
    assert error.reason.endswith("the header looks ';'-separated: set the job parameter "
                                 "separator to ';', or leave it out to have it detected")


def test_a_decimal_comma_in_a_point_file_says_what_to_change(tmp_path: Path) -> None:
    # given a semicolon file whose numbers use points, one cell written with a comma
    path = european(tmp_path / "europe.csv")
    path.write_text(path.read_text().replace(",", "."), encoding="utf-8")
    lines = path.read_text().splitlines()
    fields = lines[9].split(";")
    fields[3] = fields[3].replace(".", ",")
    lines[9] = ";".join(fields)
    path.write_text("\n".join(lines) + "\n")
    error = _refused(path)
    assert (error.row, error.column) == (10, "ALK")
    assert "set the job parameter decimal to ','" in error.reason


def test_quoted_thousands_separators_are_read(tmp_path: Path) -> None:
    # given prices above 1,000 written with thousands separators, quoted as Excel does
    dates = pd.bdate_range("2020-01-01", periods=40).strftime("%Y-%m-%d")
    lines = ["date,A,B"] + [f'{d},"1,{234 + i}.50",{10 + i}' for i, d in enumerate(dates)]
    path = tmp_path / "thousands.csv"
    path.write_text("\n".join(lines) + "\n")
    # when validated, then they are the numbers they say
    prices, _ = validate_prices(path, ValidationRules(min_tickers=2))
    assert prices["A"].iloc[0] == 1234.5 and prices["A"].iloc[-1] == 1273.5


def test_a_tab_separated_file_is_read(tmp_path: Path, expected: pd.DataFrame) -> None:
    path = tmp_path / "prices.tsv"
    path.write_text(SAMPLE.read_text().replace(",", "\t"))
    prices, report = validate_prices(path, RULES)
    pd.testing.assert_frame_equal(prices, expected, check_exact=True)
    assert report.separator == "\t"


# ----------------------------------------------------------------------------- long layout


@pytest.mark.parametrize("names", [("date", "ticker", "close"), ("Date", "Symbol", "Adj_Close"),
                                   ("DATE", "TICKER", "Price")])
def test_a_long_file_is_pivoted_to_the_same_table(tmp_path: Path, expected: pd.DataFrame,
                                                  names: tuple[str, str, str]) -> None:
    # given the sample in long form, with any of the common column names
    path = long_file(tmp_path / "long.csv", names, extra=True)
    # when validated, then it is the wide file's table, tickers in order of appearance
    prices, report = validate_prices(path, RULES)
    pd.testing.assert_frame_equal(prices, expected, check_exact=True)
    assert report.layout == "long" and report.rows_read == 756


def test_a_repeated_date_and_ticker_in_a_long_file_is_refused_naming_the_rows(
        tmp_path: Path) -> None:
    # given a long file where one date+ticker pair appears twice (lines 5 and 12)
    path = long_file(tmp_path / "long.csv")
    lines = path.read_text().splitlines()
    lines.insert(11, lines[4].replace(",9", ",8", 1))
    path.write_text("\n".join(lines) + "\n")
    date, ticker = lines[4].split(",")[:2]
    # when validated, then the refusal names the pair, both rows and what to do
    error = _refused(path)
    assert error.reason.startswith(f"date {date} and ticker '{ticker}' appear together on rows "
                                   "5, 12; a long file has one row per date and ticker")
    assert "keep one of them" in error.reason and error.row == 5


def test_a_long_file_with_a_bad_price_names_its_row(tmp_path: Path) -> None:
    path = long_file(tmp_path / "long.csv")
    lines = path.read_text().splitlines()
    fields = lines[99].split(",")
    fields[2] = "12..5"
    lines[99] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    error = _refused(path)
    assert (error.row, error.column, error.reason) == (100, "close", "not a number: '12..5'")


def test_a_ticker_column_without_a_price_column_says_what_is_needed(tmp_path: Path) -> None:
    path = tmp_path / "half.csv"
    path.write_text("date,ticker,open\n2020-01-02,AAPL,1\n")
    error = _refused(path)
    assert error.reason.startswith("a 'ticker' column but no price column")
    assert "adj_close, adj close, adjclose, close, price" in error.reason


# ----------------------------------------------------------------------------- missing markers


@pytest.mark.parametrize("marker", ["", "NA", "N/A", "NaN", "null", "#N/A", "-", " - "])
def test_missing_markers_are_missing_prices(tmp_path: Path, marker: str) -> None:
    path = _with_cell(tmp_path, marker)
    _, report = validate_prices(path, RULES)
    assert report.cells_filled == 1 and report.missing_by_ticker["AIZ"] == 1


@pytest.mark.parametrize("marker", ["n.a.", "--", "0", "inf", "."])
def test_other_text_is_an_error_not_a_missing_price(tmp_path: Path, marker: str) -> None:
    error = _refused(_with_cell(tmp_path, marker))
    assert (error.row, error.column) == (20, "AIZ")


# ----------------------------------------------------------------------------- what errors show


def test_binary_content_is_named_by_offset_never_echoed(tmp_path: Path) -> None:
    # given a file that starts as a price file (past the first 4 KiB) and goes on with the
    # bytes of a password file and a key
    secret = b"2020-03-02,root:$6$Zq8Xe1$Jw0sEcReT0kEn:19000:0:99999:7:::\x01\x02\n"
    path = tmp_path / "shadow.csv"
    dates = pd.bdate_range("2018-01-01", periods=400).strftime("%Y-%m-%d")
    head = ("date,AIZ\n" + "".join(f"{d},1.5\n" for d in dates)).encode()
    path.write_bytes(head + secret)
    # when validated, then the refusal gives the byte offset and none of the content
    error = _refused(path)
    offset = len(head) + secret.index(1)
    assert error.reason == f"not a text CSV file (binary content at byte {offset})"
    assert "root" not in str(error) and "Zq8" not in str(error)


def test_a_huge_header_is_echoed_bounded_and_printable(tmp_path: Path) -> None:
    path = tmp_path / "noisy.csv"
    names = ["x" * 5000 + "\u202e", *(f"c{i}" for i in range(500))]
    path.write_text(",".join(names) + "\n1,2\n")
    error = _refused(path)
    assert len(str(error)) < 1000 and "\u202e" not in str(error)
    assert "… (491 more)" in error.reason


# ----------------------------------------------------------------------------- late listings


def _late(tmp_path: Path) -> Path:
    """40 dates, 12 tickers; T05 listed on the 4th date (3 missing, 7.5 % < 10 %)."""
    dates = pd.bdate_range("2020-01-01", periods=40, name="date")
    values = 100.0 + np.arange(40 * 12, dtype=float).reshape(40, 12)
    values[:3, 5] = np.nan
    path = tmp_path / "late.csv"
    pd.DataFrame(values, index=dates, columns=[f"T{i:02d}" for i in range(12)]).to_csv(
        path, date_format="%Y-%m-%d")
    return path


def test_a_history_trimmed_for_a_late_listing_is_said_in_the_report(tmp_path: Path) -> None:
    _, report = validate_prices(_late(tmp_path), RULES)
    assert report.edge_rows_dropped == 3 and report.late_listings == {"T05": "2020-01-06"}
    assert report.warnings == [
        "3 leading dates (7.5% of the history, 2020-01-01 to 2020-01-03) were dropped for "
        "every ticker to keep the late listing T05 (first price 2020-01-06); set late_listing "
        "to 'drop_ticker' to drop the late tickers and keep the whole history"]


def test_late_listing_drop_ticker_keeps_the_whole_history(tmp_path: Path) -> None:
    prices, report = validate_prices(_late(tmp_path), ValidationRules(late_listing="drop_ticker"))
    assert len(prices) == 40 and "T05" not in prices.columns
    assert report.edge_rows_dropped == 0 and report.warnings == []
    assert report.tickers_dropped["T05"].startswith("first price on 2020-01-06")


def test_the_reading_settings_are_the_job_defaults(tmp_path: Path) -> None:
    settings = Settings(share_dir=tmp_path, var_dir=tmp_path, csv_separator="tab",
                        csv_decimal=",", late_listing="drop_ticker")
    params = make_params(settings, {})
    assert (params.forced_separator(), params.forced_decimal(), params.late_listing) == (
        "\t", ",", "drop_ticker")
    assert make_params(settings, {"separator": "auto"}).forced_separator() is None
    with pytest.raises(ParameterError, match="separator"):
        make_params(settings, {"separator": ":"})


def test_bad_reading_rules_are_parameter_errors() -> None:
    with pytest.raises(ParameterError, match="separator"):
        ValidationRules(separator=":")
    with pytest.raises(ParameterError, match="late_listing"):
        ValidationRules(late_listing="keep")


# ----------------------------------------------------------------------------- the job's steps


def test_job_parameters_reach_validation_and_the_report_says_what_was_trimmed(
        tmp_path: Path) -> None:
    # given a job folder holding a semicolon file with a late listing, and job parameters
    path = _late(tmp_path)
    folder = tmp_path / "share" / "processing" / "job"  # steps read only inside the share
    (folder / "input").mkdir(parents=True)
    source = folder / "input" / "late.csv"
    source.write_text(path.read_text().replace(",", ";"))
    settings = Settings(share_dir=tmp_path / "share", var_dir=tmp_path / "var")
    params = JobParams(portfolio_size=10, separator=";", late_listing="trim_history")
    ctx = run.StepContext("job", folder, params, settings, lambda _fraction: None)
    # when the three steps run
    run.run_validate(ctx)
    run.run_optimize(ctx)
    run.run_archive(ctx)
    # then report.json carries the warning and the quality figures, and report.html says it
    report = json.loads((folder / "report.json").read_text())
    assert report["quality"]["edge_rows_dropped"] == 3
    assert report["quality"]["warnings"][0].startswith("3 leading dates (7.5% of the history")
    assert "3 leading dates" in (folder / "report.html").read_text()
    # and optimize read the binary hand-off, which holds exactly what validate kept
    prices, _ = validate_prices(source, ValidationRules(separator=";", min_tickers=10))
    pd.testing.assert_frame_equal(read_handoff(folder / run.HANDOFF), prices, check_exact=True)


def test_the_hand_off_round_trips_exactly_and_atomically(tmp_path: Path,
                                                         expected: pd.DataFrame) -> None:
    target = tmp_path / "out" / "prices.npz"
    target.parent.mkdir()
    write_handoff(expected, target)
    back = read_handoff(target)
    pd.testing.assert_frame_equal(back, expected, check_exact=True)
    assert [p.name for p in target.parent.iterdir()] == ["prices.npz"]


def test_a_damaged_hand_off_is_a_data_error(tmp_path: Path) -> None:
    target = tmp_path / "prices.npz"
    target.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(DataError, match=r"prices\.npz"):
        read_handoff(target)


@pytest.mark.parametrize("make", [lambda tmp: shutil.copyfile(SAMPLE, tmp / "prices.csv"),
                                  lambda tmp: european(tmp / "europe.csv"),
                                  lambda tmp: long_file(tmp / "long.csv", extra=True)],
                         ids=["sample", "european", "long"])
def test_the_fast_and_careful_paths_read_the_same_table(tmp_path: Path, make: object) -> None:
    path = Path(make(tmp_path))  # type: ignore[operator]
    form = read_form(path, RULES)
    fast = (fastread.read_long(path, form.dialect, form.raw_names, form.columns)
            if form.layout == "long" else
            fastread.read_wide(path, form.dialect, form.raw_names, form.columns[0]))
    careful = careful_read(path, form)
    assert fast is not None
    assert (fast.tickers, fast.rows) == (careful.tickers, careful.rows)
    np.testing.assert_array_equal(fast.values, careful.values)
    assert pd.DatetimeIndex(fast.dates).equals(pd.DatetimeIndex(careful.dates))


# ----------------------------------------------------------------------------- helpers


def _refused(path: Path, rules: ValidationRules = RULES) -> DataError:
    with pytest.raises(DataError) as caught:
        validate_prices(path, rules)
    assert caught.value.file == path.name and path.name in str(caught.value)
    return caught.value


def _with_cell(tmp_path: Path, value: str) -> Path:
    """The sample with AIZ on line 20 set to ``value``."""
    lines = SAMPLE.read_text().splitlines()
    fields = lines[19].split(",")
    fields[1] = value
    lines[19] = ",".join(fields)
    path = tmp_path / "prices.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_ticker_with_no_price_is_dropped_even_when_any_sparsity_is_allowed(
        tmp_path: Path) -> None:
    path = _late(tmp_path)
    frame = pd.read_csv(path, dtype=str)
    frame["T11"] = ""
    frame.to_csv(path, index=False)
    _, report = validate_prices(path, ValidationRules(max_missing_fraction=1.0))
    assert report.tickers_dropped == {"T11": "no prices at all"} and report.rows_kept == 37


def test_a_very_wide_semicolon_file_is_detected_from_its_first_lines(tmp_path: Path) -> None:
    # given 12,000 tickers: one data line is longer than 100 KB
    names = [f"T{i:05d}" for i in range(12_000)]
    dates = pd.bdate_range("2020-01-01", periods=40).strftime("%Y-%m-%d")
    row = ";".join(["12,5"] * len(names))
    path = tmp_path / "wide.csv"
    path.write_text("date;" + ";".join(names) + "\n" + "".join(f"{d};{row}\n" for d in dates))
    prices, report = validate_prices(path, RULES)
    assert (report.separator, report.decimal) == (";", ",")
    assert prices.shape == (40, 12_000) and prices.iloc[0, 0] == 12.5


@pytest.mark.parametrize("spelling", ["NAN", "Nan", "+nan", "nan(1)"])
def test_a_nan_spelling_outside_the_markers_is_refused_by_name(tmp_path: Path,
                                                               spelling: str) -> None:
    # pyarrow reads these as the number NaN; they are not missing markers, so they are errors
    error = _refused(_with_cell(tmp_path, spelling))
    assert (error.row, error.column, error.reason) == (20, "AIZ", f"not a number: '{spelling}'")
