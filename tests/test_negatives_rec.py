"""Negatives for recommendation: logQ correction, mixed and uniform negatives, history masking."""

from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from twotower.data.base import Catalogue
from twotower.errors import ConfigError
from twotower.losses.listwise_softmax import ListwiseSoftmaxLoss
from twotower.negatives import (
    InBatchNegatives,
    StreamingFrequency,
    UniformNegatives,
)
from twotower.negatives.base import catalogue_vectors
from twotower.similarity import Similarity

DOT = Similarity(kind="dot", scale=1.0)


class IdStore:
    """A catalogue of ``n`` items whose tower input is their id."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def batch(self, rows: torch.Tensor) -> torch.Tensor:
        return rows


NOBODY = 10**6  # a user no batch holds: owns the positives that only make up item counts


def catalogue(n_items, counts=None, history=()):
    """``history``: the training positives as (user, item) pairs; ``counts``: the items'
    training counts, made up by positives of user ``NOBODY`` beyond ``history``'s."""
    pairs = list(history)
    if counts is not None:
        have = torch.bincount(
            torch.tensor([i for _, i in pairs], dtype=torch.long), minlength=n_items
        )
        extra = torch.as_tensor(counts).long() - have
        assert (extra >= 0).all() and (extra == torch.as_tensor(counts) - have).all()
        pairs += [(NOBODY, i) for i in range(n_items) for _ in range(int(extra[i]))]
    users = torch.tensor([u for u, _ in pairs], dtype=torch.long)
    items = torch.tensor([i for _, i in pairs], dtype=torch.long)
    return Catalogue(IdStore(n_items), users, items)


def one_hot(ids):
    """Items as one-hot vectors: a candidate scores 1 iff it is the row's positive."""
    return F.one_hot(ids, 8).float()


def rows(users, items):
    items = torch.tensor(items)
    batch = {"query_id": torch.tensor(users), "doc_id": items}
    return one_hot(items), one_hot(items), batch


# -- logQ and history by hand -----------------------------------------------------------------
def test_counted_logq_subtracts_log_p_from_every_column():
    torch.manual_seed(0)
    q, d = torch.randn(3, 4), torch.randn(3, 4)
    batch = {"query_id": torch.arange(3), "doc_id": torch.tensor([0, 1, 2])}
    plain = InBatchNegatives()(q, d, batch, DOT, None)
    neg = InBatchNegatives(logq="counted")
    neg.bind(catalogue(3, counts=[2.0, 1.0, 1.0]))  # p = 1/2, 1/4, 1/4
    c = neg(q, d, batch, DOT, None)
    log_p = torch.tensor([0.5, 0.25, 0.25]).log()
    torch.testing.assert_close(c.scores, plain.scores - log_p)  # the diagonal (positives) too
    assert torch.equal(c.labels, plain.labels) and torch.equal(c.mask, plain.mask)


def test_history_masks_the_users_other_training_items_but_not_the_positive():
    # Training positives: user 0 has items 0, 1, 3; user 1 has 1, 0; user 2 has 3.
    cat = catalogue(4, history=[(0, 0), (0, 1), (0, 3), (1, 1), (1, 0), (2, 3)])
    q, d, batch = rows([0, 1, 2], [0, 1, 3])  # candidate columns: items 0, 1, 3
    assert InBatchNegatives()(q, d, batch, DOT, None).mask.all()
    neg = InBatchNegatives(mask_history=True)
    neg.bind(cat)
    c = neg(q, d, batch, DOT, None)
    expected = [[True, False, False], [False, True, True], [True, True, True]]
    assert c.mask.tolist() == expected  # the diagonal (own positives, all in history) stays


def test_strategies_that_need_the_data_say_so():
    q, d, batch = rows([0, 1], [0, 1])
    for neg in (InBatchNegatives(logq="counted"), InBatchNegatives(mask_history=True)):
        with pytest.raises(RuntimeError, match="call bind"):
            neg(q, d, batch, DOT, one_hot)
    for neg in (mixed(num_uniform=4), UniformNegatives(2)):
        with pytest.raises(RuntimeError, match="call bind"):
            neg(q, d, batch, DOT, one_hot)


