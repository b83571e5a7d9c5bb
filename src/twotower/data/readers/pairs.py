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

Other column names are given with ``columns`` (``data.columns``), a mapping from the names
above to the file's: ``{query: question, doc: answer}`` for sentence-transformers' pairs,
``{query: anchor, doc: positive, neg: [negative]}`` for its triplets (``neg`` lists the
columns of one negative each, in order, in place of ``neg_1 .. neg_K``; ``negatives`` names a
list column). It only renames: a key it leaves out keeps its own name, and each column plays
its part wherever a file has it, as above. A header none of whose names is known is an error
that says so.

A label is 0 or 1, as a number (``0``, ``1.0``) or a string (``"0"``, ``"1.0"``); booleans
and anything else are errors. ``neg_1 .. neg_K`` run from 1 without gaps. A ``negatives``
list is a JSONL/Parquet list, or in TSV/CSV a JSON array string (``["doc a", "doc b"]``).
Every presampled row has as many negatives as the first. ``label`` cannot be combined with
negatives. Other columns are ignored (and named once in an INFO log line). Query, document and
negative texts must not be blank.

With ``on_error="skip"`` a bad row is dropped, counted in ``PairData.skipped`` and logged as
one WARNING; file-level problems (extension, header, columns) always raise.

A mapping, not a list of well-known names: sentence-transformers reads columns by position, so
its data sets name them freely (anchor/positive, question/answer, sentence1/sentence2, ...),
and a guess could silently pair the wrong columns.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twotower.data.readers.files import RowError, SkipLog, read_table
from twotower.errors import ConfigError, DataError

_NEG = re.compile(r"neg_([1-9][0-9]*)")
_LABELS = {0: 0.0, 1: 1.0, "0": 0.0, "1": 1.0, "0.0": 0.0, "1.0": 1.0}  # 0.0 == 0 as a key
NAMED = ("query", "doc", "label", "negatives")  # columns that ``columns`` may rename
COLUMN_KEYS = (*NAMED, "neg")

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


