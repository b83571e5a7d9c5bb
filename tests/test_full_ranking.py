"""Full-ranking evaluation (RecBole's protocol) on a case worked by hand.

Two users, six items; user u's score of item i is ``items[i, u]``.

- user 0: training items {0, 1}, test items {3, 5}. Without masking the top 2 are the training
  items 0 and 1 (no hit). Masked, the ranking is 3, 4, 5, 2: at k = 2 one of two test items
  is found at rank 1: recall 1/2, MRR 1, NDCG 1 / (1 + 1/log2 3), hit 1, precision 1/2.
- user 1: training item {3}, validation item {2} (masked when testing), test item {4}.
  Masked, the ranking is 4, 0, 5, 1: recall 1, MRR 1, NDCG 1, hit 1, precision 1/2. Had the
  validation item stayed, 2 would be first and 4 second: MRR 1/2, NDCG 1/log2 3.
"""

from __future__ import annotations

import math

import pytest
import torch

from twotower.retrieval.evaluation import evaluate
from twotower.retrieval.exact import exact_search
from twotower.retrieval.ranking import Qrels

USERS = torch.eye(2)
ITEMS = torch.tensor(
    [[0.9, 0.3], [0.8, 0.1], [0.1, 0.9], [0.7, 1.0], [0.6, 0.5], [0.5, 0.2]]
)  # (6, 2)
TEST = Qrels.from_dict(
    {"u0": {"i3": 1, "i5": 1}, "u1": {"i4": 1}},
    {"u0": 0, "u1": 1},
    {f"i{i}": i for i in range(6)},
)
TRAIN = (torch.tensor([0, 0, 1]), torch.tensor([0, 1, 3]))
TRAIN_AND_VAL = (torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 3, 2]))
METRICS = ["recall@2", "mrr@2", "ndcg@2", "hit@2", "precision@2"]


def test_masked_full_ranking_by_hand():
    r = evaluate(USERS, ITEMS, TEST, METRICS, depth=4, exclude=TRAIN_AND_VAL)
    assert r.indices.tolist() == [[3, 4, 5, 2], [4, 0, 5, 1]]
    ndcg_u0 = 1 / (1 + 1 / math.log2(3))
    expected = {
        "recall@2": (0.5 + 1) / 2,
        "mrr@2": 1.0,
        "ndcg@2": (ndcg_u0 + 1) / 2,
        "hit@2": 1.0,
        "precision@2": 0.5,
    }
    assert r.metrics == pytest.approx(expected, abs=1e-6)


def test_validation_items_count_against_the_test_unless_masked():
    r = evaluate(USERS, ITEMS, TEST, METRICS, depth=4, exclude=TRAIN)
    assert r.indices[1].tolist() == [2, 4, 0, 5]
    assert r.per_query["mrr@2"].tolist() == pytest.approx([1.0, 0.5])
    assert r.per_query["ndcg@2"][1].item() == pytest.approx(1 / math.log2(3))


def test_unmasked_ranking_is_dominated_by_training_items():
    r = evaluate(USERS, ITEMS, TEST, METRICS, depth=4)
    assert r.indices[0, :2].tolist() == [0, 1]
    assert r.per_query["hit@2"][0].item() == 0.0


def test_candidates_restrict_the_ranking_and_keep_item_numbers():
    # Cold-start protocol: only items 2, 4 and 5 are ranked; user 1's validation item 2 is
    # masked, so 4 then 5 remain for user 1.
    candidates = torch.tensor([False, False, True, False, True, True])
    r = evaluate(USERS, ITEMS, TEST, METRICS, depth=3, exclude=TRAIN_AND_VAL, candidates=candidates)
    assert r.indices.tolist() == [[4, 5, 2], [4, 5, -1]]
    assert r.per_query["recall@2"].tolist() == pytest.approx([0.5, 1.0])


def test_exclusion_equals_a_sorted_masked_score_matrix():
    g = torch.Generator().manual_seed(0)
    q, d = torch.randn(37, 8, generator=g), torch.randn(300, 8, generator=g)
    rows = torch.randint(0, 37, (2000,), generator=g)
    cols = torch.randint(0, 300, (2000,), generator=g)
    scores, indices = exact_search(q, d, 20, exclude=(rows, cols), query_block=7, doc_block=32)
    full = q @ d.T
    full[rows, cols] = float("-inf")
    want_s, _ = torch.sort(full, dim=1, descending=True, stable=True)
    # Blocked and whole matmuls round differently: compare the documents' true scores, so
    # that two near-tied documents may swap but an excluded or wrong one fails.
    torch.testing.assert_close(full.gather(1, indices), want_s[:, :20], atol=1e-5, rtol=0)
    torch.testing.assert_close(scores, want_s[:, :20], atol=1e-5, rtol=0)


def test_bad_exclusions_are_reported():
    with pytest.raises(ValueError, match=r"query rows must lie in \[0, 2\)"):
        exact_search(USERS, ITEMS, 2, exclude=(torch.tensor([2]), torch.tensor([0])))
    with pytest.raises(ValueError, match=r"documents must lie in \[0, 6\)"):
        exact_search(USERS, ITEMS, 2, exclude=(torch.tensor([0]), torch.tensor([6])))
