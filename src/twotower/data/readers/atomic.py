"""RecBole atomic files (``.inter``, ``.user``, ``.item``): a typed header, tab-separated rows.

Line 1 declares the fields as ``name:type``; each type says how a value is read::

    token       a string; empty = missing ("")
    token_seq   tokens split on ``seq_separator`` (empty pieces dropped): list[str]
    float       a number; empty = missing (NaN): one float64 tensor for the column
    float_seq   numbers split on ``seq_separator``: list[float]

Text is strict UTF-8 (a leading byte-order mark is dropped) and blank lines are skipped. A field
is everything between two separators (no quoting). Every problem is a :class:`DataError` naming
the file, the line and the field.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "toy.item"
>>> _ = path.write_text("item_id:token\\tyear:float\\tgenre:token_seq\\n7\\t1995\\tAction Drama\\n")
>>> table = read_atomic(path)
>>> table.types
{'item_id': 'token', 'year': 'float', 'genre': 'token_seq'}
>>> table["item_id"], table["year"], table["genre"], table.lines
(['7'], tensor([1995.], dtype=torch.float64), [['Action', 'Drama']], tensor([2]))
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from twotower.data.readers.files import BOM, decode_utf8, printable
from twotower.errors import DataError

TYPES = ("token", "token_seq", "float", "float_seq")


@dataclass
class AtomicTable:
    """The columns of one atomic file.

    Args:
        path: the file read.
        types: field name -> type, in header order.
        columns: field name -> values (``list[str]`` for token, ``list[list[str]]`` for
            token_seq, a ``(N,)`` float64 tensor for float, ``list[list[float]]`` for float_seq).
        lines: ``(N,)`` the 1-based line of each row (the header is line 1).
    """

    path: Path
    types: dict[str, str]
    columns: dict[str, Any] = field(repr=False)
    lines: Tensor = field(repr=False)

    def __len__(self) -> int:
        return len(self.lines)

    def __getitem__(self, name: str) -> Any:
        return self.columns[name]

    def __contains__(self, name: str) -> bool:
        return name in self.types

    def error(self, row: int | None, name: str | None, problem: str) -> DataError:
        """A :class:`DataError` at row ``row`` (``None``: the header) of field ``name``."""
        line = 1 if row is None else int(self.lines[row])
        return DataError(self.path, line, None if name is None else printable(name), problem)

    def require(self, name: str, types: tuple[str, ...], why: str) -> None:
        """Raise unless the header has field ``name`` of one of ``types``."""
        if name not in self.types:
            fields = printable(", ".join(f"{n}:{t}" for n, t in self.types.items()))
            raise self.error(None, name, f"missing from the header ({fields}); {why}")
        if self.types[name] not in types:
            expected = " or ".join(types)
            raise self.error(None, name, f"is {self.types[name]}, expected {expected}; {why}")


def read_atomic(
    path: str | Path, field_separator: str = "\t", seq_separator: str = " "
) -> AtomicTable:
    """Read an atomic file into an :class:`AtomicTable`.

    Raises:
        DataError: no such file, not UTF-8, an empty file, a bad header (a field without a type,
            an unknown type, a duplicate name), a row with the wrong number of fields, a value
            of a float field that is not a number.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, None, None, "no such file")
    data = path.read_bytes()
    data = data[len(BOM) :] if data.startswith(BOM) else data
    text = decode_utf8(path, data, 1, _header_field(data, field_separator))
    lines = text.replace("\r\n", "\n").split("\n")
    if not any(line.strip() for line in lines):
        raise DataError(path, None, None, "empty file: expected a header of name:type fields")
    types = _header(path, lines[0], field_separator)
    names = list(types)
    rows, numbers = _rows(path, lines[1:], names, field_separator)
    table = AtomicTable(path, types, {}, numbers)
    for j, name in enumerate(names):
        values = [r[j] for r in rows]
        table.columns[name] = _column(table, name, types[name], values, seq_separator)
    return table


def _header_field(data: bytes, separator: str):
    """``field_of`` for :func:`decode_utf8`: the header's name of the bad byte's field."""

    def field_of(text: str, column: int) -> str | None:
        header = data.split(b"\n", 1)[0].decode("utf-8", "replace").split(separator)
        index = text[:column].count(separator)
        return header[index].partition(":")[0].strip() if index < len(header) else None

    return field_of


def _header(path: Path, line: str, separator: str) -> dict[str, str]:
    """``{name: type}`` from the header line."""
    types: dict[str, str] = {}
    for entry in line.split(separator):
        name, colon, kind = (part.strip() for part in entry.partition(":"))
        shown = printable(name)  # a message stays one line, whatever the name holds
        if not name:
            raise DataError(path, 1, None, f"a header field without a name: {entry!r}")
        if not colon:
            problem = f"no type: write {shown}:token (types: {', '.join(TYPES)})"
            raise DataError(path, 1, shown, problem)
        if kind not in TYPES:
            raise DataError(path, 1, shown, f"unknown type {kind!r}: expected {', '.join(TYPES)}")
        if name in types:
            raise DataError(path, 1, shown, "duplicate field name in the header")
        types[name] = kind
    return types


def _rows(
    path: Path, body: list[str], names: list[str], separator: str
) -> tuple[list[list[str]], Tensor]:
    """The fields of each data line and its line number; blank lines are dropped.

    Comprehensions do the bulk of the work; only the odd lines (blank, wrong width) get a look.
    """
    rows = [line.split(separator) for line in body]
    numbers = torch.arange(2, len(body) + 2)
    width = len(names)
    odd = [i for i, n in enumerate(map(len, rows)) if n != width]
    if width == 1:  # a blank line splits into one empty field: the right width
        odd = sorted(odd + [i for i, r in enumerate(rows) if len(r) == 1 and not r[0].strip()])
    blank = []
    for i in odd:
        if not body[i].strip() and separator not in body[i]:
            blank.append(i)
        elif len(rows[i]) != width:
            problem = (
                f"wrong number of fields: expected {width} ({printable(', '.join(names))}), "
                f"found {len(rows[i])}"
            )
            name = printable(names[min(len(rows[i]), width - 1)])
            raise DataError(path, i + 2, name, problem)
    if blank:
        keep = torch.ones(len(body), dtype=torch.bool)
        keep[blank] = False
        dropped = set(blank)
        return [r for i, r in enumerate(rows) if i not in dropped], numbers[keep]
    return rows, numbers


def _column(table: AtomicTable, name: str, kind: str, values: list[str], seq: str) -> Any:
    if kind == "token":
        return values
    if kind == "token_seq":
        return [[t for t in v.split(seq) if t] for v in values]
    if kind == "float":
        try:  # the fast path; the slow one below finds the row to blame
            numbers = [float(v) if v.strip() else math.nan for v in values]
        except ValueError:
            numbers = [_float(table, row, name, v, v) for row, v in enumerate(values)]
        return torch.tensor(numbers, dtype=torch.float64)
    try:
        return [[float(x) for x in v.split(seq) if x.strip()] for v in values]
    except ValueError:
        return [
            [_float(table, row, name, x, v) for x in v.split(seq) if x.strip()]
            for row, v in enumerate(values)
        ]


def _float(table: AtomicTable, row: int, name: str, value: str, whole: str) -> float:
    if not value.strip():
        return math.nan
    try:
        return float(value)
    except ValueError:
        shown = repr(value) if value == whole else f"{value!r} (in {whole!r})"
        raise table.error(row, name, f"not a number: {shown}") from None
