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

Padding is per batch: ``Wq``, ``Wd`` and ``T`` are the batch's longest (documents and their
negatives share one ``(Wd, T)``).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset

from twotower.data.components.tokens import TokenStore


def collate(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """DataLoader ``collate_fn`` for :class:`TextPairDataset`: the batch is already built."""
    return batch


class TextPairDataset(Dataset):
    """Rows of (query, document[, K negatives][, label]) over one shared document corpus.

    Queries and documents are stored once; rows reference them by index, so labelled rows
    that repeat a query, and negatives, cost no copies. :meth:`__getitems__` builds a whole
    batch with tensor indexing; use it with ``collate_fn=collate``::

        DataLoader(dataset, batch_size=128, shuffle=True, collate_fn=collate)

    Args:
        queries: the queries' token ids (a :class:`TokenStore` or a padded ``(Q, Wq, T)``).
        docs: the corpus' token ids (``doc_id`` indexes it), as for ``queries``.
        doc_id: ``(N,)`` each row's document.
        query_index: ``(N,)`` each row's query in ``queries``; default ``arange(Q)``.
        query_id: ``(Q,)`` id of each query; default ``arange(Q)``.
        neg_id: ``(N, K)`` presampled negative documents per row, or ``None``.
        label: ``(N,)`` 1.0 / 0.0 per row (labelled format), or ``None``.
    """

    def __init__(
        self,
        queries: TokenStore | Tensor,
        docs: TokenStore | Tensor,
        doc_id: Tensor,
        query_index: Tensor | None = None,
        query_id: Tensor | None = None,
        neg_id: Tensor | None = None,
        label: Tensor | None = None,
    ):
        self.queries = (
            queries if isinstance(queries, TokenStore) else TokenStore.from_padded(queries)
        )
        self.docs = docs if isinstance(docs, TokenStore) else TokenStore.from_padded(docs)
        n_queries = len(self.queries)
        self.query_index = torch.arange(n_queries) if query_index is None else query_index
        self.query_id = torch.arange(n_queries) if query_id is None else query_id
        self.doc_id, self.neg_id = doc_id, neg_id
        self.label = None if label is None else label.float()
        n = len(self.doc_id)
        if len(self.query_index) != n or (neg_id is not None and len(neg_id) != n):
            raise ValueError(f"row tensors disagree on the number of rows ({n})")
        if label is not None and len(label) != n:
            raise ValueError(f"label has {len(label)} rows, expected {n}")

    def __len__(self) -> int:
        return len(self.doc_id)

    def __getitems__(self, indices: list[int]) -> dict[str, Tensor]:
        """The batch of rows ``indices``, padding trimmed to its longest text and word."""
        rows = torch.as_tensor(indices, dtype=torch.long)  # (B,)
        qi, di = self.query_index[rows], self.doc_id[rows]  # (B,), (B,)
        neg_id = None if self.neg_id is None else self.neg_id[rows]  # (B, K)
        docs = di if neg_id is None else torch.cat([di, neg_id.flatten()])  # every doc used
        doc_tokens = self.docs.batch(docs)  # (B + B*K, Wd, T)
        batch = {
            "query": self.queries.batch(qi),  # (B, Wq, T')
            "query_id": self.query_id[qi],
            "index": rows,
            "doc": doc_tokens[: len(di)],  # (B, Wd, T)
            "doc_id": di,
        }
        if neg_id is not None:
            batch["neg"] = doc_tokens[len(di) :].view(*neg_id.shape, *doc_tokens.shape[1:])
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


class TextDataset(Dataset):
    """Texts alone, for encoding a corpus or a query set: batches ``{key: (B, W, T), "index"}``.

    Args:
        tokens: the texts' token ids.
        key: ``"query"`` or ``"doc"``: which tower the batch is for.
        by_length: serve the texts shortest first (``index`` keeps their rows), so a batch
            pads to similar lengths: a transformer's cost grows with the padded length.
    """

    def __init__(self, tokens: TokenStore, key: str, by_length: bool = False):
        self.tokens, self.key = tokens, key
        self.order = None
        if by_length and hasattr(tokens, "text_len"):
            self.order = torch.argsort(tokens.text_len.long(), stable=True)

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitems__(self, indices: list[int]) -> dict[str, Tensor]:
        rows = torch.as_tensor(indices, dtype=torch.long)
        if self.order is not None:
            rows = self.order[rows]
        return {self.key: self.tokens.batch(rows), "index": rows}