def test_bad_options_fail_when_built():
    with pytest.raises(ConfigError, match="logq='count'"):
        InBatchNegatives(logq="count")
    with pytest.raises(ConfigError, match="num_uniform=-1"):
        mixed(num_uniform=-1)
    with pytest.raises(ConfigError, match="alpha=0"):
        mixed(logq="streaming", alpha=0)
    with pytest.raises(ConfigError, match="num_negatives=0"):
        UniformNegatives(num_negatives=0)


# -- mixed and uniform ------------------------------------------------------------------------
def mixed(**options) -> InBatchNegatives:
    """``negatives=mixed`` (conf/negatives/mixed.yaml): in-batch, uniform draws, history masked."""
    return InBatchNegatives(mask_history=True, **options)


class Recorder:
    """An encoder that remembers the ids it was asked for."""

    def __init__(self):
        self.ids = []

    def __call__(self, ids):
        self.ids.append(ids)
        return one_hot(ids)


HISTORY = [(0, 0), (0, 5), (1, 1), (1, 6), (2, 2), (3, 3), (3, 7)]


@pytest.fixture
def drawn_ids(monkeypatch) -> list[torch.Tensor]:
    """The catalogue ids each strategy draws, in draw order (the encoder sees each once)."""
    import twotower.negatives.in_batch as in_batch
    import twotower.negatives.uniform as uniform

    drawn = []

    def record(catalogue, ids, encode, device):
        drawn.append(ids)
        return catalogue_vectors(catalogue, ids, encode, device)

    for module in (in_batch, uniform):
        monkeypatch.setattr(module, "catalogue_vectors", record)
    return drawn


def test_catalogue_vectors_encode_each_distinct_item_once():
    encode = Recorder()
    ids = torch.tensor([5, 1, 5, 5, 2, 1])
    vectors, inverse = catalogue_vectors(catalogue(8), ids, encode, "cpu")
    assert encode.ids[0].tolist() == [1, 2, 5]
    assert torch.equal(vectors[inverse], one_hot(ids))


def test_mixed_masks_uniform_draws_that_are_the_positive_or_history(drawn_ids):
    torch.manual_seed(0)
    q, d, batch = rows([0, 1, 2, 3], [0, 1, 2, 3])
    neg = mixed(num_uniform=32)
    neg.bind(catalogue(8, history=HISTORY))
    encode = Recorder()
    c = neg(q, d, batch, DOT, encode)
    assert c.scores.shape == c.mask.shape == (4, 4 + 32)
    assert torch.equal(c.labels[:, :4], torch.eye(4)) and c.labels[:, 4:].sum() == 0
    drawn = drawn_ids[0]  # (32,) shared by every row: masked per row, not redrawn
    extra = {(u, i) for u, i in HISTORY}  # the row's positive is in its user's history
    bad = torch.tensor([[(u, int(i)) in extra for i in drawn] for u in range(4)])
    assert bad.any() and (~bad).any()
    assert torch.equal(c.mask[:, 4:], ~bad)
    assert torch.all(c.scores[:, 4:][c.mask[:, 4:]] == 0)  # no accidental positive left


def test_mixed_masks_a_users_other_item_in_the_batch_columns_too():
    # User 0 has items 0 and 1; item 1 is row 1's positive, of user 1.
    q, d, batch = rows([0, 1, 2], [0, 1, 2])
    neg = mixed(num_uniform=1)
    neg.bind(catalogue(8, history=[(0, 0), (0, 1), (1, 1), (2, 2)]))
    c = neg(q, d, batch, DOT, one_hot)
    assert c.mask[:, :3].tolist() == [[True, False, True], [True, True, True], [True, True, True]]
    unmasked = mixed(num_uniform=1, mask_duplicates=False)  # the ablation masks nothing
    unmasked.bind(catalogue(8, history=[(0, 0), (0, 1), (1, 1), (2, 2)]))
    assert unmasked(q, d, batch, DOT, one_hot).mask.all()


