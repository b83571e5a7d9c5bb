"""Pairwise logistic (RankNet) loss over (relevant, less relevant) candidate pairs."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from twotower.errors import check_positive
from twotower.losses.base import Loss
from twotower.losses.pairs import mean_over_pairs, pair_differences


class PairwiseLogisticLoss(Loss):
    """Mean over pairs of log(1 + exp(sigma (s_n - s_p))), for pairs with labels[p] > labels[n].

    Input: a query with at least one relevant and one non-relevant candidate, e.g.
    (query, clicked doc, unclicked docs) or in-batch negatives; graded labels allowed.
    A smooth hinge: unlike the hinge loss it never stops pushing, only slows down.

    The scores are already scaled by gamma, so sigma multiplies it: sigma=1 on gamma * cos
    is sigma=gamma on cos, and with one negative equals :class:`ListwiseSoftmaxLoss`.

    Args:
        sigma: steepness of the logistic curve; > 0.

    Shapes:
        scores, labels, mask: (B, C); output: scalar.

    References:
        Burges et al., "Learning to Rank using Gradient Descent" (RankNet), ICML 2005.

    Example:
        >>> import torch
        >>> loss = PairwiseLogisticLoss(sigma=1.0)
        >>> scores, labels = torch.tensor([[1.0, 1.0]]), torch.tensor([[1.0, 0.0]])
        >>> loss(scores, labels, torch.ones(1, 2, dtype=torch.bool))  # log(1 + e^0)
        tensor(0.6931)
    """

    def __init__(self, sigma: float = 1.0):
        super().__init__()
        check_positive("sigma", sigma)
        self.sigma = float(sigma)

    def forward(self, scores: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
        diff, valid = pair_differences(scores, labels, mask)  # (B, P, C)
        # softplus(x) = log(1 + exp(x)) without overflow for large x.
        return mean_over_pairs(F.softplus(-self.sigma * diff), valid)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}"
