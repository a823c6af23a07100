"""Validate a CSV of daily prices and turn it into a clean, gap-free price table.

Input: a UTF-8 text file in one of two layouts (docs/inputs.md is the users' reference):

* wide: a ``date`` column (any case, any position), then one column per ticker;
* long: ``date``, a ticker column (``ticker``/``symbol``) and a price column (``adj_close``,
  ``close`` or ``price``), one row per date and ticker, any other columns ignored; pivoted
  to wide. A date+ticker pair that appears twice is refused, naming both rows.

The separator (``,`` ``;`` tab ``|``) and the decimal mark (``.`` ``,``) are detected
(orchestrator/steps/dialect.py), or forced by ``ValidationRules.separator``/``decimal``.
Thousands separators inside numbers (``"1,234.50"``) are read. Every problem with the data
raises :class:`~orchestrator.errors.DataError` naming the file, and where it makes sense the
row (the line number a user sees in an editor, header = line 1; one record per line is
assumed) and the column (the header name), with what to change where that is not obvious.

Two paths, one answer. A well-formed file is read once by pyarrow's CSV reader
(orchestrator/steps/fastread.py), checked with whole-array operations, and accepted. At the
first problem it meets, the file is read again on the careful path here (pandas, with line
numbers), which names the row and column of the first bad cell. The fuzz tests check that
both paths accept the same files with the same table.

Checks, in order: the file exists, is not empty, is not larger than
``ValidationRules.max_input_bytes`` (refused before reading), and is UTF-8 text throughout
(no control bytes: a binary file is refused with the byte offset, its content never echoed).
A gzip file (``prices.csv.gz``, known by its first bytes) is decompressed first, to a
temporary file, and refused as soon as it expands past ``max_input_bytes`` too: a small file
that inflates to gigabytes (a "zip bomb") costs at most that many bytes of work. No other
compression is read. The header has no empty or duplicate names and exactly one ``date``
column. No row has more fields than the header (a shorter row's absent trailing cells are
missing). Dates are ISO 8601 (``YYYY-MM-DD``; other formats such as ``01/02/2018`` are
ambiguous and refused). Prices are finite numbers greater than zero.

Missing data: empty cells and the markers of :data:`~orchestrator.steps.dialect.MISSING`
(``NA``, ``N/A``, ``NaN``, ``null``, ``#N/A``, ``-``…) are missing prices, not errors. Blank
lines are skipped. Duplicate dates of a wide file are dropped (the first occurrence in the
file is kept) and counted; dates out of order are sorted.

Sparse-data policy (the choice this module makes):

* Missing cells are counted per ticker over every distinct date of the file, *including* the
  leading cells of a ticker listed after the first date (AMCR in the S&P 500 sample). A
  ticker whose missing fraction exceeds ``max_missing_fraction`` is dropped, with the reason
  and its first price date.
* After its first price, a run of at most ``max_gap_days`` consecutive missing cells
  (trailing runs included) is filled forward with the last known price and counted in
  ``cells_filled``; a ticker with a longer run is dropped, with the run's dates.
* A late listing that survives the rule above (first price after the file's first date, at
  most ``max_missing_fraction`` missing) is handled by ``late_listing``: ``trim_history``
  (the default) drops the dates before its first price for every ticker (counted in
  ``QualityReport.edge_rows_dropped``, named with the late tickers in ``late_listings`` and
  in a ``warnings`` sentence); ``drop_ticker`` drops the late tickers instead and keeps the
  whole history. The result has no NaN.

At least :data:`MIN_ROWS` dates and ``min_tickers`` usable tickers must remain.

This module is pure domain code: it imports neither Celery nor the database layer.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import os
import re
import tempfile
import uuid
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from orchestrator.errors import DataError, ParameterError
from orchestrator.jobs.params import choices, default
from orchestrator.steps import dialect as dialects
from orchestrator.steps import fastread
from orchestrator.steps.dialect import LONG, MISSING, Dialect, NotText, shown, shown_list

MIN_ROWS = 30
"""Fewest dates of prices that make a usable covariance estimate."""

GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20
MAX_REFERENCE_BYTES = 10_000_000
_LIST_LIMIT = 10
_REFERENCE_HEADER_WORDS = frozenset({"ticker", "tickers", "symbol", "symbols", "code"})
_TICKER_RE = re.compile(r"[^\s,;\"']{1,32}")
_PARSER_ERROR_RE = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")
SEPARATORS = (",", ";", "\t", "|")
DECIMALS = (".", ",")
LATE_LISTING = choices("late_listing")

Progress = Callable[[float], None]


@dataclass(frozen=True)
class ValidationRules:
    """Limits that decide what counts as usable data, and how to read the file."""

    max_gap_days: int = 5
    """Longest run of consecutive missing prices (after a ticker's first price) filled forward."""
    max_missing_fraction: float = 0.10
    """Tickers missing more than this fraction of the file's dates (leading cells count) drop."""
    min_tickers: int = 10
    """Fewer usable tickers than this is a DataError (the caller passes the portfolio size)."""
    max_input_bytes: int = 200_000_000
    """Larger files are refused without being read."""
    reference_tickers: frozenset[str] | None = None
    """Expected tickers: missing and unexpected ones are reported, never fatal."""
    separator: str | None = None
    """Field separator (one of SEPARATORS); None: detected from the file."""
    decimal: str | None = None
    """Decimal mark ('.' or ','); None: detected from the file."""
    late_listing: str = default("late_listing")
    """A kept ticker listed after the first date: trim every ticker's history to its first
    price ('trim_history'), or drop it and keep the whole history ('drop_ticker')."""

    def __post_init__(self) -> None:
        if self.max_gap_days < 0:
            raise ParameterError(f"max_gap_days must be >= 0, got {self.max_gap_days}")
        if not 0.0 <= self.max_missing_fraction <= 1.0:
            raise ParameterError(
                f"max_missing_fraction must be within [0, 1], got {self.max_missing_fraction}")
        if self.min_tickers < 1:
            raise ParameterError(f"min_tickers must be >= 1, got {self.min_tickers}")
        if self.max_input_bytes < 1:
            raise ParameterError(f"max_input_bytes must be >= 1, got {self.max_input_bytes}")
        for name, value, allowed in (("separator", self.separator, SEPARATORS),
                                     ("decimal", self.decimal, DECIMALS),
                                     ("late_listing", self.late_listing, LATE_LISTING)):
            if value is not None and value not in allowed:
                raise ParameterError(f"{name} must be one of {', '.join(map(repr, allowed))}, "
                                     f"got {value!r}")
        if self.separator is not None and self.separator == self.decimal:
            raise ParameterError(f"separator and decimal are both {self.separator!r}")


@dataclass(frozen=True)
class QualityReport:
    """What validation read, kept, filled and dropped.

    ``rows_read == rows_kept + duplicate_dates_removed + edge_rows_dropped`` (for a long file,
    rows are its distinct dates). ``missing_by_ticker`` lists the tickers read that have at
    least one missing cell. ``warnings`` are sentences for the report: choices made that
    change the result and that the user may want to make the other way.
    """

    rows_read: int
    rows_kept: int
    duplicate_dates_removed: int
    tickers_read: int
    tickers_kept: list[str]
    tickers_dropped: dict[str, str]
    cells_filled: int
    missing_by_ticker: dict[str, int]
    first_date: str
    last_date: str
    reference_missing: list[str]
    reference_unexpected: list[str]
    edge_rows_dropped: int = 0
    late_listings: dict[str, str] = field(default_factory=dict)
    """Kept tickers whose first price came after the file's first date: their first date."""
    layout: str = "wide"
    separator: str = ","
    decimal: str = "."
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        """A JSON-serializable copy (plain ints, strings, lists and dicts)."""
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------- public API


def validate_prices(path: Path, rules: ValidationRules,
                    progress: Progress | None = None) -> tuple[pd.DataFrame, QualityReport]:
    """Read, check and clean the price file at ``path``.

    Returns the prices (DatetimeIndex named ``date``, sorted and unique; float64 columns, one
    per kept ticker; no NaN) and the quality report. Raises DataError for any data problem.
    """
    path = Path(path)
    file = path.name
    with _decompressed(path, rules.max_input_bytes) as readable:
        read, form = read_prices(readable, rules)
    _report(progress, 0.5)
    prices = pd.DataFrame(read.values, columns=pd.Index(read.tickers), copy=False,
                          index=pd.DatetimeIndex(read.dates, name="date").as_unit("us"))
    prices, duplicates = _dedupe_and_sort(prices)
    _check_row_count(len(prices), file, after_cleaning=False)
    _report(progress, 0.7)
    clean, report = _clean(prices, rules, file, rows_read=read.rows, duplicates=duplicates)
    report = dataclasses.replace(report, layout=form.layout, separator=form.dialect.separator,
                                 decimal=form.dialect.decimal)
    _report(progress, 1.0)
    return clean, report


@dataclass(frozen=True)
class Form:
    """How the file is laid out: its dialect, layout, raw header and the columns that matter
    (raw header names: date; for a long file also ticker and price)."""

    dialect: Dialect
    layout: str
    raw_names: list[str]
    columns: tuple[str, ...]


def read_prices(path: Path, rules: ValidationRules) -> tuple[fastread.Read, Form]:
    """The file's dates, tickers and prices (NaN where missing), by the fast path if it
    accepts the file, else by the careful one (which raises DataError naming the cell)."""
    form = read_form(path, rules)
    if form.layout == LONG:
        fast = fastread.read_long(path, form.dialect, form.raw_names, form.columns)
    else:
        fast = fastread.read_wide(path, form.dialect, form.raw_names, form.columns[0])
    return (fast if fast is not None else careful_read(path, form)), form


def careful_read(path: Path, form: Form) -> fastread.Read:
    """The careful path alone (pandas, line numbers): what fast-path failures fall back to."""
    if form.layout == LONG:
        return _careful_long(path, form)
    return _careful_wide(path, form)


def read_form(path: Path, rules: ValidationRules) -> Form:
    """Check the file is text, detect its dialect, read and check its header."""
    _check_file(path, rules.max_input_bytes)
    try:
        dialects.check_text(path)
    except NotText as exc:
        raise DataError(str(exc), file=path.name) from None
    dialect = dialects.detect(dialects.head_lines(path), rules.separator, rules.decimal)
    raw_names = _read_header(path, dialect)
    names = [name.strip() for name in raw_names]
    date_col = _find_date_column(names, path.name, dialect)
    layout, ticker, price = dialects.layout(names)
    raw = dict(zip(names, raw_names, strict=True))
    if layout == LONG:
        columns: tuple[str, ...] = (raw[date_col], raw[ticker or ""], raw[price or ""])
    else:
        _refuse_half_long(names, path.name)
        columns = (raw[date_col],)
    return Form(dialect, layout, raw_names, columns)


def write_handoff(prices: pd.DataFrame, path: Path) -> None:
    """Save ``prices`` for the optimize step: an uncompressed NumPy ``.npz`` (values, dates,
    tickers), written to a temporary name and renamed.

    Binary, so no float is formatted or parsed between steps: 3 ms for 500 × 1,585 where
    the CSV round trip cost 0.9 s + 0.09 s, and Parquet 0.04 s + 0.02 s (measured; see
    docs/inputs.md). Read back with allow_pickle=False: no object arrays, no code.
    """
    with _replacing(Path(path)) as out:
        np.savez(out, values=np.ascontiguousarray(prices.to_numpy(dtype=np.float64)),
                 dates=prices.index.to_numpy(),
                 tickers=np.array([str(name) for name in prices.columns], dtype=str))


def read_handoff(path: Path) -> pd.DataFrame:
    """Read what :func:`write_handoff` wrote: DatetimeIndex named ``date``, float64 columns."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as saved:
            values, dates, tickers = saved["values"], saved["dates"], saved["tickers"]
    except FileNotFoundError:
        raise DataError(f"{path.name} is missing: the validate step did not finish",
                        file=path.name) from None
    except (ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"not a price table written by the validate step: {exc}",
                        file=path.name) from exc
    return pd.DataFrame(values, index=pd.DatetimeIndex(dates, name="date"),
                        columns=pd.Index(tickers.tolist()))


def write_clean(prices: pd.DataFrame, path: Path) -> None:
    """Write ``prices`` as CSV for people (shortest round-trip floats, ISO dates) to a
    temporary name, then rename. pyarrow's writer: 0.06 s for 500 × 1,585 where pandas'
    float formatting took 0.9 s (measured)."""
    values = np.asfortranarray(prices.to_numpy(dtype=np.float64))
    dates = prices.index.strftime("%Y-%m-%d") if _whole_days(prices.index) \
        else prices.index.map(pd.Timestamp.isoformat)
    columns = [pa.array(np.asarray(dates, dtype=object), pa.string()),
               *(pa.array(values[:, j]) for j in range(values.shape[1]))]
    table = pa.Table.from_arrays(columns, names=["date", *map(str, prices.columns)])
    with _replacing(Path(path)) as out:
        pacsv.write_csv(table, out, pacsv.WriteOptions(quoting_style="needed"))


@contextmanager
def _replacing(path: Path) -> Iterator[BinaryIO]:
    """A file to write that appears under ``path`` only once complete (temporary name,
    fsync, rename), so a crash never leaves a half-written table under its final name."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_clean(path: Path) -> pd.DataFrame:
    """Read what :func:`write_clean` wrote: DatetimeIndex named ``date``, float64 columns."""
    path = Path(path)
    try:
        frame = pd.read_csv(path, index_col=0, dtype={0: str}, encoding="utf-8")
        index = pd.DatetimeIndex(pd.to_datetime(frame.index, format="ISO8601"), name="date")
        values = frame.to_numpy(dtype=np.float64)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"not a clean price file written by write_clean: {exc}",
                        file=path.name) from exc
    return pd.DataFrame(values, index=index, columns=frame.columns)


