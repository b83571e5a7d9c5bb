"""Candidate builders: each query's scored candidates, their labels and a validity mask.

Every strategy returns :class:`Candidates` ``(scores, labels, mask)`` of shape ``(B, C)``,
the input of every loss. A candidate that is the same document as the query's positive
(same ``doc_id``), or the positive of another row with the same ``query_id``, is masked:
it is never scored as a negative (the seeds' rotation sampler makes that mistake).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from twotower.distributed import gather
from twotower.errors import ConfigError
from twotower.similarity import Similarity

Encoder = Callable[[torch.Tensor], torch.Tensor]
NO_QUERY = -1  # query id of candidates that are nobody's positive


class Candidates(NamedTuple):
    scores: torch.Tensor  # (B, C) gamma-scaled similarities
    labels: torch.Tensor  # (B, C) relevance, > 0 relevant
    mask: torch.Tensor  # (B, C) True = a valid candidate


def score_shared(
    q: torch.Tensor,
    batch: dict[str, torch.Tensor],
    docs: torch.Tensor,
    doc_ids: torch.Tensor,
    owner_ids: torch.Tensor,
    pos_col: torch.Tensor,
    similarity: Similarity,
) -> Candidates:
    """Score every query against one shared candidate set with one matmul.

    Args:
        q: ``(B, D)`` query vectors.
        batch: holds ``doc_id`` and ``query_id`` ``(B,)`` of the queries' positives.
        docs: ``(N, D)`` candidate vectors; ``doc_ids`` their document ids ``(N,)``;
            ``owner_ids`` the query id each candidate is the positive of, or ``NO_QUERY``.
        pos_col: ``(B,)`` column of each query's own positive.
    """
    scores = similarity(q, docs)  # (B, N)
    rows = torch.arange(q.shape[0], device=q.device)
    labels = torch.zeros_like(scores)
    labels[rows, pos_col] = 1.0
    clash = batch["doc_id"][:, None] == doc_ids[None, :]  # (B, N) same document
    clash |= batch["query_id"][:, None] == owner_ids[None, :]  # positive of the same query
    mask = ~clash
    mask[rows, pos_col] = True
    return Candidates(scores, labels, mask)


def in_batch(
    q: torch.Tensor, d: torch.Tensor, batch: dict, similarity: Similarity, global_batch: bool = True
) -> Candidates:
    """Every document of the batch (of the global batch under DDP) is a candidate."""
    if global_batch:
        docs, offset = gather(d)
        doc_ids, _ = gather(batch["doc_id"])
        owner_ids, _ = gather(batch["query_id"])
    else:
        docs, offset, doc_ids, owner_ids = d, 0, batch["doc_id"], batch["query_id"]
    pos_col = offset + torch.arange(q.shape[0], device=q.device)
    return score_shared(q, batch, docs, doc_ids, owner_ids, pos_col, similarity)


class InBatchNegatives:
    """Every other document of the (global) batch is a negative of each query.

    Needs positive pairs (``query``, ``doc``). Under DDP the documents of all processes are
    gathered with their gradient, so more devices give more negatives.
    """

    formats = ("pairs", "presampled")

    def __call__(self, q, d, batch, similarity: Similarity, encode: Encoder) -> Candidates:
        return in_batch(q, d, batch, similarity)

    def check_batch_size(self, batch_size: int) -> None:
        pass


class SampledNegatives:
    """``num_negatives`` documents drawn at random from the rest of the (global) batch.

    The DSSM paper's 4 random unclicked documents. Candidate 0 is the positive; a row with
    fewer valid documents than ``num_negatives`` gets masked filler columns.

    References:
        Huang et al., Learning Deep Structured Semantic Models for Web Search, CIKM 2013.
    """

    formats = ("pairs", "presampled")

    def __init__(self, num_negatives: int = 4):
        if not isinstance(num_negatives, int) or num_negatives < 1:
            raise ConfigError("num_negatives", num_negatives, "must be an integer >= 1")
        self.num_negatives = num_negatives

    def check_batch_size(self, batch_size: int) -> None:
        if self.num_negatives >= batch_size:
            raise ConfigError(
                "num_negatives",
                self.num_negatives,
                f"must be < data.batch_size ({batch_size}): negatives come from the batch",
            )

    def __call__(self, q, d, batch, similarity: Similarity, encode: Encoder) -> Candidates:
        full = in_batch(q, d, batch, similarity)  # (B, N)
        rows = torch.arange(q.shape[0], device=q.device)
        pos_col = full.labels.argmax(1)  # (B,)
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
        return Candidates(scores, labels, mask)  # (B, 1 + k)


class PresampledNegatives:
    """Negatives that the data supplies with each query.

    With click-log rows (``query``, clicked ``doc``, K unclicked ``neg``) each query scores
    its positive and its own K negatives (``share_across_batch: false``) or every document and
    negative of the (global) batch (``true``, the hard negatives of every query become
    everyone's negatives). With labelled rows (``label``, ``query``, ``doc``) each row is one
    candidate with its label: for the pointwise loss.
    """

    formats = ("presampled", "labelled")

    def __init__(self, share_across_batch: bool = False):
        self.share_across_batch = share_across_batch

    def check_batch_size(self, batch_size: int) -> None:
        pass

    def __call__(self, q, d, batch, similarity: Similarity, encode: Encoder) -> Candidates:
        if "label" in batch:
            scores = similarity(q, d[:, None])  # (B, 1)
            labels = batch["label"][:, None].to(scores.dtype)
            return Candidates(scores, labels, torch.ones_like(labels, dtype=torch.bool))
        b, k = batch["neg_id"].shape
        neg = encode(batch["neg"].flatten(0, 1))  # (B*K, D)
        if self.share_across_batch:
            docs, offset = gather(torch.cat([d, neg]))  # (W*(B + B*K), D)
            doc_ids, _ = gather(torch.cat([batch["doc_id"], batch["neg_id"].flatten()]))
            no_owner = torch.full_like(batch["neg_id"].flatten(), NO_QUERY)
            owner_ids, _ = gather(torch.cat([batch["query_id"], no_owner]))
            pos_col = offset + torch.arange(b, device=q.device)
            return score_shared(q, batch, docs, doc_ids, owner_ids, pos_col, similarity)
        cands = torch.cat([d[:, None], neg.view(b, k, -1)], 1)  # (B, 1+K, D)
        scores = similarity(q, cands)  # (B, 1+K)
        labels = torch.zeros_like(scores)
        labels[:, 0] = 1.0
        mask = torch.cat(
            [
                torch.ones_like(batch["doc_id"][:, None], dtype=torch.bool),
                batch["neg_id"] != batch["doc_id"][:, None],
            ],
            1,
        )
        return Candidates(scores, labels, mask)
