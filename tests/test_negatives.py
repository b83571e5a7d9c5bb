"""Candidate builders: shapes, labels and, above all, masking of accidental positives."""

import pytest
import torch

from twotower.data.base import Catalogue
from twotower.errors import ConfigError
from twotower.losses.listwise_softmax import ListwiseSoftmaxLoss
from twotower.negatives import InBatchNegatives, PresampledNegatives, SampledNegatives
from twotower.similarity import Similarity

DOT = Similarity(kind="dot", scale=1.0)


def identity_batch(doc_ids, query_ids):
    """Documents as one-hot vectors of their id: a candidate scores 1 iff it is the positive's
    document, so any valid negative scoring 1 would be an accidental positive."""
    doc_ids, query_ids = torch.tensor(doc_ids), torch.tensor(query_ids)
    d = torch.nn.functional.one_hot(doc_ids, 16).float()
    batch = {"doc_id": doc_ids, "query_id": query_ids}
    return d.clone(), d, batch  # each query vector equals its positive's vector


def bound(neg, pairs):
    """``neg`` bound to training positives ``pairs`` (query, doc) over 16 documents."""
    query = torch.tensor([q for q, _ in pairs], dtype=torch.long)
    doc = torch.tensor([d for _, d in pairs], dtype=torch.long)
    neg.bind(Catalogue(range(16), query, doc))
    return neg


def batch_pairs(batch):
    return list(zip(batch["query_id"].tolist(), batch["doc_id"].tolist(), strict=True))


def test_seed_rotation_scores_the_positive_as_a_negative():
    # Seed 000 rotates the batch by randint(1, B + i) % B: offset 0 happens, and then every
    # query's "negative" is its own positive. Show the defect we guard against.
    b = 4
    offsets = {(r % b) for r in range(1, b + 4)}
    assert 0 in offsets
    q, d, batch = identity_batch(range(b), range(b))
    rotated = torch.roll(d, shifts=0, dims=0)
    assert torch.equal((q * rotated).sum(1), torch.ones(b))  # positive scored as negative


def test_in_batch_masks_same_document_and_same_query():
    q, d, batch = identity_batch([0, 1, 1, 2, 3], [0, 1, 2, 3, 0])
    c = InBatchNegatives()(q, d, batch, DOT, None)
    assert c.scores.shape == c.labels.shape == c.mask.shape == (5, 5)
    assert torch.equal(c.labels, torch.eye(5))
    expected = torch.ones(5, 5, dtype=torch.bool)
    expected[1, 2] = expected[2, 1] = False  # rows 1 and 2 share document 1
    expected[0, 4] = expected[4, 0] = False  # rows 0 and 4 share query 0: each other's positive
    assert torch.equal(c.mask, expected)
    negatives = c.scores[c.mask & (c.labels == 0)]
    assert torch.all(negatives == 0)


def test_unmasked_in_batch_keeps_accidental_positives_for_the_ablation():
    q, d, batch = identity_batch([0, 1, 1, 2, 3], [0, 1, 2, 3, 0])
    c = InBatchNegatives(mask_duplicates=False)(q, d, batch, DOT, None)
    assert torch.equal(c.labels, torch.eye(5)) and bool(c.mask.all())
    # Row 1's positive (document 1) is also row 2's: scored as row 1's negative, at 1.
    assert c.scores[1, 2] == 1 and c.labels[1, 2] == 0
    with pytest.raises(ConfigError, match="mask_duplicates"):
        InBatchNegatives(mask_duplicates="no")


@pytest.mark.parametrize("num_negatives", [1, 3, 7])
def test_sampled_never_draws_an_accidental_positive(num_negatives):
    torch.manual_seed(0)
    ids = [0, 1, 1, 2, 3, 3, 3, 4]
    q, d, batch = identity_batch(ids, list(range(8)))
    sampler = bound(SampledNegatives(num_negatives), batch_pairs(batch))
    for _ in range(200):
        c = sampler(q, d, batch, DOT, None)
        assert c.scores.shape == (8, 1 + num_negatives)
        assert torch.all(c.scores[:, 0] == 1) and torch.all(c.labels[:, 0] == 1)
        negatives = c.scores[:, 1:][c.mask[:, 1:]]
        assert torch.all(negatives == 0)  # never the positive's own document


def test_sampled_never_draws_another_relevant_document_of_the_query():
    # Query 0's training positives are documents 0 and 1; document 1 is row 1's positive,
    # of another query, so neither the doc_id nor the query_id clash of the batch masks it.
    torch.manual_seed(0)
    batch = {"doc_id": torch.arange(4), "query_id": torch.arange(4)}
    qs = torch.arange(1.0, 5.0).expand(4, 4)  # document j scores j + 1 for every query
    ds = torch.eye(4)
    pairs = [*batch_pairs(batch), (0, 1)]
    sampler = bound(SampledNegatives(2), pairs)
    for _ in range(50):
        c = sampler(qs, ds, batch, DOT, None)
        drawn = (c.scores[0, 1:] - 1).long()  # row 0's two negatives
        assert c.mask[0].all() and sorted(drawn.tolist()) == [2, 3]


