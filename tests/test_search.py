"""Exact search equals brute force; every index finds the exact top-k and survives save/load."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra.utils
import pytest
import torch
from omegaconf import OmegaConf

from twotower.errors import ConfigError
from twotower.retrieval.exact import exact_search, exact_search_bytes
from twotower.retrieval.index import (
    ExactIndex,
    FlatIndex,
    HNSWIndex,
    IVFIndex,
    load_index,
    recall_of_exact,
)

INDEX_DIR = Path(__file__).parents[1] / "conf" / "index"
KINDS = ("exact", "flat", "hnsw", "ivf")


def vectors(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    "num_queries, num_docs, k, query_block, doc_block",
    [
        (5, 200, 10, 64, 64),  # one query block (Q < query_block)
        (37, 1000, 20, 8, 100),  # blocks do not divide Q or D; doc_block not a multiple of 16
        (9, 30, 50, 4, 16),  # k > D: all D returned
        (13, 500, 1, 5, 48),  # k = 1
        (20, 700, 100, 7, 16),  # doc_block < k: raised to k
        (3, 1, 5, 2, 2),  # a single document
    ],
)
def test_exact_search_equals_brute_force(num_queries, num_docs, k, query_block, doc_block):
    q, d = vectors(num_queries, 16, 0), vectors(num_docs, 16, 1)
    scores, indices = exact_search(q, d, k, query_block=query_block, doc_block=doc_block)
    want_s = torch.topk(q @ d.T, min(k, num_docs), dim=1).values
    assert scores.shape == indices.shape == (num_queries, min(k, num_docs))
    assert indices.dtype == torch.long
    torch.testing.assert_close(scores, want_s, atol=1e-5, rtol=0)
    # Blocked and whole matmuls round differently (by CPU), so two near-tied documents may
    # swap: each returned document must be distinct and score what its rank scores.
    torch.testing.assert_close((q @ d.T).gather(1, indices), want_s, atol=1e-5, rtol=0)
    assert all(len(set(row)) == len(row) for row in indices.tolist())


def test_ties_rank_the_lower_document_index_first():
    # Small integers: every score is exact, so copies tie in any matmul on any CPU.
    g = torch.Generator().manual_seed(2)
    d = torch.cat([torch.randint(-3, 4, (10, 4), generator=g).float()] * 30)  # i = i + 10 ...
    q = torch.randint(-3, 4, (6, 4), generator=g).float()
    _, indices = exact_search(q, d, 25, query_block=4, doc_block=32)
    full = (q @ d.T).tolist()
    for row, got in zip(full, indices.tolist(), strict=True):
        assert got == sorted(range(len(row)), key=lambda j: (-row[j], j))[:25]
    _, indices = exact_search(torch.ones(2, 3), torch.ones(200, 3), 50, doc_block=32)
    assert indices.tolist() == [list(range(50))] * 2


def test_no_queries_and_the_memory_bound():
    scores, indices = exact_search(torch.empty(0, 4), vectors(10, 4, 0), 3)
    assert scores.shape == indices.shape == (0, 3)
    q_block = 2048 * 16384 * 4  # the score block dominates the default bound
    assert q_block < exact_search_bytes(10_000, 1_000_000, 128, 100) < 1.5 * q_block


@pytest.mark.parametrize(
    "queries, docs, k, message",
    [
        (torch.randn(2, 4), torch.randn(5, 4), 0, "k=0: must be an int >= 1"),
        (torch.randn(4), torch.randn(5, 4), 1, "queries must be a 2-D"),
        (torch.randn(2, 4), torch.randn(5, 3), 1, "queries have d=4 but the documents have d=3"),
        (torch.ones(2, 4, dtype=torch.long), torch.randn(5, 4), 1, "queries must be a float"),
        (torch.randn(2, 4), torch.randn(5, 4).double(), 1, "same dtype"),
        (torch.randn(2, 4), torch.randn(0, 4), 1, "docs is empty"),
        (torch.randn(2, 4), [[1.0] * 4], 1, "docs must be a 2-D"),
    ],
)
def test_exact_search_rejects_bad_arguments(queries, docs, k, message):
    with pytest.raises(ValueError, match=message):
        exact_search(queries, docs, k)
    with pytest.raises(ValueError, match="query_block=0"):
        exact_search(torch.randn(2, 4), torch.randn(5, 4), 1, query_block=0)


def well_separated(num_docs: int = 300, dim: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit documents and queries near some of them: the exact top-k is clear-cut."""
    docs = torch.nn.functional.normalize(vectors(num_docs, dim, 4), dim=1)
    queries = docs[:40] + 0.05 * vectors(40, dim, 5)
    return queries, docs


