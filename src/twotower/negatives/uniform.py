"""Uniform negatives: each row's own items drawn uniformly from the whole catalogue."""

from __future__ import annotations

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

REDRAW_ROUNDS = 20  # a user with 80% of the items still collides with p = 0.8^21 = 0.9%


class UniformNegatives(Negatives):
    """``num_negatives`` items per row, drawn uniformly (with replacement) from the catalogue.

    Candidate 0 is the row's positive, as for :class:`SampledNegatives`: ``(B, 1 + K)``. A
    draw that is the row's positive or one of its query's training positives (the user's
    history) is drawn again, as RecBole's sampler does: only the offending draws, for up to
    ``REDRAW_ROUNDS`` rounds, after which what still collides is masked. Draws use torch's
    global RNG, so ``seed_everything`` makes runs repeat. With ``loss=pairwise_logistic`` and
    ``num_negatives=1`` this is BPR: maximise ``log sigmoid(s_pos - s_neg)`` over a uniformly
    drawn unobserved item.

    Args:
        num_negatives: items drawn per row (K), >= 1.

    References:
        Rendle et al., BPR: Bayesian Personalized Ranking from Implicit Feedback, UAI 2009.
    """

    def __init__(self, num_negatives: int = 1):
        super().__init__()
        ok = isinstance(num_negatives, int) and not isinstance(num_negatives, bool)
        check(ok and num_negatives >= 1, "num_negatives", num_negatives, "must be an integer >= 1")
        self.num_negatives = num_negatives
        self.history = History()

    def forward(
        self, q: Tensor, d: Tensor, batch: dict, similarity: Similarity, encode: Encoder
    ) -> Candidates:
        if self.catalogue is None:
            raise unbound("UniformNegatives", "the catalogue")
        b, k = q.shape[0], self.num_negatives
        n_items = len(self.catalogue.docs)
        drawn = torch.randint(n_items, (b, k)).to(q.device)  # (B, K), drawn on the CPU
        bad = self.collides(batch, drawn)  # (B, K)
        for _ in range(REDRAW_ROUNDS):
            n_bad = int(bad.sum())
            if not n_bad:
                break
            drawn[bad] = torch.randint(n_items, (n_bad,)).to(q.device)
            bad &= self.collides(batch, drawn)  # a good draw stays good
        # Score every query against the distinct drawn items once (U <= n_items), then pick
        # each row's draws from that (B, U) matrix: the backward pass scatters B*K scalars,
        # not B*K vectors of D.
        vectors, inverse = catalogue_vectors(
            self.catalogue, drawn.flatten().cpu(), encode, q.device
        )
        pool = similarity(q, vectors.to(d.dtype))  # (B, U)
        positive = similarity(q, d[:, None])  # (B, 1)
        scores = torch.cat([positive, pool.gather(1, inverse.view(b, k))], 1)  # (B, 1+K)
        labels = torch.zeros_like(scores)
        labels[:, 0] = 1.0
        mask = torch.cat([torch.ones_like(bad[:, :1]), ~bad], 1)  # (B, 1+K)
        ids = torch.cat([batch["doc_id"][:, None], drawn], 1)  # (B, 1+K)
        return Candidates(scores, labels, mask, ids)

    def collides(self, batch: dict, drawn: Tensor) -> Tensor:
        """``(B, K)`` True where a draw is the row's positive or in its query's history."""
        return (drawn == batch["doc_id"][:, None]) | self.history(batch["query_id"], drawn)