def test_sampled_masks_filler_when_the_batch_is_too_small():
    q, d, batch = identity_batch([0, 0, 1], [0, 1, 2])
    c = bound(SampledNegatives(2), batch_pairs(batch))(q, d, batch, DOT, None)
    # rows 0 and 1 share their document: one eligible negative each, the second is filler
    assert c.mask[:, 1:].sum(1).tolist() == [1, 1, 2]


def test_sampled_draws_uniformly():
    torch.manual_seed(1)
    batch = {"doc_id": torch.arange(5), "query_id": torch.arange(5)}
    qs = torch.eye(5)
    ds = torch.arange(1.0, 6.0)[:, None] * torch.ones(5, 5)  # doc j scores j + 1 for any query
    counts = torch.zeros(5, 5)
    sampler = bound(SampledNegatives(1), batch_pairs(batch))
    for _ in range(2000):
        c = sampler(qs, ds, batch, DOT, None)
        drawn = (c.scores[:, 1] - 1).long()
        counts[torch.arange(5), drawn] += 1
    assert torch.all(counts.diagonal() == 0)
    off = counts[~torch.eye(5, dtype=torch.bool)]
    assert off.min() > 400 and off.max() < 600  # 500 expected each


def test_sampled_negatives_must_be_fewer_than_the_batch():
    with pytest.raises(ConfigError, match="num_negatives=8: must be < data.batch_size"):
        SampledNegatives(8).check(ListwiseSoftmaxLoss(), "pairs", 8)
    with pytest.raises(ConfigError, match="num_negatives"):
        SampledNegatives(0)


def presampled_batch():
    q, d, batch = identity_batch([0, 1, 2], [0, 1, 2])
    batch["neg_id"] = torch.tensor([[1, 0], [2, 3], [1, 1]])  # row 0 lists its positive
    batch["neg"] = batch["neg_id"]  # the "encoder" below maps ids to one-hot vectors
    return q, d, batch


def encode(ids):
    return torch.nn.functional.one_hot(ids, 16).float()


def test_presampled_own_negatives_mask_the_positive():
    q, d, batch = presampled_batch()
    c = bound(PresampledNegatives(), batch_pairs(batch))(q, d, batch, DOT, encode)
    assert c.scores.shape == (3, 3)
    assert c.labels[:, 0].tolist() == [1, 1, 1] and c.labels[:, 1:].sum() == 0
    assert c.mask.tolist() == [[True, True, False], [True, True, True], [True, True, True]]
    assert torch.all(c.scores[:, 1:][c.mask[:, 1:]] == 0)


def test_presampled_shared_across_batch():
    q, d, batch = presampled_batch()
    neg = bound(PresampledNegatives(share_across_batch=True), batch_pairs(batch))
    c = neg(q, d, batch, DOT, encode)
    assert c.scores.shape == (3, 3 + 6)
    assert torch.equal(c.labels[:, :3], torch.eye(3))
    # every valid non-positive candidate is another document
    assert torch.all(c.scores[c.mask & (c.labels == 0)] == 0)
    # candidates: positives [0, 1, 2] then negatives [1, 0, 2, 3, 1, 1]; each row loses the
    # copies of its own document: row 0 one (doc 0), row 1 three (doc 1), row 2 one (doc 2)
    assert c.mask.sum(1).tolist() == [9 - 1, 9 - 3, 9 - 1]


def test_presampled_labelled_rows():
    q, d, batch = identity_batch([0, 1], [0, 1])
    batch["label"] = torch.tensor([1.0, 0.0])
    c = bound(PresampledNegatives(), [(0, 0)])(q, d, batch, DOT, encode)
    assert c.scores.shape == (2, 1)
    assert c.labels.flatten().tolist() == [1.0, 0.0] and c.mask.all()


# Query 0's training positives are documents 0 and 4 (graded qrels: two relevant documents);
# rows 0 and 3 are its two pairs, and document 4 is also presampled as rows 0 and 1's negative.
RELEVANT = [(0, 0), (0, 4), (1, 1), (2, 2), (2, 3)]


def relevant_batch():
    q, d, batch = identity_batch([0, 1, 2, 4], [0, 1, 2, 0])
    batch["neg_id"] = torch.tensor([[4, 1], [4, 3], [3, 5], [1, 6]])
    batch["neg"] = batch["neg_id"]
    return q, d, batch


def expected_mask(batch, columns):
    """Valid unless the column is a relevant document of the row's query (not the row's own
    positive column, the first one of ``columns`` for own negatives, row i for shared ones)."""
    relevant = set(RELEVANT)
    out = []
    for row, query in enumerate(batch["query_id"].tolist()):
        cols = columns[row] if columns.dim() == 2 else columns
        own = 0 if columns.dim() == 2 else row
        out.append(
            [
                c == own or (query, int(doc)) not in relevant and int(doc) != batch["doc_id"][row]
                for c, doc in enumerate(cols)
            ]
        )
    return torch.tensor(out)