def make(kind: str):
    # Generous settings: on 300 documents HNSW and IVF must match exact search.
    return {
        "exact": lambda: ExactIndex(query_block=16, doc_block=64),
        "flat": FlatIndex,
        "hnsw": lambda: HNSWIndex(m=16, ef_construction=200, ef_search=300),
        "ivf": lambda: IVFIndex(nlist=4, nprobe=4),
    }[kind]()


@pytest.mark.parametrize("kind", KINDS)
def test_every_index_finds_the_exact_top_k(kind):
    queries, docs = well_separated()
    want_s, want_i = exact_search(queries, docs, 10)
    index = make(kind).build(docs)
    scores, indices = index.search(queries, 10)
    assert index.kind == kind and indices.dtype == torch.long
    assert recall_of_exact(indices, want_i, 10) == 1.0
    torch.testing.assert_close(scores, want_s, atol=1e-5, rtol=0)
    # in rank order: each returned document scores what exact search's of that rank does
    torch.testing.assert_close((queries @ docs.T).gather(1, indices), want_s, atol=1e-5, rtol=0)
    scores, indices = index.search(queries[:2], 1000)  # k > D: k' = D
    assert indices.shape == (2, 300)


@pytest.mark.parametrize("kind", KINDS)
def test_save_and_load_round_trip(kind, tmp_path):
    queries, docs = well_separated()
    index = make(kind).build(docs)
    index.save(tmp_path / "index")
    loaded = load_index(tmp_path / "index")
    assert type(loaded) is type(index) and loaded.params() == index.params()
    assert (loaded.num_docs, loaded.dim) == (300, 32)
    # bit-equal: the same index searched with the same queries on the same machine
    for got, want in zip(loaded.search(queries, 10), index.search(queries, 10), strict=True):
        assert torch.equal(got, want)


def test_ivf_lowers_nlist_for_a_small_corpus(caplog):
    with caplog.at_level(logging.INFO, logger="twotower.retrieval.index"):
        index = IVFIndex(nlist=1024, nprobe=2000).build(vectors(100, 8, 6))
    assert index.index.nlist == 2 and index.index.nprobe == 2
    assert "nlist 1024 lowered to 2 for 100 documents" in caplog.text


def test_index_errors(tmp_path):
    with pytest.raises(ConfigError, match="nlist=0: must be > 0"):
        IVFIndex(nlist=0)
    with pytest.raises(ConfigError, match="m=2.5: must be an int"):
        HNSWIndex(m=2.5)
    with pytest.raises(ValueError, match="embeddings is empty"):
        ExactIndex().build(torch.empty(0, 4))
    with pytest.raises(RuntimeError, match="call build"):
        ExactIndex().search(torch.randn(1, 4), 1)
    with pytest.raises(ValueError, match="queries have d=3"):
        ExactIndex().build(torch.randn(5, 4)).search(torch.randn(1, 3), 1)
    with pytest.raises(FileNotFoundError, match="no index.json"):
        load_index(tmp_path)


def test_an_ann_search_that_finds_fewer_than_k_pads_with_minus_one_and_minus_inf():
    # Two far-apart clusters, two IVF lists: probing one list finds only its 40 documents.
    offset = torch.zeros(8)
    offset[0] = 10.0
    docs = torch.cat([offset + vectors(40, 8, 7), -offset + vectors(40, 8, 8)])
    index = IVFIndex(nlist=2, nprobe=1).build(docs)
    scores, indices = index.search(offset[None], 60)
    assert indices.shape == (1, 60)
    assert (indices[0, :40] >= 0).all() and (indices[0, 40:] == -1).all()
    assert torch.isfinite(scores[0, :40]).all() and (scores[0, 40:] == float("-inf")).all()


