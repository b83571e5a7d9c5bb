"""TREC run files and qrels, so that runs can be scored with trec_eval or by :mod:`ranking`.

A run line is ``qid Q0 docid rank score tag``; a qrels line is ``qid 0 docid grade``.
trec_eval ignores the rank column: it sorts each query's documents by score descending and
breaks ties by docid descending (byte order), which :func:`run_to_indices` reproduces.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from twotower.errors import DataError
from twotower.retrieval.floattext import float32_text

RUN_FIELDS = ("qid", "Q0", "docid", "rank", "score", "tag")
QRELS_FIELDS = ("qid", "iter", "docid", "grade")


def write_run(
    path: str | os.PathLike,
    query_ids: Sequence[str],
    doc_ids: Sequence[str],
    top_indices: Tensor,
    top_scores: Tensor,
    tag: str = "twotower",
) -> None:
    """Write a search's results as a TREC run file, atomically (temp file, then rename).

    Scores are written with the shortest text that reads back as the same float of their dtype,
    so distinct scores stay distinct and ordered ("%.6f" would tie 0.1234561 and 0.1234564,
    and trec_eval would then reorder them by docid). Equal scores are still re-sorted by docid
    by trec_eval, whatever the rank column says. The lines are built as byte matrices, a block
    of queries at a time, so 100k queries at depth 10 take a fraction of a second.

    Args:
        query_ids: row i of the results belongs to ``query_ids[i]``.
        doc_ids: document ids indexed by ``top_indices``.
        top_indices: best first; -1 pads are skipped.
        top_scores: the matching scores.

    Shapes:
        top_indices, top_scores: ``(Q, k)``.
    """
    if top_indices.shape != top_scores.shape or top_indices.shape[0] != len(query_ids):
        raise ValueError(
            f"top_indices {tuple(top_indices.shape)} and top_scores {tuple(top_scores.shape)} "
            f"must both be ({len(query_ids)}, k)"
        )
    scores = top_scores.detach().cpu()
    indices = top_indices.detach().cpu().numpy()
    docs = _utf8_matrix(doc_ids)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            for start in range(0, len(query_ids), _BLOCK):
                rows = slice(start, start + _BLOCK)
                f.write(_run_lines(query_ids[rows], docs, indices[rows], scores[rows], tag))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


_BLOCK = 20_000  # queries formatted at once: bounds the byte matrix (a few hundred MB at k=100)


def _run_lines(
    query_ids: Sequence[str], docs: np.ndarray, indices: np.ndarray, scores: Tensor, tag: str
) -> bytes:
    """The run lines of one block of queries, built as one byte matrix: no per-line Python."""
    kept = indices >= 0
    k = indices.shape[1]
    ranks = np.cumsum(kept, axis=1)  # -1 pads take no rank, wherever they sit
    rank_text = _utf8_matrix([str(r) for r in range(k + 1)])
    if scores.dtype == torch.float64:  # the shortest text of a double, as ``str`` writes it
        score_text = _utf8_matrix(scores.numpy().ravel().astype(str).tolist())
    else:
        score_text = float32_text(scores.float().numpy().ravel())
    qids = np.repeat(_utf8_matrix(list(query_ids)), k, axis=0)
    columns = [
        qids,
        _constant(" Q0 ", len(qids)),
        docs[np.where(kept, indices, 0).ravel()],
        _constant(" ", len(qids)),
        rank_text[ranks.ravel()],
        _constant(" ", len(qids)),
        score_text,
        _constant(f" {tag}\n", len(qids)),
    ]
    lines = np.concatenate(columns, axis=1)[kept.ravel()]
    return lines.tobytes().translate(None, b"\0")  # 0 pads the fields; UTF-8 text holds none


def _utf8_matrix(texts: Sequence[str]) -> np.ndarray:
    """Strings as an ``(N, width)`` uint8 matrix of their UTF-8 bytes, right-padded with 0."""
    encoded = np.array([t.encode() for t in texts] or [b""], dtype=bytes)
    return encoded.view(np.uint8).reshape(len(encoded), -1)


def _constant(text: str, rows: int) -> np.ndarray:
    return np.broadcast_to(np.frombuffer(text.encode(), dtype=np.uint8), (rows, len(text.encode())))


def read_run(path: str | os.PathLike) -> dict[str, dict[str, float]]:
    """Read a TREC run file into ``{qid: {docid: score}}``, checking every field."""
    run: dict[str, dict[str, float]] = {}
    for line_no, fields in _lines(path, RUN_FIELDS):
        qid, _, docid, rank, score, _ = fields
        if not rank.isdigit():
            raise DataError(path, line_no, "rank", f"{rank!r} is not a whole number")
        value = _number(path, line_no, "score", score)
        docs = run.setdefault(qid, {})
        if docid in docs:
            raise DataError(path, line_no, "docid", f"{docid!r} repeats for query {qid!r}")
        docs[docid] = value
    return run


def read_trec_qrels(path: str | os.PathLike) -> dict[str, dict[str, int]]:
    """Read TREC qrels (``qid 0 docid grade`` lines) into ``{qid: {docid: grade}}``."""
    qrels: dict[str, dict[str, int]] = {}
    for line_no, fields in _lines(path, QRELS_FIELDS):
        qid, _, docid, grade = fields
        if not grade.lstrip("-").isdigit():
            raise DataError(path, line_no, "grade", f"{grade!r} is not a whole number")
        docs = qrels.setdefault(qid, {})
        if docid in docs:
            raise DataError(path, line_no, "docid", f"{docid!r} repeats for query {qid!r}")
        docs[docid] = int(grade)
    return qrels


def run_to_indices(
    run: dict[str, dict[str, float]],
    query_ids: Sequence[str],
    doc_index: dict[str, int],
    k: int,
) -> Tensor:
    """Each query's top ``k`` documents in trec_eval's order, as ``(Q, k)`` long, -1 padded.

    Row i ranks ``query_ids[i]``, all -1 when the run lacks that query; run queries not in
    ``query_ids`` are ignored, as trec_eval ignores those without judgments.

    >>> run_to_indices({"q": {"a": 1.0, "b": 1.0}}, ["q", "r"], {"a": 0, "b": 1}, k=3)
    tensor([[ 1,  0, -1],
            [-1, -1, -1]])
    """
    top = torch.full((len(query_ids), k), -1, dtype=torch.long)
    for row, qid in enumerate(query_ids):
        # trec_eval: score descending, then docid descending (strcmp; str order is code points,
        # which is UTF-8 byte order)
        ranked = sorted(run.get(qid, {}).items(), key=lambda item: (item[1], item[0]), reverse=True)
        unknown = [docid for docid, _ in ranked if docid not in doc_index]
        if unknown:
            problem = f"{unknown[0]!r} of query {qid!r} is not in the corpus"
            raise DataError("run", None, "docid", problem)
        ids = [doc_index[docid] for docid, _ in ranked[:k]]
        top[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return top


def _lines(path: str | os.PathLike, names: tuple[str, ...]):
    """Yield ``(line_no, fields)`` of the non-blank lines, with exactly ``len(names)`` fields."""
    with open(path) as f:
        for line_no, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < len(names):
                raise DataError(path, line_no, names[len(fields)], "missing")
            if len(fields) > len(names):
                problem = f"expected {len(names)} fields, got {len(fields)}"
                raise DataError(path, line_no, names[-1], problem)
            yield line_no, fields


def _number(path: str | os.PathLike, line_no: int, field: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if math.isnan(value):
        raise DataError(path, line_no, field, f"{text!r} is not a number")
    return value