def _whole_days(index: pd.DatetimeIndex) -> bool:
    return bool((index == index.normalize()).all())


def read_reference(path: Path) -> frozenset[str]:
    """Read expected tickers: one per line, or a CSV whose header or first column lists them.

    The first column is used when the first line is a header word (``ticker``, ``symbol``…)
    or a single field; otherwise the header's names (except ``date``) are the tickers.
    Blank lines and lines starting with ``#`` are skipped.
    """
    path = Path(path)
    file = path.name
    _check_file(path, MAX_REFERENCE_BYTES)
    try:
        dialects.check_text(path)
    except NotText as exc:
        raise DataError(str(exc), file=file) from None
    rows = _reference_rows(path)
    if not rows:
        raise DataError("no tickers in the reference file", file=file)
    tickers = _reference_tickers(rows)
    for line, ticker in tickers:
        if not _TICKER_RE.fullmatch(ticker):
            raise DataError(f"not a ticker: {shown(ticker)}", file=file, row=line)
    if not tickers:
        raise DataError("no tickers in the reference file", file=file)
    return frozenset(ticker for _, ticker in tickers)


# ----------------------------------------------------------------------------- reading


def _report(progress: Progress | None, fraction: float) -> None:
    if progress is not None:
        progress(fraction)


def _check_file(path: Path, max_bytes: int) -> None:
    file = path.name
    if not path.exists():
        raise DataError("no such file", file=file)
    if not path.is_file():
        raise DataError("not a regular file", file=file)
    size = path.stat().st_size
    if size == 0:
        raise DataError("the file is empty", file=file)
    if size > max_bytes:
        raise DataError(f"the file is {size:,} bytes, more than the limit of {max_bytes:,}; "
                        "not read", file=file)


