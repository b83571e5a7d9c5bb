"""Mixed negatives: the in-batch candidates plus items drawn uniformly from the catalogue."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from twotower.errors import check
from twotower.negatives.base import (
    NO_QUERY,
    Candidates,
    Encoder,
    History,
    Negatives,
    catalogue_vectors,
    gather_positives,
    score_pool,
    unbound,
)
from twotower.negatives.frequency import item_frequency
from twotower.similarity import Similarity

if TYPE_CHECKING:
    from twotower.data.base import Catalogue


class MixedNegatives(Negatives):
    """The (global) batch's documents plus ``num_uniform`` items drawn from the whole catalogue.

    In-batch negatives are all popular items; the uniform draws add the long tail, which is
    never in a batch but is ranked at serving time. The ``num_uniform`` items are drawn with
    replacement with torch's global RNG (``seed_everything`` makes runs repeat), encoded by
    the document tower and shared by every row, so they are masked per row, not redrawn.
    Every column (in-batch or drawn) that is a training positive of the row's query (the
    user's history; its positive included) is masked in that row, except the row's own
    positive; this needs :meth:`bind` with the training data.

    With ``logq`` candidate ``j``'s score becomes ``s_j - log(G p_j + K / N)``: the pool
    holds the ``G`` positives of the global batch, drawn with the positives' distribution
    ``p``, and ``K = num_uniform`` uniform draws out of ``N`` items, so ``G p_j + K / N`` is
    ``j``'s expected count in it, the sampled-softmax correction for this pool. With
    ``K = 0`` it is ``log p_j + log G``, Yi et al.'s ``log p_j`` plus a constant that the
    softmax ignores; tail items that a batch rarely holds get about ``log(K / N)``.

    Args:
        num_uniform: uniform items per batch (``B'`` in the paper), >= 1.
        logq: ``None``, ``counted`` or ``streaming``, as for :class:`InBatchNegatives`.
        mask_duplicates: ``False`` masks nothing: the batch's other copies of a row's
            positive and its query's other positives are scored as its negatives (accidental
            positives); for ablations only.
        buckets: hash slots of the streaming estimator.
        alpha: learning rate of the streaming estimator.

    References:
        Yang et al., Mixed Negative Sampling for Learning Two-tower Neural Networks in
        Recommendations, WWW 2020 Companion.
        Yi et al., Sampling-Bias-Corrected Neural Modeling for Large Corpus Item
        Recommendations, RecSys 2019 (the correction).
    """

    def __init__(
        self,
        num_uniform: int = 64,
        logq: str | None = None,
        mask_duplicates: bool = True,
        buckets: int = 2**20,
        alpha: float = 0.05,
    ):
        super().__init__()
        ok = isinstance(num_uniform, int) and not isinstance(num_uniform, bool)
        check(ok and num_uniform >= 1, "num_uniform", num_uniform, "must be an integer >= 1")
        check(
            isinstance(mask_duplicates, bool), "mask_duplicates", mask_duplicates, "must be a bool"
        )
        self.mask_duplicates = mask_duplicates
        self.num_uniform = num_uniform
        self.frequency = item_frequency(logq, buckets, alpha)
        self.history = History()
        self.catalogue: Catalogue | None = None

    def bind(self, catalogue: Catalogue) -> None:
        self.catalogue = catalogue
        super().bind(catalogue)

    def forward(
        self, q: Tensor, d: Tensor, batch: dict, similarity: Similarity, encode: Encoder
    ) -> Candidates:
        if self.catalogue is None:
            raise unbound("MixedNegatives", "the catalogue")
        docs, doc_ids, owner_ids, offset = gather_positives(d, batch)  # (G, D), (G,), (G,)
        n_items = len(self.catalogue.docs)
        drawn = torch.randint(n_items, (self.num_uniform,))  # (K,) on the CPU, like the store
        extra = catalogue_vectors(self.catalogue, drawn, encode, q.device)  # (K, D)
        drawn = drawn.to(q.device)
        log_q = None
        if self.frequency is not None:
            if self.training:  # the batch's positives only: the uniform draws are not p
                self.frequency.update(doc_ids)
            log_p = self.frequency.log_prob(torch.cat([doc_ids, drawn]))  # (G + K,)
            uniform = torch.full_like(log_p, math.log(self.num_uniform / n_items))
            log_q = torch.logaddexp(log_p + math.log(len(doc_ids)), uniform)  # (G + K,)
        pos_col = offset + torch.arange(q.shape[0], device=q.device)
        return score_pool(
            q,
            batch,
            torch.cat([docs, extra.to(docs.dtype)]),  # (G + K, D)
            torch.cat([doc_ids, drawn]),
            torch.cat([owner_ids, torch.full_like(drawn, NO_QUERY)]),
            pos_col,
            similarity,
            log_q,
            self.history if self.mask_duplicates else None,
            self.mask_duplicates,
        )
