"""In-batch negatives: every other positive of the (global) batch, with optional logQ."""

from __future__ import annotations

import torch
from torch import Tensor

from twotower.errors import check
from twotower.negatives.base import (
    Candidates,
    Encoder,
    History,
    Negatives,
    gather_positives,
    score_pool,
)
from twotower.negatives.frequency import item_frequency
from twotower.similarity import Similarity


class InBatchNegatives(Negatives):
    """Every other document of the (global) batch is a negative of each query.

    Needs positive pairs (``query``, ``doc``). Under DDP the documents of all processes are
    gathered with their gradient, so more devices give more negatives.

    The negatives are other rows' positives, so an item is drawn in proportion to its
    popularity ``p_j`` and popular items are pushed down far more often than a full softmax
    would. ``logq`` corrects this (Yi et al.): every candidate's score, the positive's
    included, becomes ``s_j - log p_j``. The correction applies in validation too, so
    ``val/loss`` estimates the same objective as ``train/loss``; the towers and the
    full-corpus ranking never see it.

    ``mask_history`` also masks, in each row, every training positive of the row's query
    (for recommendation: the user's other items, false negatives) except the row's own.
    It assumes ``query_id`` means the same in every split (a user index).

    Args:
        logq: ``None`` (off), ``counted`` (``p_j`` = the item's share of the training
            positives; needs :meth:`bind`) or ``streaming`` (the hashed estimator, updated in
            training with the global batch's items; the correction uses the estimate after
            this batch's update, so an item first seen now is not treated as infinitely rare).
        mask_history: mask the query's other training positives (needs :meth:`bind`).
        mask_duplicates: ``False`` scores the batch's other copies of a row's positive
            as its negatives (accidental positives); for ablations only.
        buckets: hash slots of the streaming estimator.
        alpha: learning rate of the streaming estimator.

    References:
        Yi et al., Sampling-Bias-Corrected Neural Modeling for Large Corpus Item
        Recommendations, RecSys 2019.
    """

    def __init__(
        self,
        logq: str | None = None,
        mask_history: bool = False,
        mask_duplicates: bool = True,
        buckets: int = 2**20,
        alpha: float = 0.05,
    ):
        super().__init__()
        check(isinstance(mask_history, bool), "mask_history", mask_history, "must be a bool")
        check(
            isinstance(mask_duplicates, bool), "mask_duplicates", mask_duplicates, "must be a bool"
        )
        self.mask_duplicates = mask_duplicates
        self.frequency = item_frequency(logq, buckets, alpha)
        self.history = History() if mask_history else None

    def forward(
        self, q: Tensor, d: Tensor, batch: dict, similarity: Similarity, encode: Encoder
    ) -> Candidates:
        docs, doc_ids, owner_ids, offset = gather_positives(d, batch)  # (N, D), (N,), (N,)
        log_q = None
        if self.frequency is not None:
            if self.training:  # the global batch's ids: every replica's estimate agrees
                self.frequency.update(doc_ids)
            log_q = self.frequency.log_prob(doc_ids)  # (N,)
        pos_col = offset + torch.arange(q.shape[0], device=q.device)
        return score_pool(
            q,
            batch,
            docs,
            doc_ids,
            owner_ids,
            pos_col,
            similarity,
            log_q,
            self.history,
            self.mask_duplicates,
        )
