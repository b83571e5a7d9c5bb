"""Sampled negatives: a few random documents of the batch per query (the DSSM recipe)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from twotower.errors import ConfigError
from twotower.negatives.base import (
    Candidates,
    Encoder,
    History,
    Negatives,
    gather_positives,
    score_pool,
)
from twotower.similarity import Similarity

if TYPE_CHECKING:
    from twotower.losses.base import Loss


class SampledNegatives(Negatives):
    """``num_negatives`` documents drawn at random from the rest of the (global) batch.

    The DSSM paper's 4 random unclicked documents. Candidate 0 is the positive; a row with
    fewer valid documents than ``num_negatives`` gets masked filler columns. A document of
    the batch that is a training positive of the row's query (one of its other relevant
    documents) is never drawn: this needs :meth:`bind` with the training data.

    References:
        Huang et al., Learning Deep Structured Semantic Models for Web Search, CIKM 2013.
    """

    def __init__(self, num_negatives: int = 4):
        super().__init__()
        if not isinstance(num_negatives, int) or num_negatives < 1:
            raise ConfigError("num_negatives", num_negatives, "must be an integer >= 1")
        self.num_negatives = num_negatives
        self.history = History()

    def check(self, loss: Loss, data_format: str, batch_size: int) -> None:
        if self.num_negatives >= batch_size:
            raise ConfigError(
                "num_negatives",
                self.num_negatives,
                f"must be < data.batch_size ({batch_size}): negatives come from the batch",
            )
        super().check(loss, data_format, batch_size)

    def forward(
        self, q: Tensor, d: Tensor, batch: dict, similarity: Similarity, encode: Encoder
    ) -> Candidates:
        docs, doc_ids, owner_ids, offset = gather_positives(d, batch)  # (N, D), (N,), (N,)
        pos_col = offset + torch.arange(q.shape[0], device=q.device)
        full = score_pool(
            q, batch, docs, doc_ids, owner_ids, pos_col, similarity, history=self.history
        )  # (B, N)
        rows = torch.arange(q.shape[0], device=q.device)
        eligible = full.mask & (full.labels == 0)
        # A random key per eligible column; the top-k keys are a uniform sample without
        # replacement. Ineligible columns get -1 so they are picked only as masked filler.
        keys = torch.rand(full.scores.shape, device=q.device).masked_fill(~eligible, -1.0)
        k = min(self.num_negatives, keys.shape[1])
        top, cols = keys.topk(k, dim=1)  # (B, k)
        scores = torch.cat([full.scores[rows, pos_col, None], full.scores.gather(1, cols)], 1)
        labels = torch.zeros_like(scores)
        labels[:, 0] = 1.0
        mask = torch.cat([torch.ones_like(top[:, :1], dtype=torch.bool), top >= 0], 1)
        ids = torch.cat([batch["doc_id"][:, None], doc_ids[cols]], 1)  # (B, 1 + k)
        return Candidates(scores, labels, mask, ids)  # (B, 1 + k)
