"""Line-numbered readers for JSONL, TSV, CSV and Parquet that fail with a :class:`DataError`.

Every problem names the file, the 1-based physical line (a table's header is line 1) and,
where one is known, the field, so bad input stops before training with a message a person can
act on. Problems confined to one row are :class:`RowError`; a caller that skips bad rows
passes ``on_bad_row`` (usually a :class:`SkipLog`) to receive them instead of the exception.

Text is strict UTF-8 (a leading byte-order mark is dropped). TSV is read with
``csv.QUOTE_NONE``: a field is everything between two tabs, so quotes are literal text (as in
BEIR qrels and MS MARCO) and a field cannot hold a tab or a newline. CSV uses standard quoting
(RFC 4180), so a quoted field may hold commas, quotes and newlines; such a row is numbered by
the line it starts on. Blank lines are skipped in every text format.
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from twotower.errors import DataError, check_choice

EXTENSIONS = (".tsv", ".csv", ".jsonl", ".parquet")
ON_ERROR = ("raise", "skip")
SKIP_HINT = "(data.on_error=skip drops bad rows)"  # ends a row's error: skipping can drop it
BOM = b"\xef\xbb\xbf"
_JSON_TYPES = {list: "an array", str: "a string", int: "a number", float: "a number"}
# Whole web pages exceed csv's default field limit of 128 KiB.
csv.field_size_limit(2**31 - 1)

log = logging.getLogger("twotower.data")


class RowError(DataError):
    """A problem confined to one row, which ``on_error="skip"`` may drop.

    ``reason`` is a short label without ids or values (``"empty text"``), used to count skips.
    """

    def __init__(
        self, path: Any, line: int | None, field: str | None, problem: str, reason: str = ""
    ):
        super().__init__(path, line, field, problem)
        self.reason = reason or problem


OnBadRow = Callable[[RowError], None]


def _raise(err: RowError) -> None:
    raise err


def printable(text: str) -> str:
    """``text`` with control characters (CR, LF, ...) escaped, so a message stays one line.

    >>> printable("query\\r")
    'query\\\\r'
    """
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class SkipLog:
    """Handles row errors: raises them (saying that ``data.on_error=skip`` would drop the row),
    or counts them and warns once per file.

    Args:
        on_error: ``"raise"`` or ``"skip"``.
        root: skipped rows are counted as ``"{path relative to root}:{reason}"``; without a root,
            as ``"{path as given}:{reason}"``, so that files of the same name stay apart.
    """

    def __init__(self, on_error: str, root: str | Path | None = None):
        check_choice("on_error", on_error, ON_ERROR)
        self.skip = on_error == "skip"
        self.root = Path(root) if root is not None else None
        self.counts: dict[str, int] = {}
        self._pending: dict[str, tuple[int, RowError]] = {}  # path -> (count, first error)

    def __call__(self, err: RowError) -> None:
        if not self.skip:
            problem = f"{err.problem} {SKIP_HINT}"
            raise RowError(err.path, err.line, err.field, problem, err.reason) from None
        key = f"{self.name(err.path)}:{err.reason}"
        self.counts[key] = self.counts.get(key, 0) + 1
        count, first = self._pending.get(err.path, (0, err))
        self._pending[err.path] = (count + 1, first)

    def name(self, path: str | Path) -> str:
        """How a file is named in ``counts``."""
        path = Path(path)
        return path.relative_to(self.root).as_posix() if self.root else str(path)

    def warn(self) -> None:
        """Log one WARNING per file that had rows skipped since the last call."""
        for path, (count, first) in self._pending.items():
            row = "row" if count == 1 else "rows"
            log.warning("skipped %d bad %s of %s; the first: %s", count, row, path, first)
        self._pending.clear()


def read_jsonl(path: str | Path, on_bad_row: OnBadRow | None = None) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_no, object)`` for each non-blank line of a JSON Lines file.

    Raises:
        DataError: the file does not exist; a line is not UTF-8, not JSON or not a JSON object
            (a :class:`RowError`, passed to ``on_bad_row`` instead when one is given).
    """
    path = Path(path)
    _check_file(path)
    return _jsonl_rows(path, on_bad_row or _raise)


