"""What every distillation loss shares: a weight, the teacher's vectors and its scores.

A distillation loss is added to the supervised loss of each training step,
``supervised_weight * loss + weight * distill``; validation and test report the supervised
loss alone, so runs with and without a teacher compare. It reads the teacher's cached vectors
(:mod:`twotower.teacher`), bound before training: the teacher's score of a candidate is a dot
product, looked up by the batch's query ids and the candidates' document ids, and is compared
with the student's score before the logQ correction (:attr:`Candidates.uncorrected`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor, nn

from twotower.errors import ConfigError, check

if TYPE_CHECKING:
    from twotower.negatives import Candidates
    from twotower.teacher import TeacherVectors


def check_weight(key: str, value) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
    check(ok, key, value, "must be a number >= 0")


class Distillation(nn.Module):
    """Base of every distillation loss: ``forward(cands, batch, q, d) -> scalar``.

    Args:
        weight: the distillation term's weight in the training loss.
        supervised_weight: the supervised loss's weight (0: distillation alone).
    """

    needs_candidates = True  # compares the candidates of a row (not for one-candidate rows)

    def __init__(self, weight: float = 1.0, supervised_weight: float = 1.0):
        super().__init__()
        check_weight("weight", weight)
        check_weight("supervised_weight", supervised_weight)
        self.weight, self.supervised_weight = float(weight), float(supervised_weight)
        self.teacher: TeacherVectors | None = None

    def check(self, data_format: str) -> None:
        if self.needs_candidates and data_format == "labelled":
            raise ConfigError(
                "_target_",
                f"{type(self).__module__}.{type(self).__qualname__}",
                "compares the teacher's and the student's scores over each query's candidates, "
                "but labelled rows have one candidate each: use distill=embedding or pairs data",
            )

    def bind(self, teacher: TeacherVectors, module: nn.Module) -> None:
        """Take the teacher's vectors (called before training; ``module`` is the student)."""
        self.teacher = teacher

    def bound(self, device) -> TeacherVectors:
        if self.teacher is None:
            raise RuntimeError(
                "a distillation loss needs the teacher's vectors: train through twotower.train "
                "(its TeacherCache binds them) or call bind() before the first step"
            )
        self.teacher = self.teacher.to(device)  # once, on the first step on a GPU
        return self.teacher

    def teacher_scores(self, cands: Candidates, batch: dict[str, Tensor]) -> Tensor:
        """``(B, C)`` the teacher's dot products for each row's candidates."""
        if cands.doc_ids is None:
            raise RuntimeError("these candidates carry no document ids to score with the teacher")
        teacher = self.bound(cands.scores.device)
        return teacher.scores(batch["query_id"], cands.doc_ids).to(cands.scores.dtype)
