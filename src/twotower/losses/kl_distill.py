"""Listwise KL distillation: the student's softmax over each query's candidates to the teacher's."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from twotower.errors import check_positive
from twotower.losses.distillation import Distillation

if TYPE_CHECKING:
    from twotower.negatives import Candidates


class KLDistillation(Distillation):
    """KL(teacher || student) between softmaxes over each row's valid candidates.

    The candidates are whatever the negatives strategy built (in-batch, mined, memory,
    sampled); the teacher scores them by dot products of its cached vectors. The student's
    scores are already gamma-scaled: ``student_temperature`` divides them further (1: as
    trained). They are taken before any logQ correction (``negatives.logq``), which corrects
    the sampling of the candidates, not their relevance: a student equal to its teacher has a
    divergence of 0 with or without it. The teacher's raw dot products (cosines for a
    normalised teacher, in [-1, 1]) are divided by ``teacher_temperature``: 0.05 gives a cosine
    teacher the sharpness of a gamma = 20 student. The loss is the mean over rows with at least
    two valid candidates.

    Args:
        teacher_temperature: divides the teacher's scores.
        student_temperature: divides the student's (gamma-scaled) scores.
        weight, supervised_weight: see :class:`~twotower.losses.distillation.Distillation`.

    References:
        Hinton et al., "Distilling the Knowledge in a Neural Network", 2015; Lin et al.,
        "In-Batch Negatives for Knowledge Distillation with Tightly-Coupled Teachers", 2021.

    Example:
        >>> import torch
        >>> kl = KLDistillation(teacher_temperature=1.0)
        >>> s, t = torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 0.0]])
        >>> kl.divergence(s, t, torch.ones(1, 2, dtype=torch.bool))  # same softmax
        tensor(0.)
    """

    def __init__(
        self,
        teacher_temperature: float = 0.05,
        student_temperature: float = 1.0,
        weight: float = 1.0,
        supervised_weight: float = 1.0,
    ):
        super().__init__(weight, supervised_weight)
        check_positive("teacher_temperature", teacher_temperature)
        check_positive("student_temperature", student_temperature)
        self.teacher_temperature = float(teacher_temperature)
        self.student_temperature = float(student_temperature)

    def forward(self, cands: Candidates, batch: dict, q: Tensor, d: Tensor) -> Tensor:
        teacher = self.teacher_scores(cands, batch)
        return self.divergence(cands.uncorrected, teacher, cands.mask)

    def divergence(self, student: Tensor, teacher: Tensor, mask: Tensor) -> Tensor:
        """The mean over rows of KL(softmax(teacher / T_t) || softmax(student / T_s))."""
        low = torch.finfo(student.dtype).min  # exp gives 0, and stays finite (no -inf - -inf)
        log_s = torch.log_softmax((student / self.student_temperature).masked_fill(~mask, low), 1)
        log_t = torch.log_softmax((teacher / self.teacher_temperature).masked_fill(~mask, low), 1)
        terms = torch.where(mask, log_t.exp() * (log_t - log_s), 0.0)  # (B, C)
        rows = mask.sum(1) > 1  # one candidate: nothing to distil
        return terms.sum(1)[rows].sum() / rows.sum().clamp(min=1)
