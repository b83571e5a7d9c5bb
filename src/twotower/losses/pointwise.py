"""Pointwise loss: each (query, doc) entry is a binary relevant / not-relevant example."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from twotower.errors import check, check_positive
from twotower.losses.base import Loss


class PointwiseLoss(Loss):
    """Binary cross-entropy with logits over every valid entry, target labels > 0.

    Input: labelled (label, query, doc) pairs, one candidate per row is fine; also works
    on in-batch candidate matrices. Unlike the pairwise and listwise losses, a row with
    only non-relevant candidates still counts: its entries are the negatives. Keep the
    classes roughly balanced (1:2 or 1:3 positives to negatives) or set ``pos_weight``.

    Gamma-scaled cosines are centred on 0, so the decision threshold sits at cos = 0;
    a bias added to the logits moves it, and being a single scalar it leaves the
    ranking unchanged.

    Args:
        pos_weight: weight of the positive entries' term, as in
            ``F.binary_cross_entropy_with_logits``; > 0.
        learn_bias: learn the bias (a parameter of this module: the module's optimizer
            must include it), else keep it fixed at ``init_bias``.
        init_bias: initial (or fixed) bias added to the scores.
        balance: average the positive entries' and the negative entries' losses separately,
            then the two: in-batch candidates give B - 1 negatives per positive, and a
            plain mean over them learns to call everything negative.

    Shapes:
        scores, labels, mask: (B, C); output: scalar.

    References:
        Huang et al., "Learning Deep Structured Semantic Models for Web Search using
        Clickthrough Data" (DSSM), CIKM 2013; the pointwise regime as in Covington et al.,
        "Deep Neural Networks for YouTube Recommendations", RecSys 2016.

    Example:
        >>> import torch
        >>> loss = PointwiseLoss()
        >>> scores, labels = torch.tensor([[0.0], [0.0]]), torch.tensor([[1.0], [0.0]])
        >>> loss(scores, labels, torch.ones(2, 1, dtype=torch.bool))  # log 2
        tensor(0.6931)
    """

    needs_negatives_per_row: ClassVar[bool] = False

    def __init__(
        self,
        pos_weight: float = 1.0,
        learn_bias: bool = False,
        init_bias: float = 0.0,
        balance: bool = False,
    ):
        super().__init__()
        check(isinstance(balance, bool), "balance", balance, "must be true or false")
        self.balance = balance
        check_positive("pos_weight", pos_weight)
        check(isinstance(learn_bias, bool), "learn_bias", learn_bias, "must be true or false")
        is_number = isinstance(init_bias, int | float) and not isinstance(init_bias, bool)
        check(is_number and math.isfinite(init_bias), "init_bias", init_bias, "must be finite")
        self.register_buffer("pos_weight", torch.tensor(float(pos_weight)))
        bias = torch.tensor(float(init_bias))
        if learn_bias:
            self.bias = nn.Parameter(bias)
        else:
            self.register_buffer("bias", bias)

    def forward(self, scores: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
        # Fill before the loss: a masked inf would give a NaN that where() cannot stop in backward.
        logits = scores.masked_fill(~mask, 0.0) + self.bias  # (B, C)
        target = (labels > 0).to(logits.dtype)  # (B, C)
        losses = F.binary_cross_entropy_with_logits(
            logits, target, pos_weight=self.pos_weight, reduction="none"
        )  # (B, C)
        if not self.balance:
            return torch.where(mask, losses, 0.0).sum() / mask.sum().clamp(min=1)
        positive = mask & (target > 0)  # (B, C)
        negative = mask & ~positive
        pos_mean = torch.where(positive, losses, 0.0).sum() / positive.sum().clamp(min=1)
        neg_mean = torch.where(negative, losses, 0.0).sum() / negative.sum().clamp(min=1)
        return (pos_mean + neg_mean) / 2
