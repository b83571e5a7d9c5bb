"""Uniform negatives: each row's own items drawn uniformly from the whole catalogue."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from twotower.errors import check
from twotower.negatives.base import (
    Candidates,
    Encoder,
    History,
    Negatives,
    catalogue_vectors,
    unbound,
)
from twotower.similarity import Similarity

if TYPE_CHECKING:
    from twotower.data.base import Catalogue


class UniformNegatives(Negatives):
    """``num_negatives`` items per row, drawn uniformly (with replacement) from the catalogue.

    Candidate 0 is the row's positive, as for :class:`SampledNegatives`: ``(B, 1 + K)``. A
    draw that is the row's positive (or, with ``mask_history``, one of its query's training
    positives) is masked. Draws use torch's global RNG, so ``seed_everything`` makes runs
    repeat. With ``loss=pairwise_logistic`` and ``num_negatives=1`` this is BPR: maximise
    ``log sigmoid(s_pos - s_neg)`` over a uniformly drawn unobserved item.

    Args:
        num_negatives: items drawn per row (K), >= 1.
        mask_history: mask draws that are the query's other training positives.

    References:
        Rendle et al., BPR: Bayesian Personalized Ranking from Implicit Feedback, UAI 2009.
    """

    def __init__(self, num_negatives: int = 1, mask_history: bool = False):
        super().__init__()
        ok = isinstance(num_negatives, int) and not isinstance(num_negatives, bool)
        check(ok and num_negatives >= 1, "num_negatives", num_negatives, "must be an integer >= 1")
        check(isinstance(mask_history, bool), "mask_history", mask_history, "must be a bool")
        self.num_negatives = num_negatives
        self.history = History() if mask_history else None
        self.catalogue: Catalogue | None = None

    def bind(self, catalogue: Catalogue) -> None:
        self.catalogue = catalogue
        super().bind(catalogue)

    def forward(
        self, q: Tensor, d: Tensor, batch: dict, similarity: Similarity, encode: Encoder
    ) -> Candidates:
        if self.catalogue is None:
            raise unbound("UniformNegatives", "the catalogue")
        b, k = q.shape[0], self.num_negatives
        drawn = torch.randint(len(self.catalogue.docs), (b, k))  # (B, K) on the CPU
        neg = catalogue_vectors(self.catalogue, drawn.flatten(), encode, q.device)  # (B*K, D)
        drawn = drawn.to(q.device)
        cands = torch.cat([d[:, None], neg.view(b, k, -1).to(d.dtype)], 1)  # (B, 1+K, D)
        scores = similarity(q, cands)  # (B, 1+K)
        labels = torch.zeros_like(scores)
        labels[:, 0] = 1.0
        valid = drawn != batch["doc_id"][:, None]  # (B, K)
        if self.history is not None:
            valid &= ~self.history(batch["query_id"], drawn)
        mask = torch.cat([torch.ones_like(valid[:, :1]), valid], 1)  # (B, 1+K)
        return Candidates(scores, labels, mask)