@contextmanager
def _decompressed(path: Path, limit: int) -> Iterator[Path]:
    """``path`` itself, or for a gzip file its content in a temporary file of the same name
    (so every message still names the file the user dropped)."""
    _check_file(path, limit)
    with open(path, "rb") as raw:
        packed = raw.read(len(GZIP_MAGIC)) == GZIP_MAGIC
    if not packed:
        if path.name.lower().endswith(".gz"):
            raise DataError("named .gz but not a gzip file", file=path.name)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="pipeline-gunzip-") as folder:
        plain = Path(folder) / path.name
        _gunzip(path, plain, limit)
        yield plain


def _gunzip(source: Path, target: Path, limit: int) -> None:
    """Decompress in chunks, stopping as soon as the output passes ``limit`` bytes."""
    written = 0
    try:
        with gzip.open(source, "rb") as packed, open(target, "wb") as out:
            while chunk := packed.read(_CHUNK):
                written += len(chunk)
                if written > limit:
                    raise DataError(
                        f"decompressed, the file is larger than the limit of {limit:,} bytes "
                        "(PIPELINE_MAX_INPUT_BYTES); refused after reading that much",
                        file=source.name)
                out.write(chunk)
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise DataError(f"not a readable gzip file: {exc or type(exc).__name__}",
                        file=source.name) from None
    if written == 0:
        raise DataError("the file is empty (decompressed)", file=source.name)


