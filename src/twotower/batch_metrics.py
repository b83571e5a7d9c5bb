"""Ranking metrics over each query's candidates, averaged with torchmetrics.

Each query's candidates are one dense row of a ``(B, C)`` matrix, so Recall@k and MRR@k are a
``topk`` over the row: O(B * C), no per-query Python. torchmetrics' retrieval metrics do not
fit here: they group by query index with a bincount that turns quadratic when deterministic
algorithms are on (20 s per validation of 2,100 queries), and in torchmetrics 1.9 they count a
candidate scoring <= 0 as not retrieved, which is wrong for cosine scores.
"""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics import MeanMetric

from twotower.negatives import Candidates


def per_query(cands: Candidates, recall_at: list[int], mrr_at: int = 10) -> dict[str, torch.Tensor]:
    """Per-query ``recall@k`` (share of the relevant candidates in the top k) and ``mrr@k``
    (reciprocal rank of the first relevant candidate, 0 beyond k); each ``(B,)``."""
    scores, relevant = _ranked(cands)
    depth = min(max([*recall_at, mrr_at]), scores.shape[1])
    top = scores.topk(depth, dim=1).indices  # (B, depth)
    hits = relevant.gather(1, top)  # (B, depth); relevant is False where masked
    n_relevant = relevant.sum(1).clamp(min=1)
    out = {f"recall@{k}": hits[:, :k].sum(1) / n_relevant for k in recall_at}
    ranks = torch.arange(1, depth + 1, device=scores.device, dtype=scores.dtype)
    reciprocal = (hits[:, :mrr_at] / ranks[:mrr_at]).amax(1)  # the first hit dominates
    out[f"mrr@{mrr_at}"] = reciprocal
    return out


def _ranked(cands: Candidates) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, C)`` scores with invalid candidates at -inf, and the valid relevant ones."""
    scores = cands.scores.detach().masked_fill(~cands.mask, float("-inf"))
    return scores, (cands.labels > 0) & cands.mask


def rankable(cands: Candidates) -> torch.Tensor:
    """``(B,)`` float: the query has a relevant candidate and something to rank it against."""
    relevant = (cands.labels > 0) & cands.mask
    return _rankable(cands, relevant)


def _rankable(cands: Candidates, relevant: torch.Tensor) -> torch.Tensor:
    # something else valid: more valid candidates than relevant ones
    return (relevant.any(1) & (cands.mask.sum(1) > relevant.sum(1))).float()


def top1_accuracy(cands: Candidates) -> torch.Tensor:
    """``(B,)`` float: the top-scored valid candidate is relevant (the seeds' accuracy)."""
    scores, relevant = _ranked(cands)
    return relevant.gather(1, scores.argmax(1, keepdim=True)).squeeze(1).float()


class Accuracy(MeanMetric):
    """Share of rankable queries whose top candidate is relevant.

    The candidates are the negatives strategy's: this equals the in-batch ``recall@1`` of
    :class:`RankingMetrics` over the batch's documents only when the strategy's candidates are
    those documents (in-batch negatives on one device; docs/training.md).
    """

    def update(self, cands: Candidates) -> None:  # type: ignore[override]
        scores, relevant = _ranked(cands)
        weight = _rankable(cands, relevant)
        if weight.sum() > 0:  # labelled rows (one candidate each) have nothing to rank
            top1 = relevant.gather(1, scores.argmax(1, keepdim=True)).squeeze(1).float()
            super().update(top1, weight)


class RankingMetrics(nn.Module):
    """Running means of :func:`per_query` over the queries that have a relevant candidate
    and something to rank it against."""

    def __init__(self, recall_at: list[int], mrr_at: int = 10):
        super().__init__()
        self.recall_at, self.mrr_at = list(recall_at), mrr_at
        names = [*(f"recall@{k}" for k in recall_at), f"mrr@{mrr_at}"]
        self.means = nn.ModuleDict({name: MeanMetric() for name in names})

    def update(self, cands: Candidates) -> None:
        weight = rankable(cands)
        for name, values in per_query(cands, self.recall_at, self.mrr_at).items():
            self.means[name].update(values, weight)

    def items(self):
        return self.means.items()
