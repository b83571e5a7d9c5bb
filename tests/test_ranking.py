"""Full-corpus ranking metrics and TREC run files against hand values, pytrec_eval and
torchmetrics."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import pytrec_eval
import torch
from torchmetrics.retrieval import (
    RetrievalMAP,
    RetrievalMRR,
    RetrievalNormalizedDCG,
    RetrievalRecall,
)

from twotower.errors import ConfigError, DataError
from twotower.retrieval.floattext import float32_text
from twotower.retrieval.ranking import Qrels, max_k, parse_metrics, ranking_metrics
from twotower.retrieval.runfile import (
    read_run,
    read_trec_qrels,
    run_to_indices,
    write_run,
)

# ours -> pytrec_eval's name; recip_rank is scored on the run cut at 10
TREC_NAMES = {
    "recall@1": "recall_1",
    "recall@10": "recall_10",
    "recall@100": "recall_100",
    "ndcg@10": "ndcg_cut_10",
    "map@100": "map_cut_100",
    "precision@10": "P_10",
    "hit@10": "success_10",
    "mrr@10": "recip_rank",
}
TREC_MEASURES = {
    "recall.1,10,100",
    "ndcg_cut.10",
    "map_cut.100",
    "P.10",
    "recip_rank",
    "success.10",
}


def _index(ids) -> dict[str, int]:
    return {x: i for i, x in enumerate(ids)}


def test_hand_computed():
    docs = _index("abcdefgh")
    qrels = {
        "q1": {"b": 2, "d": 1, "a": 0},
        "q2": {"e": 1, "f": 3, "zz": 1},  # zz is not in the corpus: counts, can't be found
        "q3": {"h": 1},
        "q4": {"a": 0},  # nothing to find: not a row
    }
    q = Qrels.from_dict(qrels, {"q3": 0, "q1": 1, "q4": 2, "q2": 3}, docs)
    assert q.query_ids == ["q3", "q1", "q2"] and q.query_rows.tolist() == [0, 1, 3]
    assert q.num_without_relevant == 1
    top = torch.tensor([[0, 1, 2, 3], [0, 1, 2, 3], [5, -1, -1, -1]])  # rows q3, q1, q2
    names = ["recall@1", "recall@2", "recall@10", "mrr@10", "ndcg@10", "map@10"]
    names += ["precision@2", "precision@10", "hit@1", "hit@10"]
    means, per_query = ranking_metrics(top, q, names, per_query=True)
    l2 = math.log2
    # q3: nothing relevant retrieved -> 0 everywhere.
    # q1: b (2) at rank 2, d (1) at rank 4, R = 2.
    #   ndcg = (2/log2 3 + 1/log2 5) / (2/log2 2 + 1/log2 3) = 1.69254 / 2.63093 = 0.64332
    #   map = (1/2 + 2/4) / 2 = 0.5
    # q2: f (3) at rank 1, e and zz missed, R = 3.
    #   ndcg = 3 / (3 + 1/log2 3 + 1/log2 4) = 3 / 4.13093 = 0.72623; map = (1/1) / 3
    expected = {
        "recall@1": [0, 0, 1 / 3],
        "recall@2": [0, 1 / 2, 1 / 3],
        "recall@10": [0, 1, 1 / 3],
        "mrr@10": [0, 1 / 2, 1],
        "ndcg@10": [0, (2 / l2(3) + 1 / l2(5)) / (2 + 1 / l2(3)), 3 / (3 + 1 / l2(3) + 1 / 2)],
        "map@10": [0, (1 / 2 + 2 / 4) / 2, 1 / 3],
        "precision@2": [0, 1 / 2, 1 / 2],
        "precision@10": [0, 2 / 10, 1 / 10],
        "hit@1": [0, 0, 1],
        "hit@10": [0, 1, 1],
    }
    for name, values in expected.items():
        assert per_query[name].tolist() == pytest.approx(values, abs=1e-12), name
        assert means[name] == pytest.approx(sum(values) / 3, abs=1e-12), name
    assert per_query["ndcg@10"][1].item() == pytest.approx(0.6433224, abs=1e-7)


def _random_case(seed: int = 0, num_queries: int = 50, num_docs: int = 200, depth: int = 100):
    """Graded qrels and a run with distinct scores, with the awkward cases planted."""
    rng = random.Random(seed)
    doc_ids = [f"d{i}" for i in range(num_docs)]
    query_ids = [f"q{i}" for i in range(num_queries)]
    qrels = {}
    for qid in query_ids:
        judged = rng.sample(doc_ids, 8)
        n_rel = rng.randint(1, 5)
        qrels[qid] = {d: (rng.randint(1, 3) if j < n_rel else 0) for j, d in enumerate(judged)}
    qrels["q0"] = {d: 0 for d in doc_ids[:3]}  # all judged non-relevant
    qrels["q1"]["missing"] = 2  # relevant but not in the corpus
    g = torch.Generator().manual_seed(seed)
    top = torch.stack([torch.randperm(num_docs, generator=g)[:depth] for _ in query_ids])
    top[2, 40:] = -1  # a short ranking
    top[3, :] = -1  # nothing retrieved
    # q4 retrieves no relevant document
    relevant = [int(d[1:]) for d, grade in qrels["q4"].items() if grade > 0]
    top[4] = torch.tensor([i for i in range(num_docs) if i not in relevant][:depth])
    scores = torch.rand(num_queries, depth, generator=g, dtype=torch.float64)
    scores = scores.sort(1, descending=True).values.float()  # distinct per row (checked below)
    assert all(len(set(row)) == depth for row in scores.tolist())
    return query_ids, doc_ids, qrels, top, scores


def test_equals_pytrec_eval(tmp_path):
    query_ids, doc_ids, qrels, top, scores = _random_case()
    write_run(tmp_path / "run.txt", query_ids, doc_ids, top, scores)
    write_run(tmp_path / "run10.txt", query_ids, doc_ids, top[:, :10], scores[:, :10])
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, TREC_MEASURES)
    trec = evaluator.evaluate(read_run(tmp_path / "run.txt"))
    trec10 = evaluator.evaluate(read_run(tmp_path / "run10.txt"))

    q = Qrels.from_dict(qrels, _index(query_ids), _index(doc_ids))
    assert q.num_without_relevant == 1 and "q0" not in q.query_ids
    means, per_query = ranking_metrics(top[q.query_rows], q, list(TREC_NAMES), per_query=True)
    # pytrec_eval scores q0 (num_rel 0) as 0 everywhere and leaves out q3 (not in the run).
    assert all(v == 0 for v in trec["q0"].values()) and "q3" not in trec
    for name, trec_name in TREC_NAMES.items():
        source = trec10 if name == "mrr@10" else trec
        theirs = torch.tensor(
            [source[qid][trec_name] if qid in source else 0.0 for qid in q.query_ids],
            dtype=torch.float64,
        )
        torch.testing.assert_close(per_query[name], theirs, atol=1e-6, rtol=0, msg=name)
        assert means[name] == pytest.approx(theirs.mean().item(), abs=1e-6)
    row = _index(q.query_ids)
    assert per_query["recall@100"][row["q4"]] == 0 and per_query["recall@100"][row["q1"]] < 1


def test_float32_text_is_the_shortest_text_that_reads_back():
    g = torch.Generator().manual_seed(0)
    scales = torch.tensor([1e-6, 1e-4, 1e-2, 1.0, 30.0, 1e4, 1e8, 1e12]).repeat_interleave(2000)
    values = torch.randn(len(scales), generator=g) * scales
    special = [0.0, -0.0, 0.1, 0.5, 2.0, 1e-4, 9.999999e-5, 1e9, 999999936.0, 3.4e38, 1e-45]
    values = torch.cat([values, torch.tensor(special), torch.tensor([math.inf, -math.inf])])
    matrix = float32_text(values.numpy())
    texts = [bytes(row).replace(b"\0", b"").decode() for row in matrix]
    for text, value in zip(texts, values.numpy(), strict=True):
        assert np.float32(float(text)) == value, text  # reads back exactly
        # no longer than numpy's shortest repr (which may add ".0" to integers: we do not)
        assert len(text) <= len(str(value)), (text, str(value))
    assert texts[-len(special) - 2 : -2][:5] == ["0.0", "-0.0", "0.1", "0.5", "2"]
    assert float32_text(np.array([math.nan], dtype=np.float32)).tobytes().strip(b"\0") == b"nan"


def test_run_file_skips_pads_anywhere_and_writes_any_id(tmp_path):
    top = torch.tensor([[2, -1, 0], [-1, -1, 1]])
    scores = torch.tensor([[3.0, 2.0, 1.5], [0.0, 0.0, -0.25]], dtype=torch.float64)
    write_run(tmp_path / "run.txt", ["qé", "q2"], ["d0", "文書", "d2"], top, scores, tag="t")
    lines = (tmp_path / "run.txt").read_text(encoding="utf-8").splitlines()
    assert lines == ["qé Q0 d2 1 3.0 t", "qé Q0 d0 2 1.5 t", "q2 Q0 文書 1 -0.25 t"]


def test_run_round_trip_keeps_close_scores_apart(tmp_path):
    doc_ids = [f"d{i}" for i in range(6)]
    top = torch.tensor([[3, 1, 4, 0], [5, 2, -1, -1]])
    # 1e-7 apart: "%.6f" would tie them and trec_eval would reorder by docid
    scores = torch.tensor([[0.5, 0.5 - 1e-7, 0.5 - 2e-7, -1e-8], [2.0, 1.0, 0.0, 0.0]])
    write_run(tmp_path / "run.txt", ["qa", "qb"], doc_ids, top, scores, tag="t")
    lines = (tmp_path / "run.txt").read_text().splitlines()
    assert lines[0] == "qa Q0 d3 1 0.5 t" and len(lines) == 6  # pads skipped
    assert list(tmp_path.iterdir()) == [tmp_path / "run.txt"]  # no temp file left
    run = read_run(tmp_path / "run.txt")
    doc_index = _index(doc_ids)
    assert torch.equal(run_to_indices(run, ["qa", "qb"], doc_index, k=4), top)
    padded = run_to_indices(run, ["qa", "qc"], doc_index, k=5)  # qc is not in the run
    assert padded.tolist() == [[3, 1, 4, 0, -1], [-1] * 5]
    with pytest.raises(DataError, match="'d9'"):
        run_to_indices({"qa": {"d9": 1.0}}, ["qa"], doc_index, k=2)


def test_ties_broken_like_trec_eval():
    # equal scores: trec_eval ranks by docid descending in byte order (d9 > d10 > d1, x_ > x)
    doc_ids = ["d1", "d10", "d9", "x", "x_", "A", "a"]
    doc_index = _index(doc_ids)
    qrels = {f"q{i}": {d: 1} for i, d in enumerate(doc_ids)}  # query i finds doc i only
    run = {qid: {d: 1.0 for d in doc_ids} for qid in qrels}
    trec = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(run)
    q = Qrels.from_dict(qrels, _index(qrels), doc_index)
    top = run_to_indices(run, q.query_ids, doc_index, k=len(doc_ids))
    assert [doc_ids[i] for i in top[0]] == sorted(doc_ids, reverse=True)
    ours = ranking_metrics(top, q, ["mrr@10"], per_query=True)[1]["mrr@10"]
    assert ours.tolist() == pytest.approx([trec[qid]["recip_rank"] for qid in q.query_ids])


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ("q1 Q0 d2 2 0.4", "tag"),
        ("q1 Q0 d2", "rank"),
        ("q1 Q0 d2 2 0.4 t extra", "tag"),
        ("q1 Q0 d2 two 0.4 t", "rank"),
        ("q1 Q0 d2 2 high t", "score"),
        ("q1 Q0 d2 2 nan t", "score"),
        ("q1 Q0 d1 2 0.4 t", "docid"),  # repeats line 1's document
    ],
)
def test_read_run_errors(tmp_path, line, field):
    path = tmp_path / "run.txt"
    path.write_text(f"q1 Q0 d1 1 0.5 t\n\n{line}\n")
    with pytest.raises(DataError) as caught:
        read_run(path)
    assert (caught.value.line, caught.value.field) == (3, field)
    assert f"run.txt:3: field '{field}'" in str(caught.value)


def test_read_trec_qrels(tmp_path):
    path = tmp_path / "qrels.txt"
    path.write_text("q1 0 d1 2\nq1 0 d2 0\n\nq2 0 d1 1\n")
    assert read_trec_qrels(path) == {"q1": {"d1": 2, "d2": 0}, "q2": {"d1": 1}}
    path.write_text("q1 0 d1 2\nq1 0 d2 yes\n")
    with pytest.raises(DataError, match="qrels.txt:2: field 'grade'"):
        read_trec_qrels(path)


def test_parse_metrics():
    assert parse_metrics(["recall@1", "success@10", "precision@5"]) == [
        ("recall", 1),
        ("hit", 10),
        ("precision", 5),
    ]
    assert max_k(["ndcg@10", "recall@100", "mrr@10"]) == 100


@pytest.mark.parametrize(
    "names", [["ndcg"], ["ndcg@0"], ["ndcg@-1"], ["f1@10"], ["recall@10", "NDCG@10"], "ndcg@10", []]
)
def test_parse_metrics_errors(names):
    with pytest.raises(ConfigError, match="metrics=.*must be .*kind@k"):
        parse_metrics(names)


def test_qrels_query_not_in_query_list():
    with pytest.raises(DataError, match="'q2'"):
        Qrels.from_dict({"q1": {"a": 1}, "q2": {"a": 1}}, {"q1": 0}, {"a": 0})


def _per_query(metric, preds, target, indexes):
    metric.update(preds, target, indexes)
    return metric.compute().double()


def test_equals_torchmetrics():
    # Where torchmetrics fits: positive scores and every judged document in the scored list.
    g = torch.Generator().manual_seed(0)
    num_queries, num_cands = 30, 8
    scores = torch.rand(num_queries, num_cands, generator=g) + 0.01  # (Q, C), doc = column
    grades = torch.randint(0, 4, (num_queries, num_cands), generator=g)
    grades[torch.arange(num_queries), torch.randint(0, num_cands, (num_queries,), generator=g)] = 2
    qrels = {
        f"q{i}": {f"d{j}": int(grade) for j, grade in enumerate(row)}
        for i, row in enumerate(grades.tolist())
    }
    q = Qrels.from_dict(qrels, _index(qrels), _index(f"d{j}" for j in range(num_cands)))
    top = scores.argsort(1, descending=True)  # (Q, C)
    names = ["ndcg@5", "mrr@5", "recall@3", "map@8"]
    ours = ranking_metrics(top, q, names, per_query=True)[1]

    flat = dict(
        preds=scores.flatten(),
        indexes=torch.arange(num_queries).repeat_interleave(num_cands),
    )
    each = {"aggregation": lambda values, dim=None: values}  # per-query values
    binary = (grades > 0).flatten()
    theirs = {
        "ndcg@5": _per_query(
            RetrievalNormalizedDCG(top_k=5, **each), target=grades.flatten(), **flat
        ),
        "mrr@5": _per_query(RetrievalMRR(top_k=5, **each), target=binary, **flat),
        "recall@3": _per_query(RetrievalRecall(top_k=3, **each), target=binary, **flat),
        # torchmetrics' AP@k divides by the relevant documents within the top k, trec_eval's
        # map_cut_k by all of them: equal only when k covers the whole list, as here
        "map@8": _per_query(RetrievalMAP(top_k=8, **each), target=binary, **flat),
    }
    for name in names:
        torch.testing.assert_close(ours[name], theirs[name], atol=1e-6, rtol=0, msg=name)