def read_table(
    path: str | Path,
    required: Sequence[str] = (),
    on_bad_row: OnBadRow | None = None,
    header_hint: str = "",
) -> tuple[list[str], Iterator[tuple[int, dict[str, Any]]]]:
    """Columns and ``(line_no, row)`` pairs of a .tsv, .csv, .jsonl or .parquet file.

    The header is checked before this returns. TSV/CSV need a header line; JSONL columns are
    the first object's keys, which must hold one of the ``required`` ones; a Parquet row's
    ``line_no`` is its 1-based row number + 1, so that the schema counts as line 1 as a header
    does. Every row of JSONL/Parquet must hold a non-null value for each ``required`` column;
    TSV/CSV rows must have the header's width. ``header_hint`` ends the message of a header
    without the ``required`` columns (what the caller accepts).

    Raises:
        DataError: unknown extension, missing file, no header line, a missing column, and the
            row-level :class:`RowError` (passed to ``on_bad_row`` instead when one is given).
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in EXTENSIONS:
        raise DataError(
            path,
            None,
            None,
            f"unknown extension {ext or '(none)'}: expected one of " + ", ".join(EXTENSIONS),
        )
    _check_file(path)
    handle = on_bad_row or _raise
    hint = f"; {header_hint}" if header_hint else ""
    if ext == ".jsonl":
        return _jsonl_table(path, required, handle, hint)
    if ext == ".parquet":
        return _parquet_table(path, required, handle, hint)
    return _delimited_table(path, ext, required, handle, hint)


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise DataError(path, None, None, "no such file")


def decode_utf8(
    path: Path, raw: bytes, line: int, field_of: Callable[[str, int], str | None]
) -> str:
    """``raw`` (one line, or a whole file from line ``line`` on) as strict UTF-8.

    A bad byte is a :class:`RowError` naming its line, its column (in characters, as an
    editor counts) and the field ``field_of(text, column)`` finds: ``text`` is the bad line
    with undecodable bytes replaced by U+FFFD, ``column`` the 0-based index of the first.
    The one strict-UTF-8 decoder of every reader; a leading byte-order mark is the caller's.
    """
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        start = raw.rfind(b"\n", 0, e.start) + 1
        end = raw.find(b"\n", e.start)
        bad = raw[start : end if end >= 0 else len(raw)]
        column = len(bad[: e.start - start].decode("utf-8"))
        field = field_of(bad.decode("utf-8", "replace"), column)
        field = None if field is None else printable(field)
        line += raw.count(b"\n", 0, e.start)
        problem = f"not UTF-8 (byte 0x{raw[e.start]:02x} at column {column + 1})"
        raise RowError(path, line, field, problem, "not UTF-8") from None


def _jsonl_rows(path: Path, handle: OnBadRow) -> Iterator[tuple[int, dict]]:
    with open(path, "rb") as f:
        for line, raw in enumerate(f, 1):
            if line == 1 and raw.startswith(BOM):
                raw = raw[len(BOM) :]
            if raw.isspace() or not raw:
                continue
            try:
                obj = _json_object(path, line, raw)
            except RowError as err:
                handle(err)
                continue
            yield line, obj


def _json_object(path: Path, line: int, raw: bytes) -> dict:
    text = decode_utf8(path, raw, line, _bad_json_field).rstrip("\r\n")
    try:
        obj = json.loads(text)
    except ValueError as e:
        raise RowError(path, line, None, _json_problem(e), "malformed JSON") from None
    except RecursionError:
        problem = "malformed JSON: nested too deeply to read"
        raise RowError(path, line, None, problem, "malformed JSON") from None
    if not isinstance(obj, dict):
        got = _JSON_TYPES.get(type(obj)) or json.dumps(obj)
        raise RowError(path, line, None, f"not a JSON object: got {got}", "not a JSON object")
    return obj


def _json_problem(e: ValueError) -> str:
    """What is wrong, and where on the line: the column, in characters, of a syntax error."""
    if isinstance(e, json.JSONDecodeError):  # "Unterminated string starting at column 9"
        return f"malformed JSON: {e.msg.removesuffix(' at')} at column {e.colno}"
    # int() refuses longer digit strings (CVE-2020-10735); json.loads raises a bare ValueError.
    return f"malformed JSON: an integer with more than {sys.get_int_max_str_digits()} digits"


def _bad_json_field(text: str, column: int) -> str | None:
    """The first key whose value holds a replaced (undecodable) byte."""
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None
    return next((str(k) for k, v in obj.items() if "\ufffd" in f"{k}{v}"), None)


def _missing(path: Path, line: int, row: dict, required: Sequence[str]) -> RowError | None:
    for name in required:
        if row.get(name) is None:
            return RowError(path, line, name, "missing", f"missing {name}")
    return None


def _jsonl_table(path: Path, required: Sequence[str], handle: OnBadRow, hint: str):
    rows = _jsonl_rows(path, handle)
    first = next(rows, None)
    if first is None:
        raise DataError(path, None, None, "empty file: no JSON objects")
    keys = [str(k) for k in first[1]]
    if required and not any(name in keys for name in required):  # other names, not a bad row
        problem = f"missing column: the first object has keys {printable(', '.join(keys))}"
        raise DataError(path, first[0], required[0], problem[:200] + hint)

    def checked() -> Iterator[tuple[int, dict[str, Any]]]:
        for line, row in itertools.chain([first], rows):
            err = _missing(path, line, row, required)
            if err is None:
                yield line, row
            else:
                handle(err)

    return list(first[1]), checked()


def _parquet_table(path: Path, required: Sequence[str], handle: OnBadRow, hint: str):
    import pyarrow as pa  # lazily: only Parquet users pay for the import
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
        columns = list(parquet.schema_arrow.names)
    except (pa.ArrowException, OSError) as e:
        raise DataError(path, None, None, f"not a readable Parquet file: {_one_line(e)}") from None
    _check_columns(path, columns, required, "the file has columns", hint)
    duplicate = next((c for i, c in enumerate(columns) if c in columns[:i]), None)
    if duplicate is not None:
        raise DataError(path, 1, printable(duplicate), "duplicate column in the schema")

    def rows() -> Iterator[tuple[int, dict[str, Any]]]:
        line = 1
        batches = parquet.iter_batches(batch_size=8192)
        while True:
            try:
                batch = next(batches, None)
            except (pa.ArrowException, OSError) as e:
                problem = f"unreadable Parquet data after row {line - 1}: {_one_line(e)}"
                raise DataError(path, None, None, problem) from None
            if batch is None:
                return
            for row in _parquet_rows(path, line, batch):
                line += 1
                err = row if isinstance(row, RowError) else _missing(path, line, row, required)
                if err is None:
                    yield line, row
                else:
                    handle(err)

    return columns, rows()


def _parquet_rows(path: Path, line: int, batch) -> Iterator[dict[str, Any] | RowError]:
    """The rows of a record batch as dicts; a RowError for a row that Python cannot hold
    (a timestamp past year 9999), the batch's first row being on line ``line + 1``."""
    try:
        rows = batch.to_pylist()
    except (ArithmeticError, ValueError):  # OverflowError; the slow path finds row and column
        rows = None
    if rows is not None:
        yield from rows
        return
    columns = batch.schema.names
    for i in range(batch.num_rows):
        row: dict[str, Any] = {}
        err = None
        for name, column in zip(columns, batch.columns, strict=True):
            try:
                row[name] = column[i].as_py()
            except (ArithmeticError, ValueError) as e:
                problem = f"a {column.type} value Python cannot hold: {_one_line(e)}"
                err = RowError(path, line + i + 1, printable(name), problem, "unreadable value")
                break
        yield row if err is None else err


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())


