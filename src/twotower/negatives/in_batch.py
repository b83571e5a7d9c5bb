"""In-batch negatives: every other positive of the (global) batch, plus optional uniform draws
from the catalogue (mixed negative sampling), with an optional logQ correction."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from twotower.errors import ConfigError, check
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
    from twotower.losses.base import Loss


class InBatchNegatives(Negatives):
    """Every other document of the (global) batch, and ``num_uniform`` catalogue items, are
    negatives of each query.

    Needs positive pairs (``query``, ``doc``). Under DDP the documents of all processes are
    gathered with their gradient, so more devices give more negatives.

    The batch's negatives are other rows' positives, so an item is drawn in proportion to its
    popularity ``p_j``: popular items are pushed down far more often than a full softmax
    would, and the long tail, which is ranked at serving time, is never in a batch.
    ``num_uniform > 0`` adds that many items drawn uniformly (with replacement, torch's global
    RNG) from the whole catalogue, encoded by the document tower and shared by every row
    (mixed negative sampling, ``negatives=mixed``); this needs :meth:`bind`.

    ``logq`` corrects the popularity bias (Yi et al.): every candidate's score, the
    positive's included, becomes ``s_j - log p_j``. With uniform draws it becomes
    ``s_j - log(G p_j + K / N)``, ``j``'s expected count in a pool of the ``G`` positives of
    the global batch and ``K = num_uniform`` uniform draws out of ``N`` items (the
    sampled-softmax correction for this pool): tail items that a batch rarely holds get about
    ``log(K / N)``. The correction applies in validation too, so ``val/loss`` estimates the
    same objective as ``train/loss``; the towers and the full-corpus ranking never see it.

    ``mask_history`` masks, in each row, every column (in-batch or drawn) that is a training
    positive of the row's query (for recommendation: the user's other items, false
    negatives) except the row's own. It assumes ``query_id`` means the same in every split
    (a user index).

    Args:
        num_uniform: catalogue items drawn per batch (``B'`` in Yang et al.), >= 0.
        logq: ``None`` (off), ``counted`` (``p_j`` = the item's share of the training
            positives; needs :meth:`bind`) or ``streaming`` (the hashed estimator, updated in
            training with the global batch's items; the correction uses the estimate after
            this batch's update, so an item first seen now is not treated as infinitely rare).
        mask_history: mask the query's other training positives (needs :meth:`bind`).
        mask_duplicates: ``False`` masks nothing (the batch's other copies of a row's
            positive and its query's other positives are scored as its negatives: accidental
            positives); for ablations only.
        buckets: hash slots of the streaming estimator.
        alpha: learning rate of the streaming estimator.

    References:
        Yi et al., Sampling-Bias-Corrected Neural Modeling for Large Corpus Item
        Recommendations, RecSys 2019.
        Yang et al., Mixed Negative Sampling for Learning Two-tower Neural Networks in
        Recommendations, WWW 2020 Companion.
    """

    def __init__(
        self,
        num_uniform: int = 0,
        logq: str | None = None,
        mask_history: bool = False,
        mask_duplicates: bool = True,
        buckets: int = 2**20,
        alpha: float = 0.05,
    ):
        super().__init__()
        ok = isinstance(num_uniform, int) and not isinstance(num_uniform, bool)
        check(ok and num_uniform >= 0, "num_uniform", num_uniform, "must be an integer >= 0")
        check(isinstance(mask_history, bool), "mask_history", mask_history, "must be a bool")
        check(
            isinstance(mask_duplicates, bool), "mask_duplicates", mask_duplicates, "must be a bool"
        )
        self.num_uniform, self.logq, self.mask_duplicates = num_uniform, logq, mask_duplicates
        self.frequency = item_frequency(logq, buckets, alpha)
        self.history = History() if mask_history else None

    def check(self, loss: Loss, data_format: str, batch_size: int) -> None:
        super().check(loss, data_format, batch_size)
        if self.frequency is not None and not loss.needs_negatives_per_row:
            # logQ subtracts log p from each logit, +5 to +12 here: losses that compare the
            # scores of a row ignore that level, a sigmoid of each score alone saturates.
            raise ConfigError(
                "logq",
                self.logq,
                "corrects a softmax over sampled candidates; loss=pointwise scores each "
                "candidate alone, where the shift saturates the sigmoid: use a pairwise or "
                "listwise loss, or negatives.logq=null",
            )

    def forward(
        self, q: Tensor, d: Tensor, batch: dict, similarity: Similarity, encode: Encoder
    ) -> Candidates:
        docs, doc_ids, owner_ids, offset = gather_positives(d, batch)  # (G, D), (G,), (G,)
        if self.num_uniform:
            if self.catalogue is None:
                raise unbound("InBatchNegatives with num_uniform > 0", "the catalogue")
            n_items = len(self.catalogue.docs)
            drawn = torch.randint(n_items, (self.num_uniform,))  # (K,) on the CPU, as the store
            vectors, inverse = catalogue_vectors(self.catalogue, drawn, encode, q.device)
            extra = vectors[inverse]  # (K, D)
            drawn = drawn.to(q.device)
        log_q = None
        if self.frequency is not None:
            if self.training:  # the global batch's positives: every replica's estimate agrees
                self.frequency.update(doc_ids)
            if self.num_uniform:  # the uniform draws are not drawn with p
                log_p = self.frequency.log_prob(torch.cat([doc_ids, drawn]))  # (G + K,)
                uniform = torch.full_like(log_p, math.log(self.num_uniform / n_items))
                log_q = torch.logaddexp(log_p + math.log(len(doc_ids)), uniform)  # (G + K,)
            else:
                log_q = self.frequency.log_prob(doc_ids)  # (G,)
        if self.num_uniform:
            docs = torch.cat([docs, extra.to(docs.dtype)])  # (G + K, D)
            doc_ids = torch.cat([doc_ids, drawn])
            owner_ids = torch.cat([owner_ids, torch.full_like(drawn, NO_QUERY)])
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
            self.history if self.mask_duplicates else None,
            self.mask_duplicates,
        )
