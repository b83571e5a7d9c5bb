"""Dense per-row ranking metrics against hand-computed values and torchmetrics' retrieval ones."""

import pytest
import torch
from torchmetrics.retrieval import RetrievalMRR, RetrievalRecall

from twotower.batch_metrics import Accuracy, RankingMetrics, per_query
from twotower.data.base import Catalogue
from twotower.negatives import Candidates, InBatchNegatives, PresampledNegatives
from twotower.negatives.base import score_in_batch
from twotower.similarity import Similarity


def test_hand_computed():
    scores = torch.tensor([[0.9, 0.5, 0.1, 0.7], [0.2, 0.8, 0.6, 0.4]])
    labels = torch.tensor([[0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 1.0, 0.0]])
    mask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    m = per_query(Candidates(scores, labels, mask), recall_at=[1, 2], mrr_at=10)
    # row 0: valid order 0.9 (neg), 0.5 (pos) -> rank 2; row 1: 0.8 (neg), 0.6 (pos), 0.4, 0.2 (pos)
    assert m["recall@1"].tolist() == [0.0, 0.0]
    assert m["recall@2"].tolist() == [1.0, 0.5]
    assert m["mrr@10"].tolist() == [0.5, 0.5]


@pytest.mark.parametrize("seed", range(3))
def test_equals_torchmetrics_retrieval(seed):
    g = torch.Generator().manual_seed(seed)
    b, c = 40, 12
    # torchmetrics 1.9 counts a candidate scoring <= 0 as not retrieved, so compare on
    # positive scores; the shift test below shows that ours depends only on the ranking.
    scores = torch.rand(b, c, generator=g) + 0.01
    labels = (torch.rand(b, c, generator=g) < 0.15).float()
    labels[torch.arange(b), torch.randint(0, c, (b,), generator=g)] = 1.0  # >= 1 relevant
    mask = torch.rand(b, c, generator=g) > 0.2
    mask |= labels > 0  # relevant candidates stay valid
    cands = Candidates(scores, labels, mask)
    ours = RankingMetrics([1, 3, 5], mrr_at=10)
    ours.update(cands)
    index = torch.arange(b)[:, None].expand(b, c)[mask]
    preds, target = scores[mask], labels[mask] > 0
    for k in (1, 3, 5):
        theirs = RetrievalRecall(top_k=k)(preds, target, indexes=index)
        torch.testing.assert_close(ours.means[f"recall@{k}"].compute(), theirs)
    theirs = RetrievalMRR(top_k=10)(preds, target, indexes=index)
    torch.testing.assert_close(ours.means["mrr@10"].compute(), theirs)


def test_accuracy_counts_only_rankable_queries():
    scores = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    labels = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    mask = torch.tensor([[True, True], [True, True], [True, False]])  # row 2: nothing to rank
    acc = Accuracy()
    acc.update(Candidates(scores, labels, mask))
    assert acc.compute().item() == 0.5


def test_accuracy_equals_batch_recall_at_1_only_over_the_batch_documents():
    """``accuracy`` ranks the negatives strategy's candidates, ``batch/recall@1`` the batch's
    documents (docs/training.md): the same for in-batch negatives, not for presampled ones."""
    vectors = torch.tensor([[0.5, 0.0], [0.0, 1.0], [0.9, 0.0], [0.0, -1.0]])  # documents 0..3
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    batch = {"doc_id": torch.tensor([0, 1]), "query_id": torch.tensor([0, 1])}
    # Query 0's presampled negative (document 2) outscores its positive; row 1's does not.
    batch["neg_id"] = batch["neg"] = torch.tensor([[2], [3]])
    d = vectors[batch["doc_id"]]
    dot = Similarity(kind="dot", scale=1.0)
    presampled = PresampledNegatives()
    presampled.bind(Catalogue(range(4), batch["query_id"], batch["doc_id"]))

    def measured(cands: Candidates) -> float:
        metric = Accuracy()
        metric.update(cands)
        return metric.compute().item()

    recall = RankingMetrics([1])
    recall.update(score_in_batch(q, d, batch, dot, global_batch=False))
    assert recall.means["recall@1"].compute().item() == 1.0
    assert measured(InBatchNegatives()(q, d, batch, dot, None)) == 1.0
    assert measured(presampled(q, d, batch, dot, lambda ids: vectors[ids])) == 0.5


def test_depends_only_on_the_ranking():
    g = torch.Generator().manual_seed(7)
    scores = torch.randn(30, 9, generator=g)  # cosines are often negative
    labels = torch.zeros(30, 9)
    labels[:, 0] = 1.0
    mask = torch.ones(30, 9, dtype=torch.bool)
    plain = per_query(Candidates(scores, labels, mask), [1, 5])
    shifted = per_query(Candidates(scores - 10.0, labels, mask), [1, 5])
    for name in plain:
        torch.testing.assert_close(plain[name], shifted[name])
