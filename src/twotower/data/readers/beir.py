"""Read a BEIR folder (corpus, queries, graded qrels), checking every line before training.

Layout, as in https://github.com/beir-cellar/beir::

    corpus.jsonl     {"_id": "d1", "title": "...", "text": "..."}   (title optional)
    queries.jsonl    {"_id": "q1", "text": "..."}                   (other keys ignored)
    qrels/test.tsv   query-id<TAB>corpus-id<TAB>score               (header line, integer grades)

A document's text is its title and text, each stripped, joined by one space (``"title text"``,
as BEIR's own dense retrievers do), or whichever of the two is not blank. Ids are strings (JSON
integers are converted with ``str``) without whitespace, so that a TREC run file can hold them.
A query or document may carry several judgements. A grade is an integer of at most nine digits
(``-1``, ``+2``, ``007``); grade-0 rows are kept as judged non-relevant. A row repeating a
judgement with the same grade is harmless and kept once.

With ``on_error="skip"`` every row-level problem (a non-UTF-8 byte, malformed JSON, a missing,
duplicate or badly formed id, empty text, a bad qrels row or score, an unknown id) drops the
row, is counted in ``BeirData.skipped`` and logged as one WARNING per file. File-level problems
(missing folder or file, qrels without a header line, a file with no usable rows) always raise.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from twotower.data.readers.files import RowError, SkipLog, read_jsonl, read_table
from twotower.errors import DataError

QRELS_COLUMNS = ("query-id", "corpus-id", "score")
_INT = re.compile(r"[+-]?[0-9]+")
MAX_GRADE_DIGITS = 9  # |grade| < 10**9: far beyond any graded scale, and a float holds it


@dataclass
class BeirData:
    """A BEIR folder in memory.

    ``qrels[split][query_id][doc_id]`` is an integer grade. A requested split without a
    ``qrels/{split}.tsv`` file is absent from ``qrels``: the caller decides whether that is an
    error. All queries are kept, judged or not. ``skipped`` counts the rows dropped with
    ``on_error="skip"`` by ``"file:reason"``, e.g. ``{"corpus.jsonl:empty text": 2}``.
    """

    corpus_ids: list[str]
    corpus_texts: list[str]
    query_ids: list[str]
    query_texts: list[str]
    qrels: dict[str, dict[str, dict[str, int]]]
    skipped: dict[str, int] = field(default_factory=dict)


def load_beir(
    directory: str | Path,
    splits: Sequence[str] = ("train", "dev", "test"),
    on_error: str = "raise",
) -> BeirData:
    """Read ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/{split}.tsv`` for each split.

    Args:
        directory: the BEIR folder.
        splits: the qrels files to read, where they exist.
        on_error: ``"raise"`` stops at the first bad row; ``"skip"`` drops and counts bad rows.

    Raises:
        DataError: naming the file, line and field of the first problem.
        ConfigError: ``on_error`` is not ``"raise"`` or ``"skip"``.
    """
    skips = SkipLog(on_error, root=directory)
    root = Path(directory)
    if not root.is_dir():
        problem = "no such folder: expected a BEIR folder with corpus.jsonl, queries.jsonl, qrels/"
        raise DataError(root, None, None, problem)
    doc_lines, corpus_ids, corpus_texts = _read_texts(root / "corpus.jsonl", skips, "document")
    query_lines, query_ids, query_texts = _read_texts(root / "queries.jsonl", skips, "query")
    qrels = {}
    for split in splits:
        path = root / "qrels" / f"{split}.tsv"
        if path.is_file():
            qrels[split] = _read_qrels(path, query_lines, doc_lines, skips)
    return BeirData(corpus_ids, corpus_texts, query_ids, query_texts, qrels, dict(skips.counts))


def _read_texts(
    path: Path, skips: SkipLog, kind: str
) -> tuple[dict[str, int], list[str], list[str]]:
    """Line of each id, ids and texts of corpus.jsonl (``kind="document"``) or queries.jsonl."""
    if not path.is_file():
        raise DataError(path, None, None, f"no such file: a BEIR folder needs {path.name}")
    lines: dict[str, int] = {}
    ids: list[str] = []
    texts: list[str] = []
    for line, obj in read_jsonl(path, on_bad_row=skips):
        try:
            doc_id = _id(path, line, obj, lines)
            text = _text(path, line, obj, kind)
        except RowError as err:
            skips(err)
            continue
        lines[doc_id] = line
        ids.append(doc_id)
        texts.append(text)
    skips.warn()
    if not ids:
        raise DataError(path, None, None, f"no {kind} with an id and text")
    return lines, ids, texts


def _id(path: Path, line: int, obj: dict, seen: dict[str, int]) -> str:
    value = obj.get("_id")
    if value is None:
        raise RowError(path, line, "_id", "missing", "missing _id")
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise RowError(path, line, "_id", f"not a string or integer: {value!r}", "bad _id")
    value = str(value)
    if value.split() != [value]:  # empty, or holds whitespace
        problem = f"id {value!r} is empty or holds whitespace, which a TREC run file cannot hold"
        raise RowError(path, line, "_id", problem, "bad _id")
    if value in seen:
        problem = f"duplicate id {value!r}: first on line {seen[value]}"
        raise RowError(path, line, "_id", problem, "duplicate _id")
    return value


def _text(path: Path, line: int, obj: dict, kind: str) -> str:
    text = obj.get("text")
    title = obj.get("title") if kind == "document" else None
    if text is None:
        raise RowError(path, line, "text", "missing", "missing text")
    for name, value in (("text", text), ("title", title)):
        if value is not None and not isinstance(value, str):
            raise RowError(path, line, name, f"not a string: {value!r}", f"bad {name}")
    text, title = text.strip(), (title or "").strip()
    if not text and not title:
        blank = "title and text are blank" if kind == "document" else "text is blank"
        raise RowError(path, line, "text", f"empty {kind}: {blank}", "empty text")
    return f"{title} {text}" if title and text else title or text


def _read_qrels(
    path: Path, queries: dict[str, int], docs: dict[str, int], skips: SkipLog
) -> dict[str, dict[str, int]]:
    """``query id -> doc id -> grade`` from one qrels file."""
    _, rows = read_table(path, required=QRELS_COLUMNS, on_bad_row=skips)
    qrels: dict[str, dict[str, int]] = {}
    for line, row in rows:
        query_id, doc_id, score = row["query-id"], row["corpus-id"], row["score"].strip()
        try:
            if query_id not in queries:
                problem = f"unknown query id {query_id!r}: not in queries.jsonl"
                raise RowError(path, line, "query-id", problem, "unknown query-id")
            if doc_id not in docs:
                problem = f"unknown document id {doc_id!r}: not in corpus.jsonl"
                raise RowError(path, line, "corpus-id", problem, "unknown corpus-id")
            if not _INT.fullmatch(score):
                problem = f"not an integer grade: {score[:40]!r}"
                raise RowError(path, line, "score", problem, "non-integer score")
            if len(score.lstrip("+-").lstrip("0")) > MAX_GRADE_DIGITS:
                problem = f"grade out of range: more than {MAX_GRADE_DIGITS} digits"
                raise RowError(path, line, "score", problem, "score out of range")
            grade = int(score)
            earlier = qrels.get(query_id, {}).get(doc_id, grade)
            if earlier != grade:
                problem = f"grade {grade} contradicts grade {earlier} given earlier in this file"
                raise RowError(path, line, "score", problem, "conflicting score")
        except RowError as err:
            skips(err)
            continue
        qrels.setdefault(query_id, {})[doc_id] = grade
    skips.warn()
    return qrels
