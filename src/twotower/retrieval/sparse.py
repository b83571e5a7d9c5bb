"""Sparse search: the top-k of a sparse query-document product, and BM25 over raw texts.

BM25 (``bm25s``) ranks for the baselines of ``make bench-gcide`` and mines hard negatives
(``negatives.mining.source=bm25``, ``twotower.mine source=bm25``). bm25s and scipy are
imported when used: ``pip install 'twotower[bm25]'``.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from twotower.errors import check

if TYPE_CHECKING:
    from scipy.sparse import csr_array, sparray

log = logging.getLogger("twotower")

# Dense score blocks of at most this many entries (float32: 64 MB) bound search memory.
BLOCK_ENTRIES = 1 << 24


def require(module: str, install: str = "'twotower[bm25]'") -> ModuleType:
    """Import an optional library, or say in one line which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"this needs {module!r}: pip install {install}") from e


def check_count(key: str, value: int) -> None:
    check(isinstance(value, int) and value >= 1, key, value, "must be an int >= 1")


def empty(num_queries: int, k: int) -> tuple[Tensor, Tensor]:
    return torch.empty(num_queries, k), torch.empty(num_queries, k, dtype=torch.long)


def top_candidates(x: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(rows, cols, vals)`` of each row's k largest entries of a dense ``(B, D)`` block, plus
    every entry tied with the k-th where the cut would split a tie (so ties go by index)."""
    n_rows, n_cols = x.shape
    top = x.topk(min(k + 1, n_cols), dim=1)  # one extra column shows whether the cut splits a tie
    rows = torch.arange(n_rows).repeat_interleave(k)
    cols, vals = top.indices[:, :k].reshape(-1), top.values[:, :k].reshape(-1)
    if k == n_cols:
        return rows, cols, vals
    kth = top.values[:, k - 1]  # (B,)
    tied = torch.nonzero((top.values[:, k] == kth) & (kth > 0)).squeeze(1)
    if len(tied) == 0:
        return rows, cols, vals
    keep = ~torch.isin(rows, tied)
    tied_rows, tied_cols = (x[tied] >= kth[tied, None]).nonzero(as_tuple=True)
    tied_rows = tied[tied_rows]
    return (
        torch.cat([rows[keep], tied_rows]),
        torch.cat([cols[keep], tied_cols]),
        torch.cat([vals[keep], x[tied_rows, tied_cols]]),
    )


def select_top(
    rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, n_rows: int, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k best positive candidates as ``(n_rows, k)`` scores and indices, sorted by
    score then index; missing slots hold -inf and -1."""
    order = np.lexsort((cols, -vals, rows))
    rows, cols, vals = rows[order], cols[order], vals[order]
    rank = np.arange(len(rows)) - np.searchsorted(rows, rows)  # position within its row
    keep = (rank < k) & (vals > 0)
    scores = np.full((n_rows, k), -np.inf, dtype=np.float32)
    indices = np.full((n_rows, k), -1, dtype=np.int64)
    scores[rows[keep], rank[keep]] = vals[keep]
    indices[rows[keep], rank[keep]] = cols[keep]
    return scores, indices


def sparse_search(
    queries: csr_array, docs: sparray, k: int, *, dense: bool
) -> tuple[Tensor, Tensor]:
    """Top-k of ``queries @ docs.T`` (``(Q, V)`` by ``(D, V)``), a block of queries at a time.

    ``dense`` suits queries that share a term with most documents (trigrams): each block of
    scores is a dense matrix cut with ``topk``. Otherwise (words) the sparse product's entries
    are the candidates.
    """
    num_queries, num_docs = queries.shape[0], docs.shape[0]
    docs = docs.tocsr() if dense else docs.T.tocsr()  # (D, V) or (V, D)
    step = max(1, BLOCK_ENTRIES // num_docs)
    scores, indices = [np.empty((0, k), np.float32)], [np.empty((0, k), np.int64)]
    for start in range(0, num_queries, step):
        block = queries[start : start + step]
        if dense:
            x = torch.from_numpy(docs @ block.toarray().T).T.contiguous()  # (B, D)
            rows, cols, vals = (t.numpy() for t in top_candidates(x, k))
        else:
            product = (block @ docs).tocsr()  # (B, D), few entries
            rows = np.repeat(np.arange(block.shape[0]), np.diff(product.indptr))
            cols, vals = product.indices, product.data
        block_scores, block_indices = select_top(rows, cols, vals, block.shape[0], k)
        scores.append(block_scores)
        indices.append(block_indices)
    return torch.from_numpy(np.concatenate(scores)), torch.from_numpy(np.concatenate(indices))


class BM25:
    """A BM25 index of ``corpus`` with bm25s' defaults: Lucene's variant (``method="lucene"``),
    lowercased ``\\w\\w+`` tokens without English stopwords, optionally Snowball-stemmed
    (PyStemmer).

    bm25s builds the index (a per-term, per-document score matrix); a search is then one
    sparse matmul with the queries' term counts, which equals ``BM25.get_scores`` (a repeated
    query term counts each time) but ranks all queries at once with deterministic ties.

    References:
        Lù, "BM25S: Orders of magnitude faster lexical search via eager sparse scoring", 2024.
    """

    def __init__(
        self, corpus: Sequence[str], *, k1: float = 1.5, b: float = 0.75, stemmer: bool = False
    ):
        bm25s = require("bm25s")
        self.sparse = require("scipy.sparse")
        self.stem = (
            require("Stemmer", "PyStemmer").Stemmer("english").stemWords if stemmer else None
        )
        self.num_docs = len(corpus)
        start = time.perf_counter()
        tokens = bm25s.tokenize(
            list(corpus), stopwords="en", stemmer=self.stem, show_progress=False
        )
        index = bm25s.BM25(k1=k1, b=b, method="lucene")
        index.index(tokens, show_progress=False)
        s = index.scores
        self.docs = self.sparse.csc_array(  # (D, V) bm25s' per-term, per-document scores
            (s["data"], s["indices"], s["indptr"]), shape=(s["num_docs"], len(s["indptr"]) - 1)
        )
        # "" stands for an empty text in bm25s; as a query term it would match empty documents.
        self.vocab = {t: i for t, i in index.vocab_dict.items() if t}
        log.info("bm25: indexed %d docs in %.1fs", len(corpus), time.perf_counter() - start)

    def counts(self, queries: Sequence[str]) -> csr_array:
        """``(Q, V)`` the queries' term counts over the index's vocabulary."""
        import bm25s

        tokens = bm25s.tokenize(
            list(queries), stopwords="en", stemmer=self.stem, return_ids=False, show_progress=False
        )
        ids = [[self.vocab[t] for t in q if t in self.vocab] for q in tokens]
        rows = np.repeat(np.arange(len(ids)), [len(q) for q in ids])
        cols = np.fromiter((t for q in ids for t in q), dtype=np.int64, count=len(rows))
        return self.sparse.csr_array(  # duplicates sum: a repeated query term counts twice
            (np.ones(len(rows), np.float32), (rows, cols)), shape=(len(ids), self.docs.shape[1])
        )

    def search(self, queries: Sequence[str], k: int) -> tuple[Tensor, Tensor]:
        """``(Q, k')`` scores and document indices, ``k' = min(k, len(corpus))``; documents
        sharing no term with a query are not ranked (index -1, score -inf)."""
        check_count("k", k)
        k = min(k, self.num_docs)
        if k == 0:
            return empty(len(queries), k)
        start = time.perf_counter()
        result = sparse_search(self.counts(queries), self.docs, k, dense=False)
        log.info("bm25: searched %d queries in %.1fs", len(queries), time.perf_counter() - start)
        return result

    def score_pairs(self, queries: Sequence[str], rows: Tensor, docs: Tensor) -> Tensor:
        """``(P,)`` BM25 scores of the pairs (``queries[rows[i]]``, document ``docs[i]``)."""
        counts = self.counts(queries)[rows.numpy()]  # (P, V)
        by_doc = self.docs.tocsr()[docs.numpy()]  # (P, V)
        return torch.from_numpy(
            np.asarray(counts.multiply(by_doc).sum(axis=1)).ravel().astype(np.float32)
        )


def bm25_search(
    corpus: Sequence[str],
    queries: Sequence[str],
    k: int,
    *,
    k1: float = 1.5,
    b: float = 0.75,
    stemmer: bool = False,
) -> tuple[Tensor, Tensor]:
    """Rank ``corpus`` for each query with :class:`BM25`: ``(Q, k')`` scores and indices."""
    check_count("k", k)
    if min(k, len(corpus)) == 0:
        return empty(len(queries), 0)
    return BM25(corpus, k1=k1, b=b, stemmer=stemmer).search(queries, k)
