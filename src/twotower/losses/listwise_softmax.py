"""Listwise softmax cross-entropy: the DSSM loss -log P(D+ | Q) over each row's candidates."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn


class ListwiseSoftmaxLoss(nn.Module):
    """Softmax cross-entropy over each row's valid candidates, target = labels / labels.sum.

    Input: a query with one relevant and n non-relevant candidates (the DSSM paper samples
    4), or in-batch negatives (then this is the InfoNCE / sampled softmax loss). One
    positive gives -log p+; graded labels give a weighted target. Rows with no relevant
    candidate are skipped. The scores are already scaled by gamma (the temperature's
    inverse), which this loss uses as given.

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

    needs_negatives_per_row: ClassVar[bool] = True

    def forward(self, scores: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
        logits = scores.masked_fill(~mask, float("-inf"))  # (B, C)
        # A row with no valid candidate would be all -inf, and its log_softmax NaN.
        logits = logits.masked_fill(~mask.any(1, keepdim=True), 0.0)
        log_p = torch.log_softmax(logits, dim=1)  # (B, C); log of a softmax would underflow

        relevant = mask & (labels > 0)  # (B, C)
        weights = torch.where(relevant, labels, 0.0)  # (B, C)
        target = weights / weights.sum(1, keepdim=True).clamp(min=1e-12)  # (B, C)
        # Zero the -inf entries before the product: -inf * 0 is NaN.
        row_losses = -(target * log_p.masked_fill(~relevant, 0.0)).sum(1)  # (B,)

        has_pos = relevant.any(1)  # (B,)
        return row_losses.sum() / has_pos.sum().clamp(min=1)