def _check_columns(
    path: Path, columns: list[str], required: Sequence[str], has: str, hint: str
) -> None:
    missing = [name for name in required if name not in columns]
    if missing:
        problem = f"missing column: {has} {printable(', '.join(columns)) or '(none)'}"
        raise DataError(path, 1, missing[0], problem + hint)


class _Lines:
    """Decoded lines for ``csv.reader``; remembers the line the current record started on."""

    def __init__(self, path: Path, f: IO[bytes], dialect: dict, handle: OnBadRow):
        self.path, self.f, self.dialect, self.handle = path, f, dialect, handle
        self.line = 0
        self.start: int | None = None
        self.columns: list[str] = []

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        while raw := self.f.readline():
            self.line += 1
            if self.line == 1 and raw.startswith(BOM):
                raw = raw[len(BOM) :]
            try:
                text = decode_utf8(self.path, raw, self.line, self._bad_field)
            except RowError as err:
                if self.line == 1:
                    raise  # the header: there is nothing to skip to
                self.handle(err)
                continue
            if self.start is None:
                self.start = self.line
            return text
        raise StopIteration

    def _bad_field(self, text: str, column: int) -> str | None:
        try:
            values = next(csv.reader([text], **self.dialect))
        except (csv.Error, StopIteration):
            return None
        index = next((i for i, v in enumerate(values) if "\ufffd" in v), len(self.columns))
        return self.columns[index] if index < len(self.columns) else None


