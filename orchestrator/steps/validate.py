"""Validate a wide CSV of daily prices and turn it into a clean, gap-free price table.

Input: a UTF-8 CSV whose header has a ``date`` column (any case, any position) and one
column per ticker. Every problem with the data raises :class:`~orchestrator.errors.DataError`
naming the file, and where it makes sense the row (the line number a user sees in an editor,
header = line 1; one record per line is assumed) and the column (the header name).

Checks, in order: the file exists, is not empty, is not larger than
``ValidationRules.max_input_bytes`` (refused before reading), and is UTF-8 text (no NUL
bytes). A gzip file (``prices.csv.gz``, known by its first bytes) is decompressed first, to a
temporary file, and refused as soon as it expands past ``max_input_bytes`` too: a small file
that inflates to gigabytes (a "zip bomb") costs at most that many bytes of work. No other
compression is read (pandas would otherwise guess one from the name, with no limit).
The header has no empty or duplicate names and exactly one ``date`` column. No row
has more fields than the header (a shorter row's absent trailing cells are missing). Dates
are ISO 8601 (``YYYY-MM-DD``; other formats such as ``01/02/2018`` are ambiguous and
refused). Prices are finite numbers greater than zero.

Missing data: empty cells and pandas' standard markers (``NA``, ``N/A``, ``NaN``, ``null``,
``#N/A``…) are missing prices, not errors. Blank lines are skipped. Duplicate dates are
dropped (the first occurrence in the file is kept) and counted; dates out of order are sorted.

Sparse-data policy (the choice this module makes):

* Missing cells are counted per ticker over every distinct date of the file, *including* the
  leading cells of a ticker listed after the first date (AMCR in the S&P 500 sample). A
  ticker whose missing fraction exceeds ``max_missing_fraction`` is dropped, with the reason
  and its first price date. We never cut the history of all the other tickers to keep one
  late listing: the covariance estimate needs the long common history more than one extra
  asset.
* After its first price, a run of at most ``max_gap_days`` consecutive missing cells
  (trailing runs included) is filled forward with the last known price and counted in
  ``cells_filled``; a ticker with a longer run is dropped, with the run's dates.
* A kept ticker may still lack prices before its first quote (at most
  ``max_missing_fraction`` of the rows, by the rule above). Those leading rows cannot be
  filled without inventing prices, so they are dropped for every ticker and counted in
  ``QualityReport.edge_rows_dropped``. The result has no NaN.

At least :data:`MIN_ROWS` dates and ``min_tickers`` usable tickers must remain.

This module is pure domain code: it imports neither Celery nor the database layer.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import gzip
import os
import re
import tempfile
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from orchestrator.errors import DataError, ParameterError

MIN_ROWS = 30
"""Fewest dates of prices that make a usable covariance estimate."""

SNIFF_BYTES = 4096
GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20
MAX_REFERENCE_BYTES = 10_000_000
_LIST_LIMIT = 10
_REFERENCE_HEADER_WORDS = frozenset({"ticker", "tickers", "symbol", "symbols", "code"})
_TICKER_RE = re.compile(r"[^\s,;\"']{1,32}")
_PARSER_ERROR_RE = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")

Progress = Callable[[float], None]


@dataclass(frozen=True)
class ValidationRules:
    """Limits that decide what counts as usable data."""

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


@dataclass(frozen=True)
class QualityReport:
    """What validation read, kept, filled and dropped.

    ``rows_read == rows_kept + duplicate_dates_removed + edge_rows_dropped``.
    ``missing_by_ticker`` lists the tickers read that have at least one missing cell.
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
        table, date_col = _read_table(readable, rules)
        _report(progress, 0.3)
        prices = _parse_prices(readable, table, date_col)
    prices.index = _parse_dates(table[date_col], file, date_col)
    prices, duplicates = _dedupe_and_sort(prices)
    _check_row_count(len(prices), file, after_cleaning=False)
    _report(progress, 0.7)
    clean, report = _clean(prices, rules, file, rows_read=len(table), duplicates=duplicates)
    _report(progress, 1.0)
    return clean, report