def _read_header(path: Path, dialect: Dialect) -> list[str]:
    try:
        with open(path, encoding="utf-8-sig", newline="") as text:
            header = next(csv.reader(text, delimiter=dialect.separator), [])
    except UnicodeDecodeError as exc:  # checked before; kept for a file changed meanwhile
        raise DataError(f"not a text CSV file (not UTF-8 text: invalid byte at offset "
                        f"{exc.start})", file=path.name) from None
    except csv.Error as exc:
        raise DataError(f"the header is not valid CSV: {exc}", file=path.name, row=1) from exc
    if not any(name.strip() for name in header):
        raise DataError("the first line is empty; it must be the header "
                        "(a 'date' column, then one column per ticker)", file=path.name, row=1)
    return header


def _find_date_column(names: list[str], file: str, dialect: Dialect) -> str:
    """Check the header names; return the name of the date column."""
    unnamed = [str(i + 1) for i, name in enumerate(names) if not name]
    if unnamed:
        raise DataError(f"no name in the header for column(s) {', '.join(unnamed)} "
                        "(counting from 1)", file=file, row=1)
    duplicates = [name for name, count in Counter(names).items() if count > 1]
    if duplicates:
        raise DataError(f"duplicate column names: {shown_list(duplicates)}", file=file, row=1)
    dates = [name for name in names if name.lower() == "date"]
    if not dates:
        how = "detected" if dialect.detected else "forced by the separator parameter"
        raise DataError("no date column; the header must have a 'date' column (wide: date, "
                        "then one column per ticker; long: date, ticker, close), found: "
                        f"{shown_list(names)} (read as {dialect.describe()}, {how})"
                        + _separator_hint(names, dialect), file=file, row=1)
    if len(dates) > 1:
        raise DataError(f"several date columns: {shown_list(dates)}", file=file, row=1)
    if len(names) == 1:
        raise DataError("no ticker columns; the header has only the date column",
                        file=file, row=1)
    return dates[0]