def test_mixed_logq_uses_the_expected_count_in_the_pool(drawn_ids):
    torch.manual_seed(0)
    q, d, batch = rows([0, 1], [0, 1])
    neg = mixed(num_uniform=4, logq="counted")
    neg.bind(catalogue(8, counts=[4.0, 2.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]))  # total 8
    encode = Recorder()
    c = neg(q, d, batch, DOT, encode)
    ids = torch.cat([batch["doc_id"], drawn_ids[0]])
    p = torch.tensor([4.0, 2, 1, 1, 1, 1, 1, 1])[ids] / 8  # unseen items count once
    expected_count = 2 * p + 4 / 8  # G p_j + K / N
    raw = DOT(q, one_hot(ids))
    torch.testing.assert_close(c.scores, raw - expected_count.log())


def test_uniform_draws_per_row_and_never_the_positive_or_history(drawn_ids):
    torch.manual_seed(0)
    q, d, batch = rows([0, 1, 2, 3], [0, 1, 2, 3])
    neg = UniformNegatives(num_negatives=6)
    neg.bind(catalogue(8, history=HISTORY))
    encode = Recorder()
    c = neg(q, d, batch, DOT, encode)
    assert c.scores.shape == c.mask.shape == (4, 1 + 6)
    assert c.labels[:, 0].tolist() == [1, 1, 1, 1] and c.labels[:, 1:].sum() == 0
    drawn = drawn_ids[0].view(4, 6)  # each row's own draws, after the redraws
    extra = {(u, i) for u, i in HISTORY}
    assert not any((u, int(i)) in extra for u in range(4) for i in drawn[u])
    assert c.mask.all()
    assert torch.all(c.scores[:, 1:] == 0)


def test_uniform_redraws_a_heavy_users_history(drawn_ids):
    # User 0 has rated 6 of the 8 items: 3 draws in 4 would hit its history and be lost.
    history = [(0, i) for i in range(6)] + [(1, 1)]
    q, d, batch = rows([0, 0, 1], [0, 3, 1])
    neg = UniformNegatives(num_negatives=16)
    neg.bind(catalogue(8, history=history))
    masks = []
    for run in range(2):
        torch.manual_seed(7)
        c = neg(q, d, batch, DOT, one_hot)
        masks.append(c.scores)
        assert c.mask.all()  # K unmasked draws per row
        drawn = drawn_ids[run].view(3, 16)
        assert set(drawn[:2].flatten().tolist()) <= {6, 7}
        assert 1 not in drawn[2].tolist()
        assert len(set(drawn[2].tolist())) > 2  # the light user's draws are not restricted
    assert torch.equal(*drawn_ids) and torch.equal(*masks)  # seeded draws repeat


def test_uniform_masks_what_still_collides_after_the_redraws():
    # User 0 has rated every item: no draw can succeed, the rounds end and the draws are masked.
    history = [(0, i) for i in range(8)] + [(1, 1)]
    q, d, batch = rows([0, 1], [0, 1])
    neg = UniformNegatives(num_negatives=4)
    neg.bind(catalogue(8, history=history))
    c = neg(q, d, batch, DOT, one_hot)
    assert c.mask.tolist() == [[True] + [False] * 4, [True] * 5]


def test_draws_repeat_with_the_seed():
    q, d, batch = rows([0, 1], [0, 1])
    neg = UniformNegatives(num_negatives=3)
    neg.bind(catalogue(8))
    runs = []
    for _ in range(2):
        torch.manual_seed(3)
        runs.append(neg(q, d, batch, DOT, one_hot).mask)
    assert torch.equal(*runs)


