"""Pairwise hinge (triplet margin) loss over (relevant, less relevant) candidate pairs."""

from __future__ import annotations

from torch import Tensor

from twotower.errors import check_positive
from twotower.losses.base import Loss
from twotower.losses.pairs import mean_over_pairs, pair_differences


class PairwiseHingeLoss(Loss):
    """Mean over pairs of max(0, margin - s_p + s_n), for pairs with labels[p] > labels[n].

    Input: a query with at least one relevant and one non-relevant candidate, e.g.
    (query, clicked doc, unclicked docs) or in-batch negatives. Graded labels make every
    more-relevant / less-relevant pair of a row a pair.

    The margin is in the units of the scores, which are already scaled by gamma: at
    gamma 20 a margin of 5 asks for a cosine gap of 0.25.

    Args:
        margin: required score gap between p and n; >= 0.

    Shapes:
        scores, labels, mask: (B, C); output: scalar.

    References:
        Weinberger & Saul, "Distance Metric Learning for Large Margin Nearest Neighbor
        Classification", JMLR 2009 (triplet hinge); Herbrich et al., "Large Margin Rank
        Boundaries for Ordinal Regression", 2000 (pairwise ranking).

    Example:
        >>> import torch
        >>> loss = PairwiseHingeLoss(margin=1.0)
        >>> scores = torch.tensor([[2.0, 1.5, 0.0]])
        >>> labels = torch.tensor([[1.0, 0.0, 0.0]])
        >>> loss(scores, labels, torch.ones(1, 3, dtype=torch.bool))  # (0.5 + 0) / 2
        tensor(0.2500)
    """

    def __init__(self, margin: float = 1.0):
        super().__init__()
        check_positive("margin", margin, allow_zero=True)
        self.margin = float(margin)

    def forward(self, scores: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
        diff, valid = pair_differences(scores, labels, mask)  # (B, P, C)
        return mean_over_pairs((self.margin - diff).clamp(min=0), valid)

    def extra_repr(self) -> str:
        return f"margin={self.margin}"