def _separator_hint(names: list[str], dialect: Dialect) -> str:
    """When the header is one field holding another separator: say which to use."""
    if len(names) != 1:
        return ""
    others = [sep for sep in SEPARATORS if sep != dialect.separator and sep in names[0]]
    if not others:
        return ""
    value = "tab" if others[0] == "\t" else others[0]
    return (f"; the header looks {shown(others[0])}-separated: set the job parameter "
            f"separator to {shown(value)}, or leave it out to have it detected")


def _refuse_half_long(names: list[str], file: str) -> None:
    """A ticker column without a price column: a long file missing its price column."""
    ticker = next((n for n in names if n.lower() in dialects.TICKER_NAMES), None)
    if ticker is not None:
        raise DataError(f"a {shown(ticker)} column but no price column: a long file (one row "
                        "per date and ticker) needs one named "
                        f"{', '.join(dialects.PRICE_NAMES)} (any case)", file=file, row=1)


def _read_table(path: Path, form: Form, text: list[str]) -> pd.DataFrame:
    """The file's rows as read (index = line numbers, blank lines dropped), columns named by
    the stripped header; the columns in ``text`` (raw names) read as strings."""
    names = [name.strip() for name in form.raw_names]
    table = _read_csv(path, form.dialect, dtype=dict.fromkeys(text, str))
    if not isinstance(table.index, pd.RangeIndex) or table.shape[1] != len(names):
        raise DataError(f"the data rows have more fields than the header ({len(names)} columns)",
                        file=path.name, row=2)
    table.columns = pd.Index(names)
    table.index = pd.RangeIndex(2, 2 + len(table))
    table = table[table.notna().any(axis=1).to_numpy()]
    if table.empty:
        raise DataError("no data rows: the file has only a header", file=path.name)
    return table


def _read_csv(path: Path, dialect: Dialect, **options: object) -> pd.DataFrame:
    try:
        return pd.read_csv(path, skip_blank_lines=False, low_memory=False, encoding="utf-8",
                           compression=None, sep=dialect.separator, decimal=dialect.decimal,
                           na_values=list(MISSING), keep_default_na=False, **options)
    except UnicodeDecodeError as exc:
        raise DataError(f"not a text CSV file (not UTF-8 text: invalid byte at offset "
                        f"{exc.start})", file=path.name) from None
    except pd.errors.ParserError as exc:
        raise _parser_error(path.name, exc) from exc


def _parser_error(file: str, exc: pd.errors.ParserError) -> DataError:
    match = _PARSER_ERROR_RE.search(str(exc))
    if match is None:
        return DataError(f"not a valid CSV file: {str(exc)[:200]}", file=file)
    expected, line, seen = match.groups()
    return DataError(f"{seen} fields, but the header has {expected}", file=file, row=int(line))


def _careful_wide(path: Path, form: Form) -> fastread.Read:
    date_raw = form.columns[0]
    table = _read_table(path, form, [date_raw])
    date_col = date_raw.strip()
    prices = _parse_prices(path, form, table, [n for n in table.columns if n != date_col])
    dates = _parse_dates(table[date_col], path.name, date_col)
    return fastread.Read(dates.to_numpy(), [str(n) for n in prices.columns],
                         prices.to_numpy(), len(table))


def _careful_long(path: Path, form: Form) -> fastread.Read:
    date_raw, ticker_raw, _ = form.columns
    table = _read_table(path, form, [date_raw, ticker_raw])
    date_col, ticker_col, price_col = (name.strip() for name in form.columns)
    dates = _parse_dates(table[date_col], path.name, date_col)
    tickers = table[ticker_col].str.strip()
    absent = tickers.isna() | (tickers == "")
    if absent.any():
        raise DataError("missing ticker" + _in_total(int(absent.sum()), "rows without one"),
                        file=path.name, row=int(table.index[int(absent.argmax())]),
                        column=ticker_col)
    prices = _parse_prices(path, form, table, [price_col])
    names = tickers.to_numpy(dtype=str)
    pivot = fastread.pivot_long(dates.to_numpy(), names, prices[price_col].to_numpy())
    if pivot is None:
        raise _duplicate_pairs(table.index, dates, names, path.name, ticker_col)
    days, order, values = pivot
    return fastread.Read(days, order, values, len(days))


