"""Presampled negatives: the ones each row of the data brings (click logs, labelled rows)."""

from __future__ import annotations

import torch
from torch import Tensor

from twotower.distributed import gather
from twotower.negatives.base import NO_QUERY, Candidates, Encoder, History, Negatives, score_pool
from twotower.similarity import Similarity


class PresampledNegatives(Negatives):
    """Negatives that the data supplies with each query.

    With click-log rows (``query``, clicked ``doc``, K unclicked ``neg``) each query scores
    its positive and its own K negatives (``share_across_batch: false``) or every document and
    negative of the (global) batch (``true``, the hard negatives of every query become
    everyone's negatives). With labelled rows (``label``, ``query``, ``doc``) each row is one
    candidate with its label: for the pointwise loss.

    A candidate that is the row's positive or any training positive of the row's query (a
    query with several relevant documents; a user's other items) is masked, in every column
    where it appears, and so is a labelled negative row of such a document: a presampled
    negative can be another positive. This needs :meth:`bind` with the training data.
    """

    formats = ("presampled", "labelled")

    def __init__(self, share_across_batch: bool = False):
        super().__init__()
        self.share_across_batch = share_across_batch
        self.history = History()

    def forward(
        self, q: Tensor, d: Tensor, batch: dict, similarity: Similarity, encode: Encoder
    ) -> Candidates:
        if "label" in batch:
            scores = similarity(q, d[:, None])  # (B, 1)
            labels = batch["label"][:, None].to(scores.dtype)
            # A negative row can pair the query with another of its relevant documents.
            known = self.history(batch["query_id"], batch["doc_id"][:, None])  # (B, 1)
            return Candidates(scores, labels, (labels > 0) | ~known, batch["doc_id"][:, None])
        b, k = batch["neg_id"].shape
        neg = encode(batch["neg"].flatten(0, 1))  # (B*K, D)
        if self.share_across_batch:
            docs, offset = gather(torch.cat([d, neg]))  # (W*(B + B*K), D)
            doc_ids, _ = gather(torch.cat([batch["doc_id"], batch["neg_id"].flatten()]))
            no_owner = torch.full_like(batch["neg_id"].flatten(), NO_QUERY)
            owner_ids, _ = gather(torch.cat([batch["query_id"], no_owner]))
            pos_col = offset + torch.arange(b, device=q.device)
            return score_pool(
                q, batch, docs, doc_ids, owner_ids, pos_col, similarity, history=self.history
            )
        cands = torch.cat([d[:, None], neg.view(b, k, -1)], 1)  # (B, 1+K, D)
        scores = similarity(q, cands)  # (B, 1+K)
        labels = torch.zeros_like(scores)
        labels[:, 0] = 1.0
        valid = batch["neg_id"] != batch["doc_id"][:, None]  # (B, K)
        valid &= ~self.history(batch["query_id"], batch["neg_id"])
        mask = torch.cat([torch.ones_like(valid[:, :1]), valid], 1)  # (B, 1+K)
        ids = torch.cat([batch["doc_id"][:, None], batch["neg_id"]], 1)  # (B, 1+K)
        return Candidates(scores, labels, mask, ids)
