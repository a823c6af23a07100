"""How a price file is written: text or not, which separator, which decimal mark, which layout.

Users export from Excel in many locales and from data vendors: a European Excel writes
``date;AAPL;MSFT`` with ``1234,5`` for 1234.5; a vendor writes one row per date and ticker
(``date,ticker,close``). Validation reads them all, so the detection lives here, apart from the
checks, and is pure code (no pandas, no Celery). Everything here looks only at the first
:data:`HEAD_BYTES` of the file, except :func:`check_text`, which scans the whole file once.

Detection rules (docs/inputs.md repeats them for users):

* separator: of ``,`` ``;`` tab ``|``, the one whose fields (quotes respected) give the header
  the most columns with the data lines agreeing on that count; ``,`` on a tie. A job parameter
  or setting (``separator``) forces one.
* decimal mark: ``.``, except for a file not separated by commas whose numeric cells use a
  comma (``12,5``) more often than a point (``12.5``). ``decimal`` forces one.
* thousands separators inside numbers (``"1,234.50"``; ``1.234,50`` with a decimal comma) are
  read: the other mark of the two, in groups of three digits.
* missing-value markers: exactly the strings of :data:`MISSING` (after trimming spaces).
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

HEAD_BYTES = 1 << 20  # a few whole lines even of a 10,000-ticker file
_CHUNK = 1 << 20
_SEPARATORS = (",", ";", "\t", "|")
_HEAD_LINES = 20
_SHOWN_CHARS = 40

MISSING: tuple[str, ...] = ("", "NA", "N/A", "n/a", "na", "NaN", "nan", "-nan", "NULL",
                            "null", "None", "#N/A", "#N/A N/A", "#NA", "<NA>", "-")
"""Cells that mean "no price": what pandas, R, Excel (#N/A) and SQL exports write, and a lone
dash (Excel's accounting formats and many reports). Anything else that is not a number (``0``,
``inf``, ``--``, ``.``, ``n.a.``) is an error naming its cell, never silently missing."""

# Every byte a text file never holds: C0 controls except tab, LF, CR; and DEL.
_BINARY = bytes(b for b in range(32) if b not in (9, 10, 13)) + b"\x7f"
_TEXT = bytes(b for b in range(256) if bytes([b]) not in _BINARY)

_COMMA_DECIMAL = re.compile(r"[+-]?(\d{1,3}(\.\d{3})+|\d+),\d+")
_POINT_DECIMAL = re.compile(r"[+-]?(\d{1,3}(,\d{3})+|\d+)\.\d+")

WIDE, LONG = "wide", "long"
TICKER_NAMES = ("ticker", "symbol")
PRICE_NAMES = ("adj_close", "adj close", "adjclose", "close", "price")
"""Long layout price columns, the first present wins: adjusted closes (dividends and splits
folded in) are what returns should come from."""


@dataclass(frozen=True)
class Dialect:
    """The separator and decimal mark a file is read with, and whether each was detected."""

    separator: str = ","
    decimal: str = "."
    detected: bool = True

    @property
    def thousands(self) -> str:
        return "." if self.decimal == "," else ","

    def describe(self) -> str:
        """For messages: "';'-separated, decimal ','"."""
        return f"{shown(self.separator)}-separated, decimal {shown(self.decimal)}"


class NotText(ValueError):
    """The file is not UTF-8 text; the message says where and never shows its bytes."""


def check_text(path: Path) -> None:
    """Scan the whole file: raise NotText at the first control byte or invalid UTF-8 byte.

    The content itself is never put in the message: a binary file (a key, an image) must not
    have its bytes echoed into an error that lands in logs and the status history.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with open(path, "rb") as raw:
        while chunk := raw.read(_CHUNK):
            controls = chunk.translate(None, _TEXT)
            if controls:
                at = min(chunk.find(bytes([b])) for b in set(controls))
                raise NotText(f"not a text CSV file (binary content at byte {offset + at})")
            try:
                decoder.decode(chunk, final=False)
            except UnicodeDecodeError as exc:
                raise NotText("not a text CSV file (not UTF-8 text: invalid byte at offset "
                              f"{offset + exc.start})") from None
            offset += len(chunk)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raise NotText("not a text CSV file (not UTF-8 text: the file ends inside a character "
                      f"at offset {offset + exc.start})") from None


def head_lines(path: Path) -> list[str]:
    """The first non-blank lines of the (text) file, BOM removed; the last may be cut."""
    with open(path, "rb") as raw:
        data = raw.read(HEAD_BYTES)
    text = data.decode("utf-8", errors="replace").removeprefix("\ufeff")
    lines = [line for line in text.splitlines() if line.strip()]
    if len(data) == HEAD_BYTES and len(lines) > 1:
        lines = lines[:-1]  # possibly cut in the middle
    return lines[:_HEAD_LINES]


def detect(lines: list[str], separator: str | None = None, decimal: str | None = None,
           ) -> Dialect:
    """The dialect of a file from its first lines; ``separator``/``decimal`` force them."""
    chosen = separator or _detect_separator(lines)
    if decimal is None:
        decimal = "." if chosen == "," else _detect_decimal(lines[1:], chosen)
    return Dialect(chosen, decimal, detected=separator is None)


def _fields(lines: Iterable[str], separator: str) -> list[list[str]]:
    try:
        return list(csv.reader(io.StringIO("\n".join(lines)), delimiter=separator))
    except csv.Error:
        return []


def _detect_separator(lines: list[str]) -> str:
    best, best_score = ",", (0, 0.0)
    for candidate in _SEPARATORS:
        if not lines or candidate not in lines[0]:
            continue
        rows = _fields(lines, candidate)
        if not rows or len(rows[0]) < 2:
            continue
        width = len(rows[0])
        agree = (sum(len(row) == width for row in rows[1:]) / (len(rows) - 1)
                 if len(rows) > 1 else 1.0)  # a header alone agrees with itself
        score = (round(agree, 1) >= 0.8, width if agree >= 0.8 else agree)
        if score > best_score:
            best, best_score = candidate, score
    return best


def _detect_decimal(lines: list[str], separator: str) -> str:
    comma = point = 0
    for row in _fields(lines, separator):
        for cell in row[1:]:
            value = cell.strip()
            comma += bool(_COMMA_DECIMAL.fullmatch(value))
            point += bool(_POINT_DECIMAL.fullmatch(value))
    return "," if comma > point else "."


def layout(names: list[str]) -> tuple[str, str | None, str | None]:
    """WIDE, or LONG with its ticker and price column names (stripped, as in ``names``).

    A header is long when it has a ticker column (``ticker``/``symbol``) and a price column
    (:data:`PRICE_NAMES`), any case; every other column but the date is then ignored.
    """
    lower = {name.lower(): name for name in names}
    ticker = next((lower[n] for n in TICKER_NAMES if n in lower), None)
    price = next((lower[n] for n in PRICE_NAMES if n in lower), None)
    if ticker is None or price is None:
        return WIDE, None, None
    return LONG, ticker, price


def shown(text: str) -> str:
    """A user's string fit for a message: quoted, non-printables escaped, at most 40 chars."""
    if len(text) > _SHOWN_CHARS:
        return repr(text[:_SHOWN_CHARS])[:-1] + "…'"
    return repr(text)


def shown_list(items: list[str], limit: int = 10) -> str:
    """``shown`` names, at most ``limit`` of them, then how many more."""
    parts = [shown(item) for item in items[:limit]]
    more = len(items) - limit
    return ", ".join(parts) + (f", … ({more} more)" if more > 0 else "")