def write_clean(prices: pd.DataFrame, path: Path) -> None:
    """Write ``prices`` as CSV (shortest round-trip floats) to a temporary name, then rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as out:
            prices.to_csv(out, index_label="date", lineterminator="\n")
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


def read_reference(path: Path) -> frozenset[str]:
    """Read expected tickers: one per line, or a CSV whose header or first column lists them.

    The first column is used when the first line is a header word (``ticker``, ``symbol``…)
    or a single field; otherwise the header's names (except ``date``) are the tickers.
    Blank lines and lines starting with ``#`` are skipped.
    """
    path = Path(path)
    file = path.name
    _check_file(path, MAX_REFERENCE_BYTES)
    _check_text(path)
    rows = _reference_rows(path)
    if not rows:
        raise DataError("no tickers in the reference file", file=file)
    tickers = _reference_tickers(rows)
    for line, ticker in tickers:
        if not _TICKER_RE.fullmatch(ticker):
            raise DataError(f"not a ticker: {ticker!r}", file=file, row=line)
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


def _check_text(path: Path) -> None:
    """Refuse a binary file by its first bytes: NUL bytes or invalid UTF-8."""
    with open(path, "rb") as raw:
        head = raw.read(SNIFF_BYTES)
    if b"\x00" in head:
        raise DataError("not a text CSV file (it contains NUL bytes)", file=path.name)
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError as exc:
        raise _not_utf8(path.name, exc) from exc


def _not_utf8(file: str, exc: UnicodeDecodeError) -> DataError:
    return DataError(f"not a text CSV file (not UTF-8 text: invalid byte at offset {exc.start})",
                     file=file)


def _read_header(path: Path) -> list[str]:
    try:
        with open(path, encoding="utf-8-sig", newline="") as text:
            header = next(csv.reader(text), [])
    except UnicodeDecodeError as exc:
        raise _not_utf8(path.name, exc) from exc
    except csv.Error as exc:
        raise DataError(f"the header is not valid CSV: {exc}", file=path.name, row=1) from exc
    if not any(name.strip() for name in header):
        raise DataError("the first line is empty; it must be the header "
                        "(a 'date' column, then one column per ticker)", file=path.name, row=1)
    return header


def _find_date_column(names: list[str], file: str) -> str:
    """Check the header names; return the name of the date column."""
    unnamed = [str(i + 1) for i, name in enumerate(names) if not name]
    if unnamed:
        raise DataError(f"no name in the header for column(s) {', '.join(unnamed)} "
                        "(counting from 1)", file=file, row=1)
    duplicates = [name for name, count in Counter(names).items() if count > 1]
    if duplicates:
        raise DataError(f"duplicate column names: {', '.join(duplicates)}", file=file, row=1)
    dates = [name for name in names if name.lower() == "date"]
    if not dates:
        raise DataError("no date column; the header must have a 'date' column, found: "
                        f"{_short_list(names)}", file=file, row=1)
    if len(dates) > 1:
        raise DataError(f"several date columns: {', '.join(dates)}", file=file, row=1)
    if len(names) == 1:
        raise DataError("no ticker columns; the header has only the date column",
                        file=file, row=1)
    return dates[0]


def _read_table(path: Path, rules: ValidationRules) -> tuple[pd.DataFrame, str]:
    """The file's rows as read (index = line numbers, blank lines dropped); the date column."""
    _check_file(path, rules.max_input_bytes)
    _check_text(path)
    raw_names = _read_header(path)
    names = [name.strip() for name in raw_names]
    date_col = _find_date_column(names, path.name)
    date_raw = raw_names[names.index(date_col)]
    table = _read_csv(path, dtype={date_raw: str})
    if not isinstance(table.index, pd.RangeIndex) or table.shape[1] != len(names):
        raise DataError(f"the data rows have more fields than the header ({len(names)} columns)",
                        file=path.name, row=2)
    table.columns = pd.Index(names)
    table.index = pd.RangeIndex(2, 2 + len(table))
    table = table[table.notna().any(axis=1).to_numpy()]
    if table.empty:
        raise DataError("no data rows: the file has only a header", file=path.name)
    return table, date_col


def _read_csv(path: Path, **options: object) -> pd.DataFrame:
    try:
        return pd.read_csv(path, skip_blank_lines=False, low_memory=False, encoding="utf-8",
                           compression=None, **options)
    except UnicodeDecodeError as exc:
        raise _not_utf8(path.name, exc) from exc
    except pd.errors.ParserError as exc:
        raise _parser_error(path.name, exc) from exc


def _parser_error(file: str, exc: pd.errors.ParserError) -> DataError:
    match = _PARSER_ERROR_RE.search(str(exc))
    if match is None:
        return DataError(f"not a valid CSV file: {exc}", file=file)
    expected, line, seen = match.groups()
    return DataError(f"{seen} fields, but the header has {expected}", file=file, row=int(line))


# ----------------------------------------------------------------------------- parsing


