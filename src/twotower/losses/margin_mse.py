"""MarginMSE (Hofstätter et al. 2020): the student's margins to the teacher's, squared error."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor

from twotower.errors import check_positive
from twotower.losses.distillation import Distillation
from twotower.losses.pairs import mean_over_pairs, pair_differences

if TYPE_CHECKING:
    from twotower.negatives import Candidates


class MarginMSE(Distillation):
    """Mean over (positive p, negative n) pairs of ``((s_p - s_n) - scale * (t_p - t_n))^2``.

    The pairs are every relevant candidate of a row against each of its valid non-relevant
    ones (in-batch, mined, memory or sampled), as the pairwise losses take them. The student's
    scores are gamma-scaled, and taken before any logQ correction (``negatives.logq``), which
    shifts margins by the candidates' sampling rates, not their relevance; ``teacher_scale``
    brings the teacher's raw dot products to the same units (20 for a cosine teacher and a
    cosine x 20 student).

    Args:
        teacher_scale: multiplies the teacher's scores.
        weight, supervised_weight: see :class:`~twotower.losses.distillation.Distillation`.

    References:
        Hofstätter et al., "Improving Efficient Neural Ranking Models with Cross-Architecture
        Knowledge Distillation", 2020.

    Example:
        >>> import torch
        >>> loss = MarginMSE(teacher_scale=1.0)
        >>> s, t = torch.tensor([[2.0, 0.0]]), torch.tensor([[1.0, 0.0]])
        >>> labels, mask = torch.tensor([[1.0, 0.0]]), torch.ones(1, 2, dtype=torch.bool)
        >>> loss.margins(s, t, labels, mask)  # (2 - 1) ** 2
        tensor(1.)
    """

    def __init__(self, teacher_scale: float = 20.0, weight: float = 1.0, supervised_weight=1.0):
        super().__init__(weight, supervised_weight)
        check_positive("teacher_scale", teacher_scale)
        self.teacher_scale = float(teacher_scale)

    def forward(self, cands: Candidates, batch: dict, q: Tensor, d: Tensor) -> Tensor:
        teacher = self.teacher_scores(cands, batch)
        return self.margins(cands.uncorrected, teacher, cands.labels, cands.mask)

    def margins(self, student: Tensor, teacher: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
        student_diff, valid = pair_differences(student, labels, mask)  # (B, P, C)
        teacher_diff, _ = pair_differences(teacher * self.teacher_scale, labels, mask)
        return mean_over_pairs((student_diff - teacher_diff) ** 2, valid)
