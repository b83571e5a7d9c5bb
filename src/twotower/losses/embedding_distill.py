"""Embedding distillation: the student's vectors regressed onto the teacher's (MSE or cosine)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from twotower.errors import check_choice
from twotower.losses.distillation import Distillation

if TYPE_CHECKING:
    from twotower.negatives import Candidates


class EmbeddingDistillation(Distillation):
    """Each training query's and positive document's vector against the teacher's.

    ``mse``: the mean squared error over the vector's entries (sentence-transformers'
    MSELoss); ``cosine``: the mean of ``1 - cos``. A student whose dimension differs from
    the teacher's learns a linear projection to it (created when the teacher is bound, kept
    in checkpoints, not in exports: the towers' own vectors are what is served). The loss is
    the mean of the query side and the document side.

    Args:
        kind: ``mse`` or ``cosine``.
        weight, supervised_weight: see :class:`~twotower.losses.distillation.Distillation`.

    References:
        Reimers and Gurevych, "Making Monolingual Sentence Embeddings Multilingual using
        Knowledge Distillation", EMNLP 2020.

    Example:
        >>> import torch
        >>> loss = EmbeddingDistillation(kind="cosine")
        >>> loss.distance(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]]))  # 1 - cos 90°
        tensor(1.)
    """

    needs_candidates = False

    def __init__(self, kind: str = "mse", weight: float = 1.0, supervised_weight: float = 1.0):
        super().__init__(weight, supervised_weight)
        check_choice("kind", kind, ("mse", "cosine"))
        self.kind = kind
        self.projection: nn.Linear | None = None

    def bind(self, teacher, module: nn.Module) -> None:
        super().bind(teacher, module)
        if self.projection is not None:  # restored from a checkpoint
            return
        student = output_dim(module, teacher.dim)
        if student != teacher.dim:
            device = next(module.parameters()).device
            self.projection = nn.Linear(student, teacher.dim).to(device)

    def distance(self, student: Tensor, teacher: Tensor) -> Tensor:
        if self.kind == "mse":
            return F.mse_loss(student, teacher)
        return (1 - F.cosine_similarity(student, teacher, dim=1)).mean()

    def forward(self, cands: Candidates, batch: dict, q: Tensor, d: Tensor) -> Tensor:
        teacher = self.bound(q.device)
        tq = teacher.query(batch["query_id"]).to(q.dtype)
        td = teacher.doc(batch["doc_id"]).to(d.dtype)
        project = self.projection if self.projection is not None else nn.Identity()
        return (self.distance(project(q), tq) + self.distance(project(d), td)) / 2

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args, **kwargs):
        # A checkpoint holds the projection made at bind time: rebuild it to its shape first.
        weight = state_dict.get(prefix + "projection.weight")
        if weight is not None and self.projection is None:
            self.projection = nn.Linear(weight.shape[1], weight.shape[0])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def output_dim(module: nn.Module, fallback: int) -> int:
    """The student's vector size, from one dummy pass of a document through its tower."""
    catalogue = getattr(module.negatives, "catalogue", None)
    if catalogue is None:
        return fallback
    from pytorch_lightning.utilities import move_data_to_device

    device = next(module.parameters()).device
    was = module.training
    module.eval()
    try:
        with torch.no_grad():
            inputs = move_data_to_device(catalogue.docs.batch(torch.arange(1)), device)
            return module.encode_documents(inputs).shape[1]
    finally:
        module.train(was)
