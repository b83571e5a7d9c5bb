"""Full-corpus ranking metrics with trec_eval's definitions, vectorised over queries.

A search over the whole corpus returns each query's top k documents as a ``(Q, k)`` index
matrix; :class:`Qrels` holds one split's judgments as tensors, and :func:`ranking_metrics`
looks every retrieved document's grade up in one ``searchsorted`` and derives all metrics from
cumulative sums. Values equal trec_eval's (``recall_k``, ``recip_rank`` on the run cut at k,
``ndcg_cut_k``, ``map_cut_k``, ``P_k``, ``success_k``) to float precision.

Why not torchmetrics here: its retrieval metrics need a score for every relevant document,
while a search keeps only the top k; in 1.9 they count a document scoring <= 0 as not
retrieved; and their per-query grouping turns quadratic under deterministic algorithms.

Queries whose judgments are all grade 0 have nothing to find: they are not rows of
:class:`Qrels`, so they are left out of every mean, and ``Qrels.num_without_relevant`` counts
them. pytrec_eval returns 0 for such a query on every metric (``num_rel`` 0), so a mean taken
over its output is lower than ours by the factor ``Q / (Q + num_without_relevant)``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from twotower.errors import ConfigError, DataError

DEFAULT_METRICS = ("recall@1", "recall@10", "recall@100", "mrr@10", "ndcg@10", "map@100")
KINDS = ("recall", "mrr", "ndcg", "map", "precision", "hit")
_ALIASES = {"success": "hit"}
_NAME = re.compile(r"([a-z]+)@([1-9][0-9]*)")


def parse_metrics(names: Sequence[str]) -> list[tuple[str, int]]:
    """Parse metric names like ``"ndcg@10"`` into ``(kind, k)`` pairs.

    ``success@k`` is an alias of ``hit@k``.

    >>> parse_metrics(["ndcg@10", "success@5"])
    [('ndcg', 10), ('hit', 5)]
    """
    expected = f"must be a list of names kind@k with k >= 1 and kind one of {', '.join(KINDS)}"
    if isinstance(names, str) or not names:
        raise ConfigError("metrics", names, expected)
    parsed = []
    for name in names:
        match = _NAME.fullmatch(name) if isinstance(name, str) else None
        kind = _ALIASES.get(match[1], match[1]) if match else None
        if kind not in KINDS:
            raise ConfigError("metrics", names, f"{expected}; got {name!r}")
        parsed.append((kind, int(match[2])))
    return parsed


def max_k(names: Sequence[str]) -> int:
    """The deepest cut-off among ``names``: how many documents a search must return."""
    return max(k for _, k in parse_metrics(names))


@dataclass
class Qrels:
    """One split's relevance judgments as tensors, built once and reused every evaluation.

    Rows are the queries with at least one relevant (grade > 0) judgment, in the order of the
    caller's query index. The relevant judgments are stored flat (CSR-like), sorted by
    ``(row, doc)`` so that a retrieved document's grade is one ``searchsorted`` away.

    Attributes:
        query_ids: ``Q`` query ids, one per row.
        query_rows: ``(Q,)`` long: each row's position in the caller's query list.
        rows, docs, grades: ``(N,)`` each: the relevant judgments; ``docs`` is -1 for a document
            missing from the corpus, which counts in ``num_rel`` and the ideal DCG (as in
            trec_eval) but can never be retrieved.
        ideal_ranks: ``(N,)`` long: 0-based rank of each judgment in its query's ideal ranking.
        num_rel: ``(Q,)`` float64: relevant judgments per query.
        num_without_relevant: queries judged with grade 0 only, left out of the rows.
    """

    query_ids: list[str]
    query_rows: Tensor
    rows: Tensor
    docs: Tensor
    grades: Tensor
    ideal_ranks: Tensor
    num_rel: Tensor
    num_without_relevant: int

    @classmethod
    def from_dict(
        cls,
        qrels: dict[str, dict[str, int]],
        query_index: dict[str, int],
        doc_index: dict[str, int],
    ) -> Qrels:
        """Build from ``{qid: {docid: grade}}`` and the caller's id -> position maps."""
        missing = [qid for qid in qrels if qid not in query_index]
        if missing:
            problem = f"{len(missing)} judged queries not in the query list, e.g. {missing[0]!r}"
            raise DataError("qrels", None, "qid", problem)
        judged = [qid for qid, docs in qrels.items() if any(g > 0 for g in docs.values())]
        judged.sort(key=query_index.__getitem__)
        rows, docs, grades = [], [], []
        for row, qid in enumerate(judged):
            for docid, grade in qrels[qid].items():
                if grade > 0:
                    rows.append(row)
                    docs.append(doc_index.get(docid, -1))
                    grades.append(float(grade))
        rows, docs = torch.tensor(rows, dtype=torch.long), torch.tensor(docs, dtype=torch.long)
        grades = torch.tensor(grades, dtype=torch.float64)
        num_rel = torch.bincount(rows, minlength=len(judged))  # (Q,)

        # Ideal ranking: grades descending within each row; rank = position - row start.
        by_grade = grades.argsort(descending=True, stable=True)
        ideal = by_grade[rows[by_grade].argsort(stable=True)]  # (N,) judgments in ideal order
        starts = num_rel.cumsum(0) - num_rel  # (Q,)
        ideal_ranks = torch.empty_like(rows)
        ideal_ranks[ideal] = torch.arange(len(rows)) - starts[rows[ideal]]

        order = _keys(rows, docs, _stride(docs)).argsort()
        return cls(
            query_ids=judged,
            query_rows=torch.tensor([query_index[q] for q in judged], dtype=torch.long),
            rows=rows[order],
            docs=docs[order],
            grades=grades[order],
            ideal_ranks=ideal_ranks[order],
            num_rel=num_rel.double(),
            num_without_relevant=len(qrels) - len(judged),
        )

    def __len__(self) -> int:
        return len(self.query_ids)

    def gains(self, top_indices: Tensor) -> Tensor:
        """Grade of each retrieved document, 0 when not relevant or a -1 pad.

        Shapes: ``top_indices`` ``(Q, k)`` long -> ``(Q, k)`` float64.
        """
        device = top_indices.device
        stride = max(_stride(self.docs), _stride(top_indices))
        keys = _keys(self.rows, self.docs, stride).to(device)  # (N,) sorted
        rows = torch.arange(len(self), device=device)[:, None]  # (Q, 1)
        wanted = _keys(rows, top_indices, stride)  # (Q, k)
        at = torch.searchsorted(keys, wanted).clamp(max=max(len(keys) - 1, 0))  # (Q, k)
        found = (keys[at] == wanted) & (top_indices >= 0)  # a pad's key can hit a missing doc's
        return torch.where(found, self.grades.to(device)[at], 0.0)

    def ideal_dcg(self, k: int) -> Tensor:
        """``(Q,)`` float64: DCG of each query's judged grades sorted descending, cut at k."""
        keep = self.ideal_ranks < k
        discounted = self.grades[keep] / torch.log2(self.ideal_ranks[keep].double() + 2)
        return torch.zeros(len(self), dtype=torch.float64).index_add_(
            0, self.rows[keep], discounted
        )


