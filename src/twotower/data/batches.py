"""The dataset every datamodule hands its DataLoader: prepared tensors, whole batches by indexing.

A batch is a dict of tensors (``T`` is shared by every text field of a batch)::

    query     (B, Wq, T) long   token ids (see tokenizers.py for the layout)
    query_id  (B,) long         identical query texts share an id
    index     (B,) long         row index in the dataset (the retrieval metrics' query index)
    doc       (B, Wd, T) long   the positive document, or the paired one for labelled rows
    doc_id    (B,) long         the document's index in the corpus
    neg       (B, K, Wd, T) long   presampled negatives (only if the dataset has them)
    neg_id    (B, K) long
    label     (B,) float        1.0 clicked / 0.0 not (labelled rows only)

Padding is trimmed per batch: ``Wq``, ``Wd`` and ``T`` are the batch's longest.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset


def collate(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """DataLoader ``collate_fn`` for :class:`TextPairDataset`: the batch is already built."""
    return batch


def _lengths(tokens: Tensor) -> tuple[Tensor, Tensor]:
    """Words per text and the longest word's id count per text, for ``(N, W, T)`` ids."""
    present = tokens != 0  # (N, W, T); ids are left-aligned, so counts are lengths
    return present.any(-1).sum(-1), present.sum(-1).amax(-1)  # (N,), (N,)


def _pad_tokens(tokens: Tensor, t: int) -> Tensor:
    """Zero-pad ``(N, W, T)`` ids to ``T = t`` (no copy when already there)."""
    return tokens if tokens.shape[-1] == t else F.pad(tokens, (0, t - tokens.shape[-1]))


class TextPairDataset(Dataset):
    """Rows of (query, document[, K negatives][, label]) over one shared document corpus.

    Queries and documents are stored once; rows reference them by index, so labelled rows
    that repeat a query, and negatives, cost no copies. :meth:`__getitems__` builds a whole
    batch with tensor indexing; use it with ``collate_fn=collate``::

        DataLoader(dataset, batch_size=128, shuffle=True, collate_fn=collate)

    Args:
        queries: ``(Q, Wq, T)`` token ids of the queries.
        docs: ``(D, Wd, T')`` token ids of the corpus (``doc_id`` indexes it).
        doc_id: ``(N,)`` each row's document.
        query_index: ``(N,)`` each row's query in ``queries``; default ``arange(Q)``.
        query_id: ``(Q,)`` id of each query; default ``arange(Q)``.
        neg_id: ``(N, K)`` presampled negative documents per row, or ``None``.
        label: ``(N,)`` 1.0 / 0.0 per row (labelled format), or ``None``.
    """

    def __init__(
        self,
        queries: Tensor,
        docs: Tensor,
        doc_id: Tensor,
        query_index: Tensor | None = None,
        query_id: Tensor | None = None,
        neg_id: Tensor | None = None,
        label: Tensor | None = None,
    ):
        n_queries = queries.shape[0]
        self.query_index = torch.arange(n_queries) if query_index is None else query_index
        self.query_id = torch.arange(n_queries) if query_id is None else query_id
        self.doc_id, self.neg_id = doc_id, neg_id
        self.label = None if label is None else label.float()
        n = len(self.doc_id)
        if len(self.query_index) != n or (neg_id is not None and len(neg_id) != n):
            raise ValueError(f"row tensors disagree on the number of rows ({n})")
        if label is not None and len(label) != n:
            raise ValueError(f"label has {len(label)} rows, expected {n}")
        # One T for both sides, so a tower may embed query and document ids together.
        t = max(queries.shape[-1], docs.shape[-1])
        self.queries, self.docs = _pad_tokens(queries, t), _pad_tokens(docs, t)
        self.query_words, self.query_tokens = _lengths(self.queries)  # (Q,), (Q,)
        self.doc_words, self.doc_tokens = _lengths(self.docs)  # (D,), (D,)

    def __len__(self) -> int:
        return len(self.doc_id)

    def __getitems__(self, indices: list[int]) -> dict[str, Tensor]:
        """The batch of rows ``indices``, padding trimmed to its longest text and word."""
        rows = torch.as_tensor(indices, dtype=torch.long)  # (B,)
        qi, di = self.query_index[rows], self.doc_id[rows]  # (B,), (B,)
        neg_id = None if self.neg_id is None else self.neg_id[rows]  # (B, K)
        docs = di if neg_id is None else torch.cat([di, neg_id.flatten()])  # every doc used
        wq = max(int(self.query_words[qi].max()), 1)
        wd = max(int(self.doc_words[docs].max()), 1)
        t = max(int(self.query_tokens[qi].max()), int(self.doc_tokens[docs].max()), 1)
        batch = {
            "query": self.queries[qi, :wq, :t],  # (B, Wq, T)
            "query_id": self.query_id[qi],
            "index": rows,
            "doc": self.docs[di, :wd, :t],  # (B, Wd, T)
            "doc_id": di,
        }
        if neg_id is not None:
            batch["neg"] = self.docs[neg_id, :wd, :t]  # (B, K, Wd, T)
            batch["neg_id"] = neg_id
        if self.label is not None:
            batch["label"] = self.label[rows]
        return batch

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        """One row without the batch dimension (for inspection; loaders use __getitems__)."""
        return {k: v[0] for k, v in self.__getitems__([index]).items()}


def labelled_rows(pos_id: Tensor, neg_id: Tensor, negatives: int) -> tuple[Tensor, Tensor, Tensor]:
    """Click-log rows from presampled negatives: per query its positive, then ``negatives``.

    Args:
        pos_id: ``(Q,)`` each query's positive document.
        neg_id: ``(Q, K)`` its presampled negatives; the first ``negatives`` are used.
        negatives: negative rows per positive row (pointwise data is often 1:2 or 1:3).

    Returns:
        ``(query_index, doc_id, label)``, each ``(Q * (1 + negatives),)``.
    """
    n_queries = len(pos_id)
    doc_id = torch.cat([pos_id[:, None], neg_id[:, :negatives]], dim=1)  # (Q, 1 + n)
    label = torch.zeros_like(doc_id, dtype=torch.float)
    label[:, 0] = 1.0
    query_index = torch.arange(n_queries).repeat_interleave(doc_id.shape[1])
    return query_index, doc_id.flatten(), label.flatten()