@pytest.mark.parametrize(
    "neg",
    [
        InBatchNegatives(logq="counted", mask_history=True),
        InBatchNegatives(logq="streaming"),
        mixed(num_uniform=4, logq="streaming"),
        UniformNegatives(num_negatives=2),
    ],
    ids=["in_batch", "in_batch_streaming", "mixed", "uniform"],
)
def test_gradients_reach_both_towers(neg):
    torch.manual_seed(0)
    neg.bind(catalogue(8, counts=torch.ones(8), history=HISTORY))
    q = torch.randn(4, 3, requires_grad=True)
    table = torch.randn(8, 3, requires_grad=True)  # the document tower
    batch = {"query_id": torch.arange(4), "doc_id": torch.tensor([0, 1, 2, 3])}
    c = neg(q, table[batch["doc_id"]], batch, DOT, lambda ids: table[ids])
    ListwiseSoftmaxLoss()(c.scores, c.labels, c.mask).backward()
    assert q.grad.abs().sum() > 0 and table.grad[:4].abs().sum() > 0
    assert torch.isfinite(q.grad).all() and torch.isfinite(table.grad).all()


# -- the streaming estimator ------------------------------------------------------------------
def test_streaming_estimate_updates_in_training_only_and_is_checkpointed():
    neg = InBatchNegatives(logq="streaming", buckets=16)  # no bind needed
    q, d, batch = rows([0, 1, 2], [0, 1, 1])
    neg(q, d, batch, DOT, None)
    state = {k: v.clone() for k, v in neg.state_dict().items()}
    assert sorted(state) == [f"frequency.{k}" for k in ("gap", "last", "seen", "step")]
    assert state["frequency.step"] == 1 and state["frequency.seen"] == 3
    neg.eval()
    neg(q, d, batch, DOT, None)
    for key, value in neg.state_dict().items():
        assert torch.equal(value, state[key]), key
    fresh = InBatchNegatives(logq="streaming", buckets=16)
    fresh.load_state_dict(state)
    ids = torch.arange(4)
    assert torch.equal(fresh.frequency.log_prob(ids), neg.frequency.log_prob(ids))


def test_only_streaming_adds_to_checkpoints():
    # Counts and histories come from the data at bind(): old checkpoints still load.
    assert not InBatchNegatives(logq="counted", mask_history=True).state_dict()


def test_streaming_update_equals_the_item_by_item_loop():
    # The paper's loop, with a step's m repeats of a bucket spread evenly over the step.
    torch.manual_seed(0)
    f, alpha, buckets = StreamingFrequency(buckets=5, alpha=0.3), 0.3, 5
    gap, last, seen = [0.0] * buckets, [0.0] * buckets, [False] * buckets
    for t in range(1, 30):
        ids = torch.randint(0, 12, (6,))  # repeats and collisions
        f.update(ids)
        for h, m in sorted(Counter((ids % buckets).tolist()).items()):
            for k in range(1, m + 1):
                now = t - 1 + k / m
                gap[h] = (1 - alpha) * gap[h] + alpha * (now - last[h]) if seen[h] else now
                seen[h], last[h] = True, now
    torch.testing.assert_close(f.gap, torch.tensor(gap))


def test_streaming_counts_repeats_without_the_loops_bias():
    # An item 28 times in every batch: the paper's loop (28 gaps, 27 of them 0) would settle
    # at 1 / B = 60.9 per step with alpha = 0.05; spreading the repeats gives 28.
    f = StreamingFrequency(buckets=4, alpha=0.05)
    for _ in range(200):
        f.update(torch.tensor([1] * 28 + [2] * 100))
    torch.testing.assert_close(f.rate(torch.tensor([1])), torch.tensor([28.0]))
    torch.testing.assert_close(f.log_prob(torch.tensor([1])).exp(), torch.tensor([28 / 128]))