def test_recall_of_exact():
    exact = torch.tensor([[0, 1, 2], [3, 4, 5]])
    assert recall_of_exact(exact, exact, 3) == 1.0
    approx = torch.tensor([[2, 9, -1], [5, 4, 3]])
    assert recall_of_exact(approx, exact, 3) == pytest.approx((1 / 3 + 1) / 2)
    assert recall_of_exact(approx, exact, 1) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="same Q"):
        recall_of_exact(approx[:1], exact, 3)


@pytest.mark.parametrize("kind", KINDS)
def test_yaml_instantiates(kind):
    index = hydra.utils.instantiate(OmegaConf.load(INDEX_DIR / f"{kind}.yaml"))
    assert index.kind == kind


def test_speed_benchmark_measures_both_methods_in_process():
    from bench import search_speed

    args = search_speed.parse_args(["--out", "unused", "--docs", "300", "--queries", "40"])
    args.threads, args.repeats = 1, 1
    exact, flat = (search_speed.measure(m, 300, args) for m in search_speed.METHODS)
    assert recall_of_exact(flat["indices"], exact["indices"], 100) == 1.0
    assert exact["seconds"] > 0 and exact["peak_mib"] >= 0 and len(flat["times"]) == 1
    row = {"docs": 300, "queries": 40, "ratio": 1.0, "recall_faiss_vs_exact": 1.0}
    row |= {f"{m}_{x}": 1.0 for m in ("exact", "faiss") for x in ("s", "qps", "peak_mib")}
    row |= {"exact_bound_mib": 1.0, "max_score_diff": 0.0}
    report = {"command": "c", "cpu_count": 2, "cpu": "x", "threads": 1, "torch": "t"}
    report |= {"faiss": "f", "python": "p", "dim": 8, "k": 100, "repeats": 1, "rows": [row]}
    report |= {"loadavg_start": (0.0, 0.0, 0.0), "loadavg_end": (0.0, 0.0, 0.0)}
    assert "| 300 | 40 |" in search_speed.markdown(report)


def test_large_corpus_benchmark_searches_a_memory_mapped_file(tmp_path):
    from bench import search_speed

    args = search_speed.parse_args(
        ["--out", "unused", "--large", "6000", "--large-queries", "30", "--dim", "16",
         "--large-dir", str(tmp_path), "--ivf", "IVF8,PQ4", "--ivf-train", "3000",
         "--nprobe", "8", "--k", "10", "--threads", "1"]
    )  # fmt: skip
    again = search_speed.large(args)
    path = tmp_path / "docs-6000x16-seed0.npy"
    written = path.stat().st_mtime_ns
    mapped = search_speed.memmapped_corpus(path, 6000, 16, 0)  # reused, not written again
    assert again["docs"] == 6000 and path.stat().st_mtime_ns == written
    queries = search_speed.unit_vectors(30, 16, 1)
    in_memory = search_speed.exact_search(queries, mapped.clone(), 10)
    assert torch.equal(search_speed.exact_search(queries, mapped, 10)[1], in_memory[1])
    assert 0.0 <= again["ivf_recall_of_exact"] <= 1.0 and again["ivf_recall_of_exact"] > 0.3
    assert again["exact_s"] > 0 and again["exact_bound_mib"] > 0
    report = {"command": "c", "cpu_count": 2, "cpu": "x", "threads": 1, "torch": "t"}
    report |= {"faiss": "f", "python": "p", "dim": 16, "k": 10, "repeats": 1, "rows": []}
    report |= {"loadavg_start": (0.0,) * 3, "loadavg_end": (0.0,) * 3, "large": again}
    assert "Past memory: 6,000 documents x 16" in search_speed.markdown(report)