def _duplicate_pairs(lines: pd.Index, dates: pd.DatetimeIndex, tickers: np.ndarray, file: str,
                     column: str) -> DataError:
    pairs = pd.DataFrame({"date": dates.to_numpy(), "ticker": tickers, "line": lines})
    repeated = pairs[pairs.duplicated(["date", "ticker"], keep=False)]
    first = repeated.iloc[0]
    same = repeated[(repeated["date"] == first["date"]) & (repeated["ticker"] == first["ticker"])]
    rows = ", ".join(str(n) for n in same["line"].head(_LIST_LIMIT))
    count = int(pairs.duplicated(["date", "ticker"]).sum())
    return DataError(f"date {_day(pd.Timestamp(first['date']))} and ticker "
                     f"{shown(first['ticker'])} appear together on rows {rows}"
                     + _in_total(count, "repeated date+ticker pairs")
                     + "; a long file has one row per date and ticker: keep one of them",
                     file=file, row=int(first["line"]), column=column)


# ----------------------------------------------------------------------------- parsing


def _parse_dates(raw: pd.Series, file: str, column: str) -> pd.DatetimeIndex:
    text = raw.str.strip()
    try:
        parsed = pd.to_datetime(text, format="ISO8601", errors="coerce")
    except (ValueError, TypeError) as exc:
        raise DataError(f"the dates cannot be parsed: {str(exc)[:200]}", file=file,
                        column=column) from exc
    # A four-digit year only: pandas reads "-25" as the year -25, which no report can print
    # (found by fuzzing: strftime raised NotImplementedError).
    years = parsed.dt.year
    bad = (parsed.isna() | (years < 1000) | (years > 9999)).to_numpy()
    if bad.any():
        first = int(bad.argmax())
        value = raw.iloc[first]
        reason = ("missing date" if pd.isna(value)
                  else f"not a date (expected YYYY-MM-DD): {shown(str(value))}")
        raise DataError(reason + _in_total(int(bad.sum()), "bad dates"),
                        file=file, row=int(raw.index[first]), column=column)
    return pd.DatetimeIndex(parsed, name="date")


def _parse_prices(path: Path, form: Form, table: pd.DataFrame, names: list[str],
                  ) -> pd.DataFrame:
    """The ``names`` columns as float64 (index = line numbers); DataError on a bad cell."""
    prices = table[names]
    textual = [name for name in names if prices[name].dtype.kind not in "fiu"]
    if textual:
        prices = prices.copy()
        prices[textual] = _coerce_text_columns(path, form, table, textual)
    frame = prices.astype(np.float64)
    values = frame.to_numpy()
    _refuse_cells(np.isinf(values), frame, path.name, "not a finite number: {!r}")
    with np.errstate(invalid="ignore"):
        _refuse_cells(values <= 0, frame, path.name, "price must be positive, got {!r}")
    return frame


def _coerce_text_columns(path: Path, form: Form, table: pd.DataFrame, names: list[str],
                         ) -> pd.DataFrame:
    """Re-read columns pandas did not parse as numbers as text; convert or name the bad cell.

    Spaces around a number, missing markers with spaces, and thousands separators in groups
    of three ("1,234.50"; "1.234,50" with a decimal comma) are read; nothing else is guessed.
    """
    header = [name.strip() for name in form.raw_names]
    positions = [header.index(name) for name in names]
    text = _read_csv(path, form.dialect, usecols=positions, dtype=str)
    text.columns = pd.Index([header[pos] for pos in sorted(positions)])
    text.index = pd.RangeIndex(2, 2 + len(text))
    text = text.loc[table.index, names]
    flat = pd.Series(text.to_numpy().ravel(), dtype=object).str.strip()
    flat = flat.mask(flat.isin(MISSING))
    numbers = pd.to_numeric(_plain_numbers(flat, form.dialect), errors="coerce")
    numbers = pd.DataFrame(numbers.to_numpy(dtype=np.float64).reshape(text.shape),
                           index=text.index, columns=text.columns)
    bad = (numbers.isna() & flat.notna().to_numpy().reshape(text.shape)).to_numpy()
    if bad.any():
        row, col = _first_cell(bad)
        hint = _decimal_hint(text.iat[row, col], form.dialect)
        raise DataError(f"not a number: {shown(str(text.iat[row, col]))}"
                        + _in_total(int(bad.sum()), "non-numeric cells") + hint,
                        file=path.name, row=int(text.index[row]), column=names[col])
    return numbers