def column_names(columns: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The file's name of each column: ``columns`` (``data.columns``) over the default names.

    Returns ``query``, ``doc``, ``label``, ``negatives`` (a name, or ``None``: not looked for)
    and ``neg``: the negative columns in order (``[]`` when the mapping names a list column
    instead), or ``None``: look for ``neg_1 .. neg_K``.

    >>> names = column_names({"query": "anchor", "doc": "positive", "neg": ["negative"]})
    >>> names["query"], names["doc"], names["label"], names["negatives"], names["neg"]
    ('anchor', 'positive', 'label', None, ['negative'])

    Raises:
        ConfigError: not a mapping, an unknown key, a value that is not a column name
            (``neg``: a name or a list of names), the same column named twice, or both
            ``neg`` and ``negatives``.
    """
    if columns is not None and not isinstance(columns, Mapping):
        raise ConfigError("columns", columns, "must map names to columns: {query: q, doc: d}")
    given = dict(columns or {})
    if unknown := [k for k in given if k not in COLUMN_KEYS]:
        problem = f"unknown key {unknown[0]!r}: the keys are {', '.join(COLUMN_KEYS)}"
        raise ConfigError("columns", given, problem)
    if isinstance(given.get("neg"), str):
        given["neg"] = [given["neg"]]
    for key, value in given.items():
        values = list(value) if key == "neg" and isinstance(value, Sequence) else [value]
        if not values or not all(isinstance(n, str) and n.strip() for n in values):
            what = "a column name or a list of them" if key == "neg" else "a column name"
            raise ConfigError(f"columns.{key}", value, f"must be {what}")
        given[key] = values if key == "neg" else value
    if "neg" in given and "negatives" in given:
        problem = "give neg (columns of one negative each) or negatives (a list column), not both"
        raise ConfigError("columns", given, problem)
    mapped = [n for k, v in given.items() for n in (v if k == "neg" else [v])]
    if twice := next((n for i, n in enumerate(mapped) if n in mapped[:i]), None):
        raise ConfigError("columns", given, f"names the column {twice!r} twice")
    # A default name that the mapping gives to another key is not looked for.
    names: dict[str, Any] = {k: None if k in mapped else k for k in NAMED}
    # The mapping says where the negatives are, if it names them: the other form is not read.
    names["neg"] = given["neg"] if "neg" in given else [] if "negatives" in given else None
    if "neg" in given:
        names["negatives"] = None
    names.update({k: v for k, v in given.items() if k != "neg"})
    return names


def load_pairs(
    path: str | Path, on_error: str = "raise", columns: Mapping[str, Any] | None = None
) -> PairData:
    """Read a pair file and detect its format from its columns (see the module docstring).

    Args:
        path: a .tsv, .csv, .jsonl or .parquet file.
        on_error: ``"raise"`` stops at the first bad row; ``"skip"`` drops and counts bad rows.
        columns: the file's names of the columns, when they differ (:func:`column_names`).

    Raises:
        DataError: naming the file, line and field of the first problem.
        ConfigError: ``on_error`` is not ``"raise"`` or ``"skip"``; a bad ``columns``.
    """
    names = column_names(columns)
    skips = SkipLog(on_error)
    required = (names["query"], names["doc"])
    hint = _header_hint(columns, names)
    header, rows = read_table(path, required=required, on_bad_row=skips, header_hint=hint)
    fmt, neg_columns = _detect(path, header, names)
    known = {names[k] for k in NAMED} | set(neg_columns)
    if extra := [c for c in header if c not in known]:
        log.info("%s: ignoring unknown columns %s", path, ", ".join(extra))
    data = PairData(str(path), fmt)
    if fmt == "labelled":
        data.labels = []
    if fmt == "presampled":
        data.negatives = []
    first_k: tuple[int, int] | None = None  # (K, line) of the first presampled row
    for line, row in rows:
        try:
            query, doc, label, negatives = _row(path, line, row, fmt, names, neg_columns)
            if negatives is not None:
                first_k = first_k or (len(negatives), line)
                if len(negatives) != first_k[0]:
                    problem = (
                        f"wrong negatives count: {len(negatives)} negatives, but the first row "
                        f"(line {first_k[1]}) has {first_k[0]}"
                    )
                    field = names["negatives"] if not neg_columns else "negatives"
                    raise RowError(path, line, field, problem, "wrong negatives count")
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


def _header_hint(columns: Mapping[str, Any] | None, names: dict[str, Any]) -> str:
    """What a header without the query and document columns is told."""
    if columns:
        query, doc = names["query"], names["doc"]
        return f"the query and document columns are {query} and {doc} (data.columns)"
    return (
        "a pair file's columns are query, doc and optionally label, neg_1..neg_K or negatives; "
        "data.columns maps other names, e.g. data.columns={query: question, doc: answer}"
    )


def _detect(path: str | Path, header: list[str], names: dict[str, Any]) -> tuple[str, list[str]]:
    """The format and the negative columns in order (as the file names them)."""
    if names["neg"] is not None:  # named by the mapping: all of them, or none (no negatives)
        neg_columns = [c for c in names["neg"] if c in header]
        gap = next((c for c in names["neg"] if c not in header), None)
        if neg_columns and gap is not None:
            problem = f"missing column: data.columns.neg names {', '.join(names['neg'])[:200]}"
            raise DataError(path, 1, gap, problem)
    else:
        # Compared as text: int() refuses a digit string over 4300 digits (neg_111...1).
        found = [c for c in header if _NEG.fullmatch(c)]
        neg_columns = [f"neg_{k}" for k in range(1, len(found) + 1)]
        gap = next((c for c in neg_columns if c not in found), None)
        if gap is not None:
            shown = ", ".join(sorted(found, key=lambda c: (len(c), c)))[:200]
            problem = (
                f"missing: negative columns must run neg_1..neg_K without gaps (found {shown})"
            )
            raise DataError(path, 1, gap, problem)
    has_list = names["negatives"] is not None and names["negatives"] in header
    has_label = names["label"] is not None and names["label"] in header
    if neg_columns and has_list:
        raise DataError(path, 1, names["negatives"], "cannot be combined with neg_1..neg_K columns")
    if has_label and (neg_columns or has_list):
        problem = (
            "cannot be combined with negatives: a labelled row holds one document, "
            "a presampled row a positive and its negatives"
        )
        raise DataError(path, 1, names["label"], problem)
    if has_label:
        return "labelled", []
    if neg_columns or has_list:
        return "presampled", neg_columns
    return "pairs", []


def _row(
    path: str | Path,
    line: int,
    row: dict[str, Any],
    fmt: str,
    names: dict[str, Any],
    neg_columns: list[str],
):
    """``(query, doc, label or None, negatives or None)`` of one row, checked."""
    query = _text(path, line, names["query"], row[names["query"]])
    doc = _text(path, line, names["doc"], row[names["doc"]])
    label = None
    if fmt == "labelled":
        label = _label(path, line, names["label"], row.get(names["label"]))
    negatives = None
    if neg_columns:
        negatives = [_text(path, line, c, row.get(c)) for c in neg_columns]
    elif fmt == "presampled":
        negatives = _negative_list(path, line, names["negatives"], row.get(names["negatives"]))
    return query, doc, label, negatives


def _text(path: str | Path, line: int, name: str, value: Any) -> str:
    if value is None:
        raise RowError(path, line, name, "missing", "missing text")
    if not isinstance(value, str):
        raise RowError(path, line, name, f"not a string: {value!r}", "not a string")
    if not value.strip():
        raise RowError(path, line, name, "empty text", "empty text")
    return value


def _label(path: str | Path, line: int, name: str, value: Any) -> float:
    if value is None:
        raise RowError(path, line, name, "missing", "missing label")
    key = value.strip() if isinstance(value, str) else value
    if not isinstance(value, bool) and isinstance(key, str | int | float) and key in _LABELS:
        return _LABELS[key]
    raise RowError(path, line, name, f"not 0 or 1: {value!r}", "bad label")


def _negative_list(path: str | Path, line: int, name: str, value: Any) -> list[str]:
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
            raise RowError(path, line, name, problem, "malformed JSON") from None
    if value is None:
        raise RowError(path, line, name, "missing", "missing negatives")
    if not isinstance(value, list) or not value:
        problem = f"expected a non-empty list of texts, got {value!r}"[:120]
        raise RowError(path, line, name, problem, "bad negatives")
    return [_text(path, line, f"{name}[{i}]", v) for i, v in enumerate(value)]
