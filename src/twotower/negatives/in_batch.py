"""In-batch negatives: every other positive of the (global) batch, plus optional uniform draws
from the catalogue (mixed negative sampling), with an optional logQ correction."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

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
from twotower.negatives.hard import HardNegatives
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
        hard_negatives: mined negatives per row per training step (:class:`HardNegatives`;
            0: none), extra candidates of every query; with ``logq`` each gets its item's
            correction like any candidate (as TFRS does for its hard negatives). Validation
            and test use none, so ``val/loss`` stays the in-batch objective.
        hard_sample: ``random`` (from the mined window each step) or ``top``.
        mining: how the table is mined and refreshed (:class:`twotower.mining.HardNegativeMiner`).

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
        hard_negatives: int = 0,
        hard_sample: str = "random",
        mining: Mapping[str, Any] | None = None,
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
        check(
            isinstance(hard_negatives, int) and hard_negatives >= 0,
            "hard_negatives",
            hard_negatives,
            "must be an integer >= 0",
        )
        self.hard = HardNegatives(hard_negatives, hard_sample, mining) if hard_negatives else None

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

    def memory(self) -> tuple[Tensor, Tensor, Tensor] | None:
        """Extra candidates kept from earlier batches, ``(vectors, doc_ids, owner_ids)``, or
        ``None`` (:class:`~twotower.negatives.xbm.CrossBatchMemory` keeps a queue)."""
        return None

    def remember(self, docs: Tensor, doc_ids: Tensor, owner_ids: Tensor) -> None:
        """Called in training with the global batch's positives after they were scored."""

    def forward(
        self, q: Tensor, d: Tensor, batch: dict, similarity: Similarity, encode: Encoder
    ) -> Candidates:
        docs, doc_ids, owner_ids, offset = gather_positives(d, batch)  # (G, D), (G,), (G,)
        pool = [(docs, doc_ids, owner_ids)]
        held = self.memory()  # (M, D), (M,), (M,)
        n_held = 0 if held is None else len(held[1])
        if n_held:
            pool.append((held[0].to(q.device, docs.dtype), held[1], held[2]))
        # Mined yet? Validation and test keep the in-batch objective (as the memory does), so
        # val/loss compares across strategies and across the minings of a run.
        hard = self.training and self.hard is not None and len(self.hard.table) > 0
        if hard:
            if self.catalogue is None:
                raise unbound("InBatchNegatives with hard_negatives > 0", "the catalogue")
            mined, mined_ids = self.hard.candidates(batch, encode, q.device)
            start = sum(len(ids) for _, ids, _ in pool)
            hard_cols = slice(start, start + len(mined_ids))
            pool.append((mined.to(docs.dtype), mined_ids, torch.full_like(mined_ids, NO_QUERY)))
        if self.num_uniform:
            if self.catalogue is None:
                raise unbound("InBatchNegatives with num_uniform > 0", "the catalogue")
            n_items = len(self.catalogue.docs)
            drawn = torch.randint(n_items, (self.num_uniform,))  # (K,) on the CPU, as the store
            vectors, inverse = catalogue_vectors(self.catalogue, drawn, encode, q.device)
            drawn = drawn.to(q.device)
            pool.append((vectors[inverse].to(docs.dtype), drawn, torch.full_like(drawn, NO_QUERY)))
        all_ids = torch.cat([ids for _, ids, _ in pool])  # (G + M + K,)
        log_q = None
        if self.frequency is not None:
            if self.training:  # the global batch's positives: every replica's estimate agrees
                self.frequency.update(doc_ids)
            log_p = self.frequency.log_prob(all_ids)
            if self.num_uniform:  # the uniform draws are not drawn with p
                # G positives and M remembered ones were drawn with p: G + M draws in all
                drawn_with_p = math.log(len(doc_ids) + n_held)
                uniform = torch.full_like(log_p, math.log(self.num_uniform / n_items))
                log_q = torch.logaddexp(log_p + drawn_with_p, uniform)  # (G + M + K,)
            else:  # the expected count (G + M) p: a constant shift of each row away from p
                log_q = log_p
        if self.training:
            self.remember(docs.detach(), doc_ids, owner_ids)
        pos_col = offset + torch.arange(q.shape[0], device=q.device)
        cands = score_pool(
            q,
            batch,
            torch.cat([v for v, _, _ in pool]) if len(pool) > 1 else docs,
            all_ids,
            torch.cat([o for _, _, o in pool]),
            pos_col,
            similarity,
            log_q,
            self.history if self.mask_duplicates else None,
            self.mask_duplicates,
        )
        if hard:
            earlier = all_ids[: hard_cols.start]
            cands.mask[:, hard_cols] &= self.hard.mask(batch["query_id"], mined_ids, earlier)
        return cands
