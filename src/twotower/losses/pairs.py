"""Pairs (p, n) of one row with labels[p] > labels[n], shared by the pairwise losses."""

from __future__ import annotations

import torch
from torch import Tensor


def pair_differences(scores: Tensor, labels: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Score differences s_p - s_n between each row's relevant candidates and all its candidates.

    Only the relevant candidates (at most P per row, usually 1) are compared with all C, so
    memory is O(B * P * C) rather than O(B * C * C). Every pair with labels[p] > labels[n]
    has labels[p] > 0, so graded labels are covered in full.

    Args:
        scores: candidate scores, already scaled by gamma.
        labels: relevance, > 0 relevant (graded allowed), 0 not relevant.
        mask: True for a valid candidate.

    Returns:
        ``diff`` with ``diff[b, i, n] = s[b, p_i] - s[b, n]``, and ``valid``, True where
        (p_i, n) is a real pair. ``diff`` is finite, and zero-gradient to masked scores.

    Shapes:
        scores, labels, mask: (B, C); diff, valid: (B, P, C).
    """
    # Masked scores may be huge or inf: replace them before any arithmetic, so that no
    # inf - inf or inf * 0 reaches the loss and masked_fill's backward gives them exactly 0.
    scores = scores.masked_fill(~mask, 0.0)
    labels = labels.masked_fill(~mask, 0.0)
    relevant = mask & (labels > 0)  # (B, C)
    num_pos = int(relevant.sum(1).max()) if len(relevant) else 0

    # Rows with fewer than P relevant candidates pick filler slots; is_pos marks the real ones.
    _, pos_idx = labels.masked_fill(~relevant, float("-inf")).topk(num_pos, dim=1)  # (B, P)
    is_pos = relevant.gather(1, pos_idx)  # (B, P)
    pos_scores = scores.gather(1, pos_idx)  # (B, P)
    pos_labels = labels.gather(1, pos_idx)  # (B, P)

    diff = pos_scores.unsqueeze(2) - scores.unsqueeze(1)  # (B, P, C)
    valid = is_pos.unsqueeze(2) & mask.unsqueeze(1)  # (B, P, C)
    valid = valid & (pos_labels.unsqueeze(2) > labels.unsqueeze(1))
    return diff, valid


def mean_over_pairs(pair_losses: Tensor, valid: Tensor) -> Tensor:
    """Mean of ``pair_losses`` over ``valid`` pairs; a graph-connected 0 when there are none."""
    # torch.where, not a product with valid: a product would pass NaN/inf through as NaN.
    total = torch.where(valid, pair_losses, 0.0).sum()
    return total / valid.sum().clamp(min=1)
