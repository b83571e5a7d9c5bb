"""Listwise softmax cross-entropy: the DSSM loss -log P(D+ | Q) over each row's candidates."""

from __future__ import annotations

import torch
from torch import Tensor

from twotower.errors import check
from twotower.losses.base import Loss


class ListwiseSoftmaxLoss(Loss):
    """Softmax cross-entropy over each row's valid candidates, target = labels / labels.sum.

    Input: a query with one relevant and n non-relevant candidates (the DSSM paper samples
    4), or in-batch negatives (then this is the InfoNCE / sampled softmax loss). One
    positive gives -log p+; graded labels give a weighted target. Rows with no relevant
    candidate are skipped. The scores are already scaled by gamma (the temperature's
    inverse), which this loss uses as given.

    ``symmetric``: also the transposed loss, each relevant candidate (column) against the
    batch's queries (rows) it is valid for, -log P(Q | D+), and the mean of both directions
    (CLIP's and the bidirectional in-batch loss of dense retrievers). Columns relevant to no
    row (drawn, remembered or mined negatives) have no second term.

    Args:
        symmetric: add the documents-to-queries direction.

    Shapes:
        scores, labels, mask: (B, C); output: scalar.

    References:
        Huang et al., "Learning Deep Structured Semantic Models for Web Search using
        Clickthrough Data" (DSSM), CIKM 2013, eq. 4-5; Cao et al., "Learning to Rank:
        From Pairwise Approach to Listwise Approach" (ListNet), ICML 2007.

    Example:
        >>> import torch
        >>> loss = ListwiseSoftmaxLoss()
        >>> scores, labels = torch.tensor([[1.0, 1.0]]), torch.tensor([[1.0, 0.0]])
        >>> loss(scores, labels, torch.ones(1, 2, dtype=torch.bool))  # -log(1/2)
        tensor(0.6931)
    """

    def __init__(self, symmetric: bool = False):
        super().__init__()
        check(isinstance(symmetric, bool), "symmetric", symmetric, "must be true or false")
        self.symmetric = symmetric

    def forward(self, scores: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
        loss = self.rows(scores, labels, mask)
        if self.symmetric:
            loss = (loss + self.rows(scores.T, labels.T, mask.T)) / 2
        return loss

    @staticmethod
    def rows(scores: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
        """The mean over rows with a relevant candidate of -log softmax(relevant)."""
        relevant = mask & (labels > 0)  # (B, C)
        weights = torch.where(relevant, labels, 0.0)  # (B, C)
        total = weights.sum(1)  # (B,)
        has_pos = total > 0  # rows with no relevant candidate are skipped
        # -log p+ = logsumexp(valid scores) - score+ (weighted over graded positives), without
        # the (B, C) log-softmax. Masked scores become the dtype's lowest finite value, not
        # -inf: exp gives exactly 0 either way, and a row with no valid candidate stays
        # finite (its logsumexp would be -inf and its gradient NaN). masked_fill also gives
        # masked scores exactly zero gradient, whatever their value (inf included).
        logits = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)  # (B, C)
        lse = torch.logsumexp(logits, dim=1)  # (B,)
        positive = (weights * logits).sum(1) / total.clamp(min=1e-12)  # (B,)
        row_losses = torch.where(has_pos, lse - positive, 0.0)  # (B,)
        return row_losses.sum() / has_pos.sum().clamp(min=1)