def _delimited_table(path: Path, ext: str, required: Sequence[str], handle: OnBadRow, hint: str):
    kind = ext[1:].upper()
    dialect = (
        {"delimiter": "\t", "quoting": csv.QUOTE_NONE}
        if ext == ".tsv"
        else {"delimiter": ",", "quoting": csv.QUOTE_MINIMAL, "strict": True}
    )
    f = open(path, "rb")  # closed when the rows are exhausted
    lines = _Lines(path, f, dialect, handle)
    reader = csv.reader(lines, **dialect)
    try:
        columns = _header(path, reader, kind, required, hint)
    except BaseException:
        f.close()
        raise
    lines.columns = columns

    def rows() -> Iterator[tuple[int, dict[str, Any]]]:
        with f:
            while True:
                lines.start = None
                try:
                    values = next(reader, None)
                except csv.Error as e:
                    line = lines.start or lines.line
                    err = RowError(path, line, None, f"malformed {kind}: {e}", f"malformed {kind}")
                else:
                    if values is None:
                        return
                    if not values:  # a blank line
                        continue
                    if len(values) == len(columns):
                        yield lines.start, dict(zip(columns, values, strict=True))
                        continue
                    err = _width_error(path, lines.start, columns, values)
                handle(err)

    return columns, rows()


def _header(path: Path, reader: Iterator[list[str]], kind: str, required: Sequence[str], hint: str):
    """The column names on line 1, which must include ``required``."""
    expected = f"expected columns {', '.join(required)}" if required else "expected a header"
    try:
        header = next(reader, None)
    except csv.Error as e:
        raise DataError(path, 1, None, f"malformed {kind} header: {e}") from None
    if header is None:
        raise DataError(path, None, None, f"empty file: {expected} on line 1")
    columns = [name.strip() for name in header]
    if required and not any(name in columns for name in required):
        first = ("\t" if kind == "TSV" else ",").join(header)[:80]
        problem = f"no header line: {expected} (line 1 is {first!r}){hint}"
        raise DataError(path, 1, None, problem)
    _check_columns(path, columns, required, "the header has", hint)
    duplicate = next((c for i, c in enumerate(columns) if c in columns[:i]), None)
    if duplicate is not None:
        raise DataError(path, 1, printable(duplicate), "duplicate column in the header")
    return columns


def _width_error(path: Path, line: int | None, columns: list[str], values: list[str]) -> RowError:
    field = printable(columns[len(values)]) if len(values) < len(columns) else None
    names = printable(", ".join(columns))
    problem = f"wrong column count: expected {len(columns)} ({names}), found {len(values)}"
    return RowError(path, line, field, problem, "wrong column count")