def stream(buckets, n_items=100, batch_size=32, steps=2000, alpha=0.02):
    """Estimated and counted occurrences per step of Zipf-distributed items."""
    g = torch.Generator().manual_seed(0)
    p = 1 / torch.arange(1, n_items + 1).double()
    f = StreamingFrequency(buckets=buckets, alpha=alpha)
    counts = torch.zeros(n_items, dtype=torch.float64)
    for _ in range(steps):
        ids = torch.multinomial(p, batch_size, replacement=True, generator=g)
        f.update(ids)
        counts += torch.bincount(ids, minlength=n_items)
    return f.rate(torch.arange(n_items)).double(), counts / steps


def test_streaming_estimate_converges_to_the_counted_rates():
    est, rate = stream(buckets=128)  # >= 100 items: no collisions
    rel = est / rate - 1  # (100,) rates from 0.06 to 6.2 per step
    # A moving average over ~1/alpha occurrences: about sqrt(alpha / 2) = 10% noise per
    # item, and no bias.
    assert rel.abs().mean() < 0.1 and rel.mean().abs() < 0.03
    assert rel.abs().quantile(0.9) < 0.2 and rel.abs().max() < 0.4
    rare = rate < 0.5
    assert rare.sum() > 50 and rel[rare].abs().mean() < 0.1


def test_streaming_collisions_add_up_rates():
    est, rate = stream(buckets=50)  # items j and j + 50 share a bucket
    bucket_rate = rate.view(2, 50).sum(0).repeat(2)
    assert (est / bucket_rate - 1).abs().mean() < 0.1
    assert (est > 0.75 * rate).all()  # an over-estimate of each item, up to noise
    assert (est[50:] > 2 * rate[50:]).all()  # the rarer item of each pair: its partner's rate


# -- the property: logQ removes the popularity bias of in-batch negatives ---------------------
def simulate(logq, users=4, n_items=50, batch_size=128, steps=800, n_rows=50_000):
    """Learn a free (item x user) score table with in-batch softmax on skewed data.

    Each user's true preference is P(i | u) ∝ pop_i exp(theta_ui), pop Zipf (1 / rank), so
    the training positives, hence the in-batch negatives, are skewed toward popular items.
    A full softmax would learn s(u, i) = log P(i | u) + c_u. Each row is its own query: with
    4 users in a batch of 128, a shared user id would mask most negatives as the user's
    positives.

    Returns:
        scores and log P(i | u) ``(U, N)``, and the items' log-frequency ``(N,)``.
    """
    g = torch.Generator().manual_seed(0)
    pop = 1 / torch.arange(1, n_items + 1).double()
    theta = torch.randn(users, n_items, generator=g, dtype=torch.float64)
    pref = torch.softmax(pop.log() + theta, 1)  # (U, N)
    user = torch.randint(users, (n_rows,), generator=g)
    item = torch.multinomial(pref[user], 1, generator=g).squeeze(1)
    counts = torch.bincount(item, minlength=n_items).double()
    neg = InBatchNegatives(logq=logq, alpha=0.05)
    neg.bind(Catalogue(IdStore(n_items), user, item))
    table = torch.zeros(n_items, users, requires_grad=True)  # score(u, i) = table[i, u]
    opt = torch.optim.Adam([table], lr=0.1)
    loss = ListwiseSoftmaxLoss()
    for _ in range(steps):
        picked = torch.randint(n_rows, (batch_size,), generator=g)
        u, i = user[picked], item[picked]
        batch = {"query_id": torch.arange(batch_size), "doc_id": i}
        c = neg(F.one_hot(u, users).float(), table[i], batch, DOT, None)
        value = loss(c.scores, c.labels, c.mask)
        opt.zero_grad()
        value.backward()
        opt.step()
    return table.detach().T.double(), pref.log(), (counts / counts.sum()).log()


def centred(x):
    return x - x.mean(-1, keepdim=True)


def pearson(a, b):
    """Per-row correlation of ``(U, N)`` tables (``b`` may be ``(N,)``)."""
    a, b = centred(a), centred(b).expand_as(a)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))


def slope(residual, log_pop):
    """Per-row least-squares slope of ``residual`` on ``log_pop``."""
    x = centred(log_pop)
    return (centred(residual) * x).sum(1) / (x * x).sum()