def _parse_dates(raw: pd.Series, file: str, column: str) -> pd.DatetimeIndex:
    text = raw.str.strip()
    try:
        parsed = pd.to_datetime(text, format="ISO8601", errors="coerce")
    except (ValueError, TypeError) as exc:
        raise DataError(f"the dates cannot be parsed: {exc}", file=file, column=column) from exc
    # A four-digit year only: pandas reads "-25" as the year -25, which no report can print
    # (found by fuzzing: strftime raised NotImplementedError).
    years = parsed.dt.year
    bad = (parsed.isna() | (years < 1000) | (years > 9999)).to_numpy()
    if bad.any():
        first = int(bad.argmax())
        value = raw.iloc[first]
        reason = ("missing date" if pd.isna(value)
                  else f"not a date (expected YYYY-MM-DD): {value!r}")
        raise DataError(reason + _in_total(int(bad.sum()), "bad dates"),
                        file=file, row=int(raw.index[first]), column=column)
    return pd.DatetimeIndex(parsed, name="date")


def _parse_prices(path: Path, table: pd.DataFrame, date_col: str) -> pd.DataFrame:
    """The ticker columns as float64 (index = line numbers); DataError on a bad cell."""
    prices = table.drop(columns=date_col)
    textual = [name for name in prices.columns if prices[name].dtype.kind not in "fiu"]
    if textual:
        prices[textual] = _coerce_text_columns(path, table, textual)
    frame = prices.astype(np.float64)
    values = frame.to_numpy()
    _refuse_cells(np.isinf(values), frame, path.name, "not a finite number: {!r}")
    with np.errstate(invalid="ignore"):
        _refuse_cells(values <= 0, frame, path.name, "price must be positive, got {!r}")
    return frame


def _coerce_text_columns(path: Path, table: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """Re-read columns pandas did not parse as numbers as text; convert or name the bad cell."""
    positions = [table.columns.get_loc(name) for name in names]
    text = _read_csv(path, usecols=positions, dtype=str)
    text.columns = pd.Index([table.columns[pos] for pos in sorted(positions)])
    text.index = pd.RangeIndex(2, 2 + len(text))
    text = text.loc[table.index, names]
    numbers = text.apply(pd.to_numeric, errors="coerce")
    bad = (numbers.isna() & text.notna()).to_numpy()
    if bad.any():
        row, col = _first_cell(bad)
        raise DataError(f"not a number: {text.iat[row, col]!r}"
                        + _in_total(int(bad.sum()), "non-numeric cells"),
                        file=path.name, row=int(text.index[row]), column=names[col])
    return numbers


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
    """Why ticker ``j`` must go, or '' when it is usable."""
    rows = len(dates)
    if gaps.leading[j] == rows:
        return "no prices at all"
    fraction = gaps.missing[j] / rows
    if fraction > rules.max_missing_fraction:
        first = f"; first price on {_day(dates[gaps.leading[j]])}" if gaps.leading[j] else ""
        return f"{fraction:.1%} missing (max {rules.max_missing_fraction:.1%}){first}"
    if gaps.longest[j] > rules.max_gap_days:
        end = int(gaps.run_end[j])
        start = end - int(gaps.longest[j]) + 1
        return (f"{gaps.longest[j]} consecutive missing prices from {_day(dates[start])} "
                f"to {_day(dates[end])} (at most {rules.max_gap_days} are filled)")
    return ""


def _clean(prices: pd.DataFrame, rules: ValidationRules, file: str, *, rows_read: int,
           duplicates: int) -> tuple[pd.DataFrame, QualityReport]:
    tickers = [str(name) for name in prices.columns]
    gaps = _gaps(prices.to_numpy())
    reasons = {name: _drop_reason(j, gaps, prices.index, rules) for j, name in enumerate(tickers)}
    dropped = {name: reason for name, reason in reasons.items() if reason}
    keep = np.array([not reasons[name] for name in tickers], dtype=bool)
    _check_ticker_count(int(keep.sum()), dropped, rules.min_tickers, file)
    filled = prices.loc[:, keep].ffill()
    complete = filled.notna().all(axis=1).to_numpy()
    clean = filled[complete]
    _check_row_count(len(clean), file, after_cleaning=True)
    report = QualityReport(
        rows_read=rows_read, rows_kept=len(clean), duplicate_dates_removed=duplicates,
        tickers_read=len(tickers), tickers_kept=[str(name) for name in clean.columns],
        tickers_dropped=dropped, cells_filled=int(gaps.fillable[:, keep].sum()),
        missing_by_ticker={name: int(n) for name, n in zip(tickers, gaps.missing, strict=True)
                           if n},
        first_date=_day(clean.index[0]), last_date=_day(clean.index[-1]),
        reference_missing=_reference_missing(rules.reference_tickers, tickers),
        reference_unexpected=_reference_unexpected(rules.reference_tickers, tickers),
        edge_rows_dropped=int((~complete).sum()),
    )
    return clean, report


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
    except UnicodeDecodeError as exc:
        raise _not_utf8(path.name, exc) from exc
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
