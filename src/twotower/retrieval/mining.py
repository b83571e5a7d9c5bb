"""Hard-negative mining: rank each training query's corpus, keep a window of ranks, drop the
likely false negatives, and return each query's candidates as one padded table.

Mining is by rank, not by score (FlagEmbedding#1130): ranks ``rank_min..rank_max`` (1 = the
top document) of the query's ranking are the window. The top ranks of a trained model are the
most likely unlabelled positives (FlagEmbedding#850), hence ``rank_min``; the margins drop what
scores too close to the query's positive (NV-Retriever, Moreira et al. 2024: "TopK-MarginPos"
and "TopK-PercPos").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from twotower.errors import check
from twotower.retrieval.exact import exact_search


@dataclass(frozen=True)
class MiningWindow:
    """Which ranked documents are kept as a query's hard negatives.

    Args:
        rank_min, rank_max: the kept ranks, 1-based and inclusive.
        margin: drop a candidate scoring above ``positive - margin`` (``None``: off).
        relative_margin: drop a candidate scoring above ``positive - relative_margin *
            |positive|`` (0.05: within 5% of the positive; ``None``: off).

    The positive's score is the lowest of the query's relevant documents: the strictest
    threshold when a query has several.
    """

    rank_min: int = 1
    rank_max: int = 100
    margin: float | None = None
    relative_margin: float | None = None

    def __post_init__(self):
        for key in ("rank_min", "rank_max"):
            v = getattr(self, key)
            ok = isinstance(v, int) and not isinstance(v, bool) and v >= 1
            check(ok, key, v, "must be an integer >= 1")
        check(self.rank_max >= self.rank_min, "rank_max", self.rank_max, "must be >= rank_min")
        for key in ("margin", "relative_margin"):
            v = getattr(self, key)
            ok = v is None or (isinstance(v, int | float) and not isinstance(v, bool) and v >= 0)
            check(ok, key, v, "must be null or a number >= 0")

    @property
    def needs_scores(self) -> bool:
        return self.margin is not None or self.relative_margin is not None


def positive_scores(queries: Tensor, docs: Tensor, pos_rows: Tensor, pos_docs: Tensor) -> Tensor:
    """``(Q,)`` the lowest score of each query's relevant documents (``+inf`` for none)."""
    scores = (queries[pos_rows] * docs[pos_docs]).sum(1)  # (P,)
    return lowest_per_row(scores, pos_rows, len(queries))


def lowest_per_row(pair_scores: Tensor, pos_rows: Tensor, num_rows: int) -> Tensor:
    """``(num_rows,)`` the lowest of each row's pair scores ``(P,)`` (``+inf`` for none)."""
    out = torch.full((num_rows,), float("inf"))
    return out.scatter_reduce(0, pos_rows, pair_scores.float(), "amin")


def select(
    scores: Tensor,
    ranked: Tensor,
    window: MiningWindow,
    pos_rows: Tensor,
    pos_docs: Tensor,
    n_docs: int,
    positive: Tensor | None = None,
) -> tuple[Tensor, dict[str, int]]:
    """Filter a ranking into each query's hard negatives.

    Args:
        scores, ranked: ``(Q, R)`` each query's top ``R >= rank_max`` scores and documents,
            best first (-1: no document).
        pos_rows, pos_docs: ``(P,)`` the relevant (query row, document) pairs.
        positive: ``(Q,)`` each query's positive score (:func:`positive_scores`); needed by
            the margins.

    Returns:
        ``(Q, W)`` long, the kept documents of each row best first, padded with -1 (``W`` the
        window's width), and the number of candidates each filter removed, in the order they
        apply: ``relevant`` (a relevant document of the query), ``outside_window``,
        ``margin``, ``relative_margin``; ``kept`` is what is left.
    """
    q = len(ranked)
    width = window.rank_max - window.rank_min + 1
    keep = ranked[:, : window.rank_max] >= 0  # (Q, R)
    counts = {"candidates": int(keep.sum())}
    keys = torch.unique(pos_rows.long() * n_docs + pos_docs.long())  # sorted relevant pairs
    pair = torch.arange(q)[:, None] * n_docs + ranked[:, : window.rank_max].clamp(min=0)
    at = torch.searchsorted(keys, pair).clamp(max=max(len(keys) - 1, 0))
    relevant = keys[at] == pair if len(keys) else torch.zeros_like(keep)
    steps = [("relevant", relevant)]
    ranks = torch.arange(1, keep.shape[1] + 1)
    steps.append(("outside_window", (ranks < window.rank_min)[None, :].expand_as(keep)))
    if window.needs_scores:
        if positive is None:
            raise ValueError("the margins need each query's positive score")
        s = scores[:, : window.rank_max].float()
        pos = positive[:, None]
        if window.margin is not None:
            steps.append(("margin", s > pos - window.margin))
        if window.relative_margin is not None:
            steps.append(("relative_margin", s > pos - window.relative_margin * pos.abs()))
    for name, drop in steps:
        counts[name] = int((keep & drop).sum())
        keep &= ~drop
    counts["kept"] = int(keep.sum())
    # Kept entries to the left, in rank order (a stable sort of "dropped" flags).
    order = torch.sort((~keep).to(torch.uint8), dim=1, stable=True).indices[:, :width]
    table = ranked[:, : window.rank_max].gather(1, order)
    table[~keep.gather(1, order)] = -1
    if table.shape[1] < width:  # fewer documents than the window
        table = torch.cat([table, table.new_full((q, width - table.shape[1]), -1)], 1)
    return table, counts


def mine_dense(
    queries: Tensor,
    docs: Tensor,
    window: MiningWindow,
    pos_rows: Tensor,
    pos_docs: Tensor,
) -> tuple[Tensor, dict[str, int]]:
    """Hard negatives of each query row from search-ready vectors ``(Q, d)`` and ``(N, d)``
    (exact blocked search; see :func:`select`)."""
    scores, ranked = exact_search(queries, docs, k=window.rank_max)
    positive = positive_scores(queries, docs, pos_rows, pos_docs) if window.needs_scores else None
    return select(scores, ranked, window, pos_rows, pos_docs, len(docs), positive)