def _plain_numbers(cells: pd.Series, dialect: Dialect) -> pd.Series:
    """Cells with thousands separators removed and the decimal mark made a point."""
    point, group = re.escape(dialect.decimal), re.escape(dialect.thousands)
    grouped = cells.str.fullmatch(rf"[+-]?\d{{1,3}}({group}\d{{3}})+({point}\d*)?", na=False)
    out = cells.where(~grouped, cells.str.replace(dialect.thousands, "", regex=False))
    if dialect.decimal == ",":
        out = out.str.replace(",", ".", regex=False)
    return out


def _decimal_hint(value: str, dialect: Dialect) -> str:
    """What to change when the cell is a number in the other decimal mark."""
    other = "," if dialect.decimal == "." else "."
    if re.fullmatch(rf"[+-]?\d+\{other}\d+", str(value).strip()):
        return (f" (read as {dialect.describe()}; set the job parameter decimal to "
                f"{shown(other)} if the file uses it)")
    return ""


def _refuse_cells(bad: np.ndarray, frame: pd.DataFrame, file: str, template: str) -> None:
    if not bad.any():
        return
    row, col = _first_cell(bad)
    value = float(frame.iat[row, col])
    raise DataError(template.format(value) + _in_total(int(bad.sum()), "such cells"),
                    file=file, row=int(frame.index[row]), column=str(frame.columns[col]))


def _first_cell(mask: np.ndarray) -> tuple[int, int]:
    """Row and column positions of the first True cell in reading order (row by row)."""
    flat = int(np.argmax(mask.ravel(order="C")))
    row, col = divmod(flat, mask.shape[1])
    return row, col


def _in_total(count: int, what: str) -> str:
    return f" ({count} {what} in total)" if count > 1 else ""


def _short_list(items: list[str]) -> str:
    shown = ", ".join(items[:_LIST_LIMIT])
    more = len(items) - _LIST_LIMIT
    return f"{shown}, … ({more} more)" if more > 0 else shown


# ----------------------------------------------------------------------------- cleaning