def test_presampled_masks_the_querys_other_relevant_documents():
    q, d, batch = relevant_batch()
    c = bound(PresampledNegatives(), RELEVANT)(q, d, batch, DOT, encode)
    columns = torch.cat([batch["doc_id"][:, None], batch["neg_id"]], 1)  # (4, 3)
    assert c.mask.tolist() == [
        [True, False, True],  # document 4 is relevant to query 0
        [True, True, True],
        [True, False, True],  # document 3 is relevant to query 2
        [True, True, True],
    ]
    assert torch.equal(c.mask, expected_mask(batch, columns))


def test_presampled_shared_masks_a_relevant_document_in_every_column():
    # Document 4 is row 3's positive (column 3) and rows 0 and 1's negative (columns 4, 6):
    # row 0, of the same query, must mask it in all three.
    q, d, batch = relevant_batch()
    c = bound(PresampledNegatives(share_across_batch=True), RELEVANT)(q, d, batch, DOT, encode)
    columns = torch.cat([batch["doc_id"], batch["neg_id"].flatten()])  # (4 + 8,)
    assert c.scores.shape == c.mask.shape == (4, 12)
    assert not c.mask[0, [3, 4, 6]].any() and not c.mask[3, 0].any()
    assert torch.equal(c.mask, expected_mask(batch, columns))


def test_presampled_needs_the_training_positives():
    q, d, batch = relevant_batch()
    with pytest.raises(RuntimeError, match="call bind"):
        PresampledNegatives()(q, d, batch, DOT, encode)


def test_labelled_presampled_masks_a_negative_row_that_is_a_relevant_document():
    # Labelled negatives are drawn apart from the row's own positive only: row 1 pairs query
    # 0 with document 4, one of its training positives, under label 0.
    q, d, batch = identity_batch([0, 4, 5], [0, 0, 1])
    batch["label"] = torch.tensor([1.0, 0.0, 0.0])
    c = bound(PresampledNegatives(), RELEVANT)(q, d, batch, DOT, encode)
    assert c.mask.flatten().tolist() == [True, False, True]


# Rows 0 and 1 are two positives of query 0; row 1's document 2 is also row 2's, of query 1.
# Bound to no training pair, as validation rows of queries unseen in training.
SAME_QUERY = ([1, 2, 2], [0, 0, 1])


def test_in_batch_masks_a_same_query_positive_in_every_column():
    q, d, batch = identity_batch(*SAME_QUERY)
    c = InBatchNegatives()(q, d, batch, DOT, None)
    # Row 0 masks document 2 as row 1's positive (column 1) and as row 2's (column 2).
    assert c.mask.tolist() == [[True, False, False], [False, True, False], [True, False, True]]


def test_presampled_shared_masks_a_same_query_positive_in_every_column():
    q, d, batch = identity_batch(*SAME_QUERY)
    batch["neg_id"] = torch.tensor([[3], [4], [2]])  # row 2 also lists document 2
    batch["neg"] = batch["neg_id"]
    c = bound(PresampledNegatives(share_across_batch=True), [])(q, d, batch, DOT, encode)
    # columns: documents 1, 2, 2, 3, 4, 2; row 0 masks document 2 in all three of its columns
    assert c.mask[0].tolist() == [True, False, False, True, True, False]


def test_sampled_never_draws_a_same_query_positive_from_another_column():
    torch.manual_seed(0)
    batch = {"doc_id": torch.tensor([*SAME_QUERY[0], 3]), "query_id": torch.tensor([0, 0, 1, 2])}
    qs, ds = torch.ones(4, 4), torch.diag(torch.arange(1.0, 5.0))  # column j scores j + 1
    sampler = bound(SampledNegatives(2), [])
    for _ in range(50):
        c = sampler(qs, ds, batch, DOT, None)
        # Row 0's only eligible negative is column 3 (document 3); the second is filler.
        assert c.mask[0].tolist() == [True, True, False] and c.scores[0, 1] == 4


def test_data_negatives_are_drawn_outside_the_querys_relevant_set():
    from twotower.data.base import uniform_negatives

    # query 0 has documents 0-3 relevant of 6; query 1 has document 4
    query, pos = torch.tensor([0, 0, 0, 0, 1]), torch.tensor([0, 1, 2, 3, 4])
    neg = uniform_negatives(pos, 6, 8, seed=0, query=query)
    assert set(neg[:4].flatten().tolist()) <= {4, 5}
    assert 4 not in neg[4].tolist()
    assert torch.equal(neg, uniform_negatives(pos, 6, 8, seed=0, query=query))  # seeded
    plain = uniform_negatives(pos, 6, 8, seed=0)
    assert (plain[:4] < 4).any(), "without the queries, only the own positive is avoided"
