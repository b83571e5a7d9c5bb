"""Full-corpus evaluation: rank every document for every judged query, then score the ranking."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from twotower.retrieval.ranking import Qrels, max_k, ranking_metrics
from twotower.retrieval.search import exact_search


@dataclass
class Ranking:
    """The top-k of each query and its metrics.

    Shapes:
        scores, indices: ``(Q, k)``, row i for query i of the evaluated split, best first;
        index -1 marks "no document" (an approximate index found fewer than k).
    """

    scores: Tensor
    indices: Tensor
    metrics: dict[str, float]
    per_query: dict[str, Tensor]


def evaluate(
    queries: Tensor,
    docs: Tensor,
    qrels: Qrels,
    metrics: list[str],
    depth: int = 100,
    index=None,
    query_present: Tensor | None = None,
    doc_present: Tensor | None = None,
    exclude: tuple[Tensor, Tensor] | None = None,
    candidates: Tensor | None = None,
) -> Ranking:
    """Rank ``docs`` for ``queries`` by inner product and score with ``qrels``.

    Args:
        queries: ``(Q, d)`` query vectors, already prepared for inner product (normalised for
            cosine), row i for the split's query i.
        docs: ``(D, d)`` document vectors, prepared the same way.
        qrels: the split's judgments over these query and document indices.
        metrics: metric names such as ``ndcg@10`` (see :mod:`twotower.retrieval.ranking`).
        depth: documents kept per query (the run file's depth); at least the metrics' k.
        index: a built index (:mod:`twotower.retrieval.index`) over ``docs``; ``None`` searches
            exactly.
        query_present, doc_present: ``(Q,)`` / ``(D,)`` bool masks of the rows that were
            encoded (a run limited to some validation batches): other documents are never
            retrieved and other queries are left out of the averages.
        exclude: ``(query rows, doc indices)`` pairs never retrieved (RecBole's full ranking
            masks each user's training items); needs exact search.
        candidates: ``(D,)`` bool, the only documents ranked (cold-start items).
    """
    k = max(depth, max_k(metrics))
    keep = doc_present
    if candidates is not None:
        keep = candidates if keep is None else keep & candidates
    doc_rows = None
    if keep is not None and not bool(keep.all()):
        doc_rows = keep.nonzero().squeeze(1)
        if exclude is not None:  # renumber the excluded documents among the kept ones
            new = torch.full((len(docs),), -1, dtype=torch.long)
            new[doc_rows] = torch.arange(len(doc_rows))
            rows, cols = exclude[0], new[exclude[1]]
            exclude = (rows[cols >= 0], cols[cols >= 0])
        docs = docs[doc_rows]
    if index is not None and exclude is not None:
        raise ValueError("an approximate index cannot exclude documents: search exactly")
    if index is not None and doc_rows is None:
        scores, indices = index.search(queries, k)
    else:
        scores, indices = exact_search(queries, docs, k, exclude=exclude)
    if doc_rows is not None:
        indices = torch.where(indices >= 0, doc_rows[indices.clamp(min=0)], indices)
    _, per_query = ranking_metrics(indices[qrels.query_rows], qrels, metrics, per_query=True)
    weight = torch.ones(len(qrels.query_rows))
    if query_present is not None:
        weight = query_present[qrels.query_rows].float()
    total = weight.sum().clamp(min=1)
    means = {name: float((v.float() * weight).sum() / total) for name, v in per_query.items()}
    return Ranking(scores, indices, means, per_query)