def _dedupe_and_sort(prices: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    duplicated = prices.index.duplicated(keep="first")
    count = int(duplicated.sum())
    if count:
        prices = prices[~duplicated]
    if not prices.index.is_monotonic_increasing:
        prices = prices.sort_index(kind="stable")
    return prices, count


def _check_row_count(rows: int, file: str, *, after_cleaning: bool) -> None:
    if rows >= MIN_ROWS:
        return
    if after_cleaning:
        raise DataError(f"only {rows} dates have a price for every kept ticker (after dropping "
                        f"the dates before the latest first price); at least {MIN_ROWS} are "
                        "needed", file=file)
    raise DataError(f"only {rows} dates of prices (after removing duplicate dates); "
                    f"at least {MIN_ROWS} are needed", file=file)


@dataclass(frozen=True)
class _Gaps:
    """Per ticker: missing cells, missing before the first price, longest later run."""

    missing: np.ndarray
    leading: np.ndarray
    longest: np.ndarray
    run_end: np.ndarray
    fillable: np.ndarray


def _gaps(values: np.ndarray) -> _Gaps:
    missing = np.isnan(values)
    started = np.cumsum(~missing, axis=0) > 0
    fillable = missing & started
    counts = np.cumsum(fillable, axis=0)
    base = np.maximum.accumulate(np.where(fillable, 0, counts), axis=0)
    runs = counts - base
    return _Gaps(missing=missing.sum(axis=0), leading=(~started).sum(axis=0),
                 longest=runs.max(axis=0, initial=0), run_end=runs.argmax(axis=0),
                 fillable=fillable)


def _drop_reason(j: int, gaps: _Gaps, dates: pd.DatetimeIndex, rules: ValidationRules) -> str:
    """Why ticker ``j`` must go (too sparse, or a gap too long to fill)."""
    rows = len(dates)
    if gaps.leading[j] == rows:
        return "no prices at all"
    fraction = gaps.missing[j] / rows
    if fraction > rules.max_missing_fraction:
        first = f"; first price on {_day(dates[gaps.leading[j]])}" if gaps.leading[j] else ""
        return f"{fraction:.1%} missing (max {rules.max_missing_fraction:.1%}){first}"
    end = int(gaps.run_end[j])
    start = end - int(gaps.longest[j]) + 1
    return (f"{gaps.longest[j]} consecutive missing prices from {_day(dates[start])} "
            f"to {_day(dates[end])} (at most {rules.max_gap_days} are filled)")


def _clean(prices: pd.DataFrame, rules: ValidationRules, file: str, *, rows_read: int,
           duplicates: int) -> tuple[pd.DataFrame, QualityReport]:
    tickers = [str(name) for name in prices.columns]
    gaps = _gaps(prices.to_numpy())
    rows = len(prices)
    # Whole-array decisions; Python only words the reasons of the (few) tickers concerned.
    keep = ~((gaps.leading == rows) | (gaps.missing / rows > rules.max_missing_fraction)
             | (gaps.longest > rules.max_gap_days))
    dropped = {tickers[j]: _drop_reason(int(j), gaps, prices.index, rules)
               for j in np.flatnonzero(~keep)}
    late_at = np.flatnonzero(keep & (gaps.leading > 0))
    late = {tickers[j]: _day(prices.index[gaps.leading[j]]) for j in late_at}
    if rules.late_listing == "drop_ticker":
        dropped.update({name: f"first price on {first}, after the file's first date "
                              f"{_day(prices.index[0])} (late_listing: drop_ticker)"
                        for name, first in late.items()})
        keep[late_at] = False
        late = {}
    _check_ticker_count(int(keep.sum()), dropped, rules.min_tickers, file)
    filled = prices.loc[:, keep].ffill()
    complete = filled.notna().all(axis=1).to_numpy()
    clean = filled[complete]
    _check_row_count(len(clean), file, after_cleaning=True)
    edge = int((~complete).sum())
    report = QualityReport(
        rows_read=rows_read, rows_kept=len(clean), duplicate_dates_removed=duplicates,
        tickers_read=len(tickers), tickers_kept=[str(name) for name in clean.columns],
        tickers_dropped=dropped, cells_filled=int(gaps.fillable[:, keep].sum()),
        missing_by_ticker={name: int(n) for name, n in zip(tickers, gaps.missing, strict=True)
                           if n},
        first_date=_day(clean.index[0]), last_date=_day(clean.index[-1]),
        reference_missing=_reference_missing(rules.reference_tickers, tickers),
        reference_unexpected=_reference_unexpected(rules.reference_tickers, tickers),
        edge_rows_dropped=edge, late_listings=late,
        warnings=[_trim_warning(edge, len(prices), late, prices.index)] if edge else [],
    )
    return clean, report


def _trim_warning(edge: int, rows: int, late: dict[str, str], dates: pd.DatetimeIndex) -> str:
    """The sentence report.json carries when late listings cut every ticker's history."""
    named = ", ".join(f"{name} (first price {first})"
                      for name, first in list(late.items())[:_LIST_LIMIT])
    more = f" and {len(late) - _LIST_LIMIT} more" if len(late) > _LIST_LIMIT else ""
    return (f"{edge} leading dates ({edge / rows:.1%} of the history, {_day(dates[0])} to "
            f"{_day(dates[edge - 1])}) were dropped for every ticker to keep the late "
            f"listing{'s' if len(late) > 1 else ''} {named}{more}; set late_listing to "
            "'drop_ticker' to drop the late tickers and keep the whole history")


def _check_ticker_count(kept: int, dropped: dict[str, str], needed: int, file: str) -> None:
    if kept >= needed:
        return
    items = [f"{name} ({reason})" for name, reason in dropped.items()]
    detail = f": dropped {_short_list(items)}" if items else ""
    raise DataError(f"only {kept} usable tickers (need at least {needed} for the portfolio)"
                    f"{detail}", file=file)


def _day(stamp: pd.Timestamp) -> str:
    return stamp.strftime("%Y-%m-%d") if stamp == stamp.normalize() else stamp.isoformat()


def _reference_missing(reference: frozenset[str] | None, tickers: list[str]) -> list[str]:
    return sorted(reference - set(tickers)) if reference is not None else []


def _reference_unexpected(reference: frozenset[str] | None, tickers: list[str]) -> list[str]:
    return sorted(set(tickers) - reference) if reference is not None else []


# ----------------------------------------------------------------------------- reference


def _reference_rows(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, stripped fields) of the non-blank, non-comment lines."""
    rows: list[tuple[int, list[str]]] = []
    try:
        with open(path, encoding="utf-8-sig", newline="") as text:
            reader = csv.reader(text)
            for fields in reader:
                stripped = [field.strip() for field in fields]
                if any(stripped) and not stripped[0].startswith("#"):
                    rows.append((reader.line_num, stripped))
    except UnicodeDecodeError as exc:  # checked before; kept for a file changed meanwhile
        raise DataError(f"not UTF-8 text: invalid byte at offset {exc.start}",
                        file=path.name) from None
    except csv.Error as exc:
        raise DataError(f"not a readable reference file: {exc}", file=path.name) from exc
    return rows


def _reference_tickers(rows: list[tuple[int, list[str]]]) -> list[tuple[int, str]]:
    line, first = rows[0]
    if first[0].lower() in _REFERENCE_HEADER_WORDS:
        return [(number, fields[0]) for number, fields in rows[1:] if fields[0]]
    named = [name for name in first if name]
    if len(named) > 1:
        return [(line, name) for name in named if name.lower() != "date"]
    return [(number, fields[0]) for number, fields in rows if fields[0]]
