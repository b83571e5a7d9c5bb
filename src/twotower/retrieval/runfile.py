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

import torch
from torch import Tensor

from twotower.errors import DataError

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
    by trec_eval, whatever the rank column says.

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
    # str() of a numpy scalar is its shortest round-trip text (an f-string prints the double)
    scores = (scores if scores.dtype == torch.float64 else scores.float()).numpy()
    indices = top_indices.cpu().tolist()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as f:
            for qid, row, row_scores in zip(query_ids, indices, scores, strict=True):
                kept = [(i, s) for i, s in zip(row, row_scores, strict=True) if i >= 0]
                f.writelines(
                    f"{qid} Q0 {doc_ids[i]} {rank} {s!s} {tag}\n"
                    for rank, (i, s) in enumerate(kept, start=1)
                )
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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
