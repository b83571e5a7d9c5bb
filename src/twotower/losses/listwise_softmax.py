"""Listwise softmax cross-entropy: the DSSM loss -log P(D+ | Q) over each row's candidates."""

from __future__ import annotations

import torch
import torch.nn.functional as F
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
        invalid = ~mask  # (B, C)
        # Masked scores become the dtype's lowest finite value, not -inf: exp gives exactly 0
        # either way, a row with no valid candidate stays finite, and 0 x that value is 0
        # (0 x -inf would be NaN). masked_fill gives masked scores exactly zero gradient.
        logits = scores.masked_fill(invalid, torch.finfo(scores.dtype).min)  # (B, C)
        positive = single_positive(labels, mask)  # (B,) or None
        if positive is not None:  # one valid positive a row: class indices, no (B, C) target
            return F.cross_entropy(logits, positive)
        # -log p+ weighted over graded positives = cross-entropy against the target
        # distribution weights / total.
        weights = labels.clamp(min=0).masked_fill(invalid, 0.0)  # (B, C) valid relevance
        total = weights.sum(1, keepdim=True)  # (B, 1)
        has_pos = total.squeeze(1) > 0  # rows with no relevant candidate add 0 and not count
        target = (weights / total.clamp(min=1e-12)).to(logits.dtype)  # (B, C): rows sum to 1 or 0
        loss = F.cross_entropy(logits, target, reduction="sum")
        return loss / has_pos.sum().clamp(min=1)


def single_positive(labels: Tensor, mask: Tensor) -> Tensor | None:
    """``(B,)`` the column of each row's one relevant candidate when every row has exactly
    one and it is valid (its target distribution is then one-hot, whatever its grade); else
    ``None``. Labels are relevance grades, >= 0."""
    if not len(labels) or not bool((labels.count_nonzero(1) == 1).all()):
        return None
    column = labels.argmax(1)  # (B,) the one nonzero grade
    rows = torch.arange(len(labels), device=labels.device)
    ok = mask[rows, column].all() & (labels[rows, column] > 0).all()
    return column if bool(ok) else None