def test_in_batch_softmax_without_logq_penalises_popular_items():
    scores, log_pref, log_pop = simulate(logq=None)
    residual = centred(scores) - centred(log_pref)  # (U, N)
    # Measured: correlation -0.90 to -0.95, slope -0.85 to -0.99: the scores are about
    # log P(i | u) - log p_i, popular items pushed down by their log-frequency.
    assert (pearson(residual, log_pop) < -0.7).all()
    assert -1.25 < slope(residual, log_pop).mean() < -0.7
    assert pearson(scores, log_pref).mean() < 0.8


@pytest.mark.parametrize("logq", ["counted", "streaming"])
def test_logq_scores_track_the_true_preference(logq):
    scores, log_pref, log_pop = simulate(logq=logq)
    residual = centred(scores) - centred(log_pref)
    # Measured: correlation 0.96 to 0.98, residual slope 0.01 to 0.14 (without: about -0.9;
    # with the correction's sign flipped: correlation about 0, slope about -1.9). The slope,
    # not the correlation, measures the trend: the residual left is small and noisy.
    assert (pearson(scores, log_pref) > 0.9).all()
    assert slope(residual, log_pop).mean().abs() < 0.2
    assert (slope(residual, log_pop).abs() < 0.45).all()


def test_history_table_and_sorted_keys_agree(monkeypatch):
    """The dense table (small catalogues) answers as the searchsorted keys do, ids beyond the
    training users included."""
    from twotower.negatives import History

    g = torch.Generator().manual_seed(0)
    users, items = (
        torch.randint(0, 50, (400,), generator=g),
        torch.randint(0, 30, (400,), generator=g),
    )
    cat = Catalogue(IdStore(30), users, items)
    dense = History()
    dense.bind(cat)
    monkeypatch.setattr(History, "DENSE_LIMIT", 0)
    sparse = History()
    sparse.bind(cat)
    assert len(dense.table) and not len(sparse.table)
    query, docs = (
        torch.randint(0, 60, (64,), generator=g),
        torch.randint(0, 30, (64, 9), generator=g),
    )
    assert torch.equal(dense(query, docs), sparse(query, docs))
    assert dense(query, docs).any() and not dense(torch.tensor([55]), docs[:1]).any()
    # columns shared by every row (mined negatives) take the per-row path of the sparse keys
    shared = torch.cat([torch.randint(0, 30, (40,), generator=g), torch.tensor([3, 3, 7])])
    assert torch.equal(dense(query, shared), sparse(query, shared))
    assert dense(query, shared).any() and not sparse(torch.tensor([-1, 55]), shared).any()


def test_history_shared_columns_agree_with_every_pair_tested():
    """The shared-column path equals a test of every (row, column) key, on random histories
    with unknown and negative query ids, repeated columns and queries without positives."""
    from twotower.negatives import History

    g = torch.Generator().manual_seed(1)
    for _ in range(100):
        n_queries, n_docs = (int(torch.randint(1, 40, (1,), generator=g)) for _ in range(2))
        pairs = int(torch.randint(1, 100, (1,), generator=g))
        users = torch.randint(0, n_queries, (pairs,), generator=g)
        items = torch.randint(0, n_docs, (pairs,), generator=g)
        history = History()
        history.bind(Catalogue(IdStore(n_docs), users, items))
        history.table = torch.empty(0, dtype=torch.bool)  # the sorted keys, as large catalogues
        query = torch.randint(
            -1, n_queries + 3, (int(torch.randint(1, 30, (1,), generator=g)),), generator=g
        )
        shared = torch.randint(
            0, n_docs, (int(torch.randint(1, 40, (1,), generator=g)),), generator=g
        )
        keys = query[:, None] * n_docs + shared  # (B, C)
        expected = torch.isin(keys, history.keys) & (query[:, None] >= 0)
        assert torch.equal(history(query, shared), expected)