def _stride(docs: Tensor) -> int:
    return int(docs.max()) + 2 if docs.numel() else 2


def _keys(rows: Tensor, docs: Tensor, stride: int) -> Tensor:
    # docs + 1 so that -1 (pad, missing document) stays inside its own row's key range
    return rows * stride + docs + 1


def ranking_metrics(
    top_indices: Tensor,
    qrels: Qrels,
    names: Sequence[str] = DEFAULT_METRICS,
    per_query: bool = False,
) -> dict[str, float] | tuple[dict[str, float], dict[str, Tensor]]:
    """Mean ranking metrics over the queries of ``qrels`` (see the module docstring).

    Args:
        top_indices: row i ranks documents for ``qrels.query_ids[i]``, best first; -1 pads.
            Documents within a row must be distinct.
        qrels: the split's judgments.
        names: metric names, see :func:`parse_metrics`; results are keyed by these names.
        per_query: also return each metric's ``(Q,)`` float64 values.

    Shapes:
        top_indices: ``(Q, k)`` long; k may be below the metrics' cut-offs (as if padded).

    >>> qrels = Qrels.from_dict({"q": {"b": 1}}, {"q": 0}, {"a": 0, "b": 1})
    >>> ranking_metrics(torch.tensor([[0, 1]]), qrels, ["recall@1", "mrr@10"])
    {'recall@1': 0.0, 'mrr@10': 0.5}
    """
    parsed = parse_metrics(names)
    if top_indices.ndim != 2 or top_indices.shape[0] != len(qrels):
        raise ValueError(f"top_indices must be ({len(qrels)}, k), got {tuple(top_indices.shape)}")
    depth = max(k for _, k in parsed)
    top = top_indices[:, :depth].long()
    gains = F.pad(qrels.gains(top), (0, depth - top.shape[1])).cpu()  # (Q, depth)
    relevant = (gains > 0).double()  # (Q, depth)
    found = relevant.cumsum(1)  # (Q, depth) relevant documents within the top r
    ranks = torch.arange(1, depth + 1, dtype=torch.float64)  # (depth,)
    values = {}
    for name, (kind, k) in zip(names, parsed, strict=True):
        if kind == "recall":
            values[name] = found[:, k - 1] / qrels.num_rel
        elif kind == "precision":
            values[name] = found[:, k - 1] / k
        elif kind == "hit":
            values[name] = (found[:, k - 1] > 0).double()
        elif kind == "mrr":
            values[name] = (relevant[:, :k] / ranks[:k]).amax(1)  # the first hit is the largest
        elif kind == "ndcg":
            dcg = (gains[:, :k] / torch.log2(ranks[:k] + 1)).sum(1)
            values[name] = dcg / qrels.ideal_dcg(k)
        else:  # map: precision at each relevant rank, over all relevant (trec_eval map_cut)
            values[name] = (relevant * found / ranks)[:, :k].sum(1) / qrels.num_rel
    means = {name: v.mean().item() for name, v in values.items()}
    return (means, values) if per_query else means
