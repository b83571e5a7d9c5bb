"""Read a file of query/document pairs, labelled rows or presampled triples; detect which.

The extension picks the reader (.tsv .csv .jsonl .parquet, see :mod:`twotower.data.readers.files`);
the columns pick the format. TSV/CSV files need a header line; JSONL columns are the keys of
the first object.

==============================  ==========  ===============================================
columns (any order)             format      rows are
==============================  ==========  ===============================================
``query, doc``                  pairs       positive pairs (for in-batch negatives)
``label, query, doc``           labelled    pointwise click-log rows, label 0 or 1
``query, doc, neg_1 .. neg_K``  presampled  a positive and K sampled negative documents
``query, doc, negatives``       presampled  the same, the negatives as one list
==============================  ==========  ===============================================

A label is 0 or 1, as a number (``0``, ``1.0``) or a string (``"0"``, ``"1.0"``); booleans
and anything else are errors. ``neg_1 .. neg_K`` run from 1 without gaps. A ``negatives``
list is a JSONL/Parquet list, or in TSV/CSV a JSON array string (``["doc a", "doc b"]``).
Every presampled row has as many negatives as the first. ``label`` cannot be combined with
negatives. Other columns are ignored (and named once in an INFO log line). Query, document and
negative texts must not be blank.

With ``on_error="skip"`` a bad row is dropped, counted in ``PairData.skipped`` and logged as
one WARNING; file-level problems (extension, header, columns) always raise.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twotower.data.readers.files import RowError, SkipLog, read_table
from twotower.errors import DataError

_NEG = re.compile(r"neg_([1-9][0-9]*)")
_LABELS = {0: 0.0, 1: 1.0, "0": 0.0, "1": 1.0, "0.0": 0.0, "1.0": 1.0}  # 0.0 == 0 as a key

log = logging.getLogger("twotower.data")


@dataclass
class PairData:
    """The rows of a pair file, one entry per row in every list.

    ``labels`` (0.0 / 1.0) is set for the labelled format only, ``negatives`` (K texts a row)
    for presampled only. ``lines[i]`` is row ``i``'s line in the file, for later messages.
    """

    path: str
    format: str
    queries: list[str] = field(default_factory=list)
    docs: list[str] = field(default_factory=list)
    labels: list[float] | None = None
    negatives: list[list[str]] | None = None
    lines: list[int] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)


def load_pairs(path: str | Path, on_error: str = "raise") -> PairData:
    """Read a pair file and detect its format from its columns (see the module docstring).

    Args:
        path: a .tsv, .csv, .jsonl or .parquet file.
        on_error: ``"raise"`` stops at the first bad row; ``"skip"`` drops and counts bad rows.

    Raises:
        DataError: naming the file, line and field of the first problem.
        ConfigError: ``on_error`` is not ``"raise"`` or ``"skip"``.
    """
    skips = SkipLog(on_error)
    columns, rows = read_table(path, required=("query", "doc"), on_bad_row=skips)
    fmt, neg_columns = _detect(path, columns)
    known = {"query", "doc", "label", "negatives", *neg_columns}
    if extra := [c for c in columns if c not in known]:
        log.info("%s: ignoring unknown columns %s", path, ", ".join(extra))
    data = PairData(str(path), fmt)
    if fmt == "labelled":
        data.labels = []
    if fmt == "presampled":
        data.negatives = []
    first_k: tuple[int, int] | None = None  # (K, line) of the first presampled row
    for line, row in rows:
        try:
            query, doc, label, negatives = _row(path, line, row, fmt, neg_columns)
            if negatives is not None:
                first_k = first_k or (len(negatives), line)
                if len(negatives) != first_k[0]:
                    problem = (
                        f"wrong negatives count: {len(negatives)} negatives, but the first row "
                        f"(line {first_k[1]}) has {first_k[0]}"
                    )
                    raise RowError(path, line, "negatives", problem, "wrong negatives count")
        except RowError as err:
            skips(err)
            continue
        data.queries.append(query)
        data.docs.append(doc)
        data.lines.append(line)
        if data.labels is not None:
            data.labels.append(label)
        if data.negatives is not None:
            data.negatives.append(negatives)
    skips.warn()
    data.skipped = dict(skips.counts)
    if not data.queries:
        raise DataError(path, None, None, "no rows")
    return data


def _detect(path: str | Path, columns: list[str]) -> tuple[str, list[str]]:
    """The format and the ``neg_k`` columns in order, from the column names."""
    # Compared as text: int() refuses a digit string over 4300 digits (neg_111...1).
    found = [c for c in columns if _NEG.fullmatch(c)]
    neg_columns = [f"neg_{k}" for k in range(1, len(found) + 1)]
    gap = next((c for c in neg_columns if c not in found), None)
    if gap is not None:
        shown = ", ".join(sorted(found, key=lambda c: (len(c), c)))[:200]
        problem = f"missing: negative columns must run neg_1..neg_K without gaps (found {shown})"
        raise DataError(path, 1, gap, problem)
    if neg_columns and "negatives" in columns:
        raise DataError(path, 1, "negatives", "cannot be combined with neg_1..neg_K columns")
    if "label" in columns and (neg_columns or "negatives" in columns):
        problem = (
            "cannot be combined with negatives: a labelled row holds one document, "
            "a presampled row a positive and its negatives"
        )
        raise DataError(path, 1, "label", problem)
    if "label" in columns:
        return "labelled", []
    if neg_columns or "negatives" in columns:
        return "presampled", neg_columns
    return "pairs", []


def _row(path: str | Path, line: int, row: dict[str, Any], fmt: str, neg_columns: list[str]):
    """``(query, doc, label or None, negatives or None)`` of one row, checked."""
    query = _text(path, line, "query", row["query"])
    doc = _text(path, line, "doc", row["doc"])
    label = _label(path, line, row.get("label")) if fmt == "labelled" else None
    negatives = None
    if neg_columns:
        negatives = [_text(path, line, c, row.get(c)) for c in neg_columns]
    elif fmt == "presampled":
        negatives = _negative_list(path, line, row.get("negatives"))
    return query, doc, label, negatives


def _text(path: str | Path, line: int, name: str, value: Any) -> str:
    if value is None:
        raise RowError(path, line, name, "missing", "missing text")
    if not isinstance(value, str):
        raise RowError(path, line, name, f"not a string: {value!r}", "not a string")
    if not value.strip():
        raise RowError(path, line, name, "empty text", "empty text")
    return value


def _label(path: str | Path, line: int, value: Any) -> float:
    if value is None:
        raise RowError(path, line, "label", "missing", "missing label")
    key = value.strip() if isinstance(value, str) else value
    if not isinstance(value, bool) and isinstance(key, str | int | float) and key in _LABELS:
        return _LABELS[key]
    raise RowError(path, line, "label", f"not 0 or 1: {value!r}", "bad label")


def _negative_list(path: str | Path, line: int, value: Any) -> list[str]:
    if isinstance(value, str):  # TSV / CSV hold the list as a JSON array
        try:
            value = json.loads(value)
        except (ValueError, RecursionError) as e:
            if isinstance(e, json.JSONDecodeError):
                where = f"at column {e.colno} of the field"
                if e.lineno > 1:  # a quoted CSV field may hold line breaks
                    where = f"at line {e.lineno}, column {e.colno} of the field"
                problem = f"malformed JSON array: {e.msg.removesuffix(' at')} {where}"
            else:  # RecursionError, or int() refusing over 4300 digits
                problem = "malformed JSON array: nested too deeply or an integer too long to read"
            raise RowError(path, line, "negatives", problem, "malformed JSON") from None
    if value is None:
        raise RowError(path, line, "negatives", "missing", "missing negatives")
    if not isinstance(value, list) or not value:
        problem = f"expected a non-empty list of texts, got {value!r}"[:120]
        raise RowError(path, line, "negatives", problem, "bad negatives")
    return [_text(path, line, f"negatives[{i}]", v) for i, v in enumerate(value)]
