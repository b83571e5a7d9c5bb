"""Losses: values worked by hand, masking, invariants, gradients, config validation."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from twotower.errors import ConfigError
from twotower.losses.listwise_softmax import ListwiseSoftmaxLoss
from twotower.losses.pairs import pair_differences
from twotower.losses.pairwise_hinge import PairwiseHingeLoss
from twotower.losses.pairwise_logistic import PairwiseLogisticLoss
from twotower.losses.pointwise import PointwiseLoss

# detect_anomaly is how these tests see a NaN in backward; its warning is expected.
pytestmark = pytest.mark.filterwarnings("ignore:Anomaly Detection has been enabled")

LOSS_CONF = Path(__file__).resolve().parents[1] / "conf" / "loss"
T, F = True, False


def log1pexp(x: float) -> float:
    return math.log(1 + math.exp(x))


def batch(masked_score: float = 9.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """2x3: one positive per row; (0, 2) is masked and labelled relevant, so must be ignored."""
    scores = torch.tensor([[1.0, 0.5, masked_score], [0.0, 2.0, 1.5]], requires_grad=True)
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    mask = torch.tensor([[T, T, F], [T, T, T]])
    return scores, labels, mask


def graded() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Row 0 has labels 2, 1, 0 (P = 2); row 1 has one positive, so one of its slots is filler."""
    scores = torch.tensor([[3.0, 1.0, 2.0], [0.0, 2.0, 1.5]], requires_grad=True)
    labels = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    return scores, labels, torch.ones(2, 3, dtype=torch.bool)


ALL_LOSSES = [
    pytest.param(lambda: PointwiseLoss(), id="pointwise"),
    pytest.param(lambda: PairwiseHingeLoss(margin=5.0), id="hinge"),
    pytest.param(lambda: PairwiseLogisticLoss(sigma=2.0), id="logistic"),
    pytest.param(lambda: ListwiseSoftmaxLoss(), id="listwise"),
]
RANKING_LOSSES = ALL_LOSSES[1:]


# --- values worked by hand ----------------------------------------------------------------


def test_pointwise_by_hand():
    # Valid entries: positives s = 1, 2 -> log(1 + e^-s); negatives s = 0.5, 0, 1.5 -> log(1 + e^s).
    expected = (log1pexp(-1) + log1pexp(0.5) + math.log(2) + log1pexp(-2) + log1pexp(1.5)) / 5
    assert PointwiseLoss()(*batch()).item() == pytest.approx(expected)


def test_pointwise_pos_weight_and_bias_by_hand():
    # Logits s - 1; positives (1, 2) weighted by 3: 3 log(1 + e^0) + 3 log(1 + e^-1);
    # negatives (0.5, 0, 1.5): log(1 + e^-0.5) + log(1 + e^-1) + log(1 + e^0.5).
    loss = PointwiseLoss(pos_weight=3.0, init_bias=-1.0)
    pos = 3 * math.log(2) + 3 * log1pexp(-1)
    neg = log1pexp(-0.5) + log1pexp(-1) + log1pexp(0.5)
    assert loss(*batch()).item() == pytest.approx((pos + neg) / 5)


def test_hinge_by_hand():
    # Pairs (s_p, s_n): (1, 0.5), (2, 0), (2, 1.5); margin 1 -> 0.5, 0, 0.5.
    assert PairwiseHingeLoss(margin=1.0)(*batch()).item() == pytest.approx((0.5 + 0 + 0.5) / 3)


def test_logistic_by_hand():
    # log(1 + exp(sigma (s_n - s_p))) over differences -0.5, -2, -0.5.
    expected = (log1pexp(-0.5) + log1pexp(-2) + log1pexp(-0.5)) / 3
    assert PairwiseLogisticLoss(sigma=1.0)(*batch()).item() == pytest.approx(expected)
    expected = (log1pexp(-1) + log1pexp(-4) + log1pexp(-1)) / 3
    assert PairwiseLogisticLoss(sigma=2.0)(*batch()).item() == pytest.approx(expected)


def test_listwise_by_hand():
    # Row 0 over {1, 0.5}: -log(e^1 / (e^1 + e^0.5)) = log(1 + e^-0.5).
    # Row 1 over {0, 2, 1.5}: -log(e^2 / (e^0 + e^2 + e^1.5)).
    row1 = math.log(1 + math.exp(2) + math.exp(1.5)) - 2
    assert ListwiseSoftmaxLoss()(*batch()).item() == pytest.approx((log1pexp(-0.5) + row1) / 2)


def test_hinge_graded_by_hand():
    # Row 0 pairs (labels 2>1, 2>0, 1>0): 1 - 3 + 1, 1 - 3 + 2, 1 - 1 + 2 -> 0, 0, 2.
    # Row 1 pairs (s_p = 2; s_n = 0, 1.5): 1 - 2 + 0, 1 - 2 + 1.5 -> 0, 0.5.
    assert PairwiseHingeLoss(margin=1.0)(*graded()).item() == pytest.approx((2 + 0.5) / 5)


def test_logistic_graded_by_hand():
    # Same five pairs; s_n - s_p = -2, -1, 1 (row 0) and -2, -0.5 (row 1).
    expected = (log1pexp(-2) + log1pexp(-1) + log1pexp(1) + log1pexp(-2) + log1pexp(-0.5)) / 5
    assert PairwiseLogisticLoss(sigma=1.0)(*graded()).item() == pytest.approx(expected)


def test_listwise_graded_by_hand():
    # Row 0 target (2/3, 1/3, 0), lse = log(e^3 + e^1 + e^2): -(2/3 (3 - lse) + 1/3 (1 - lse)).
    lse = math.log(math.exp(3) + math.exp(1) + math.exp(2))
    row0 = lse - 7 / 3
    row1 = math.log(1 + math.exp(2) + math.exp(1.5)) - 2
    assert ListwiseSoftmaxLoss()(*graded()).item() == pytest.approx((row0 + row1) / 2)


def test_pairs_memory_is_per_positive():
    scores, labels, mask = batch()
    diff, valid = pair_differences(scores, labels, mask)
    assert diff.shape == valid.shape == (2, 1, 3)  # P = 1, not C
    assert pair_differences(*graded())[0].shape == (2, 2, 3)  # P = 2: row 0 has two positives


# --- masking, empty rows, gradients ---------------------------------------------------------


@pytest.mark.parametrize("make_loss", ALL_LOSSES)
@pytest.mark.parametrize("masked_score", [1e4, -1e4, float("inf"), float("-inf")])
def test_masked_candidates_change_nothing(make_loss, masked_score):
    loss = make_loss()
    scores, labels, mask = batch(0.0)
    reference = loss(scores, labels, mask)
    reference.backward()
    scores2, _, _ = batch(masked_score)
    value = loss(scores2, labels, mask)
    value.backward()
    # Bit-equal on purpose: masking replaces the score before any arithmetic, so both runs
    # compute the same kernel on the same inputs (on any CPU).
    assert value.item() == reference.item()
    assert torch.equal(scores2.grad, scores.grad)
    assert scores2.grad[0, 2].item() == 0.0  # exactly zero, not merely small


@pytest.mark.parametrize("make_loss", ALL_LOSSES)
@pytest.mark.parametrize("masked_score", [float("inf"), float("nan")])
def test_masked_candidate_in_a_filler_slot_stays_out(make_loss, masked_score):
    # Row 0 has two positives (P = 2), row 1 one: row 1's second slot is its masked candidate,
    # and an unfilled inf would give inf - inf = NaN in the pair differences.
    labels = torch.tensor([[2.0, 1.0], [1.0, 0.0]])
    mask = torch.tensor([[T, T], [T, F]])
    loss = make_loss()
    grads = []
    for value in (0.0, masked_score):
        scores = torch.tensor([[2.0, 1.0], [1.0, value]], requires_grad=True)
        with torch.autograd.detect_anomaly():  # raises on a NaN anywhere in backward
            result = loss(scores, labels, mask)
            result.backward()
        grads.append((result.item(), scores.grad))
    assert grads[1][0] == grads[0][0] and torch.equal(grads[1][1], grads[0][1])
    assert grads[1][1][1, 1].item() == 0.0


@pytest.mark.parametrize("make_loss", RANKING_LOSSES)
def test_row_without_relevant_candidate_contributes_nothing(make_loss):
    loss = make_loss()
    scores, labels, mask = batch()
    extra = torch.tensor([[5.0, -3.0, 7.0]], requires_grad=True)
    value = loss(
        torch.cat([scores, extra]),
        torch.cat([labels, torch.zeros(1, 3)]),
        torch.cat([mask, torch.ones(1, 3, dtype=torch.bool)]),
    )
    value.backward()
    assert value.item() == pytest.approx(loss(*batch()).item())
    assert torch.equal(extra.grad, torch.zeros(1, 3))


def test_pointwise_row_of_negatives_counts_but_empty_row_does_not():
    # Labelled pairs give rows whose only candidate is a negative: they are the negatives.
    loss = PointwiseLoss()
    ones = torch.ones(1, 1, dtype=torch.bool)
    assert loss(torch.zeros(1, 1), torch.zeros(1, 1), ones).item() == pytest.approx(math.log(2))
    scores, labels, mask = batch()
    extra = torch.tensor([[5.0, -3.0, 7.0]], requires_grad=True)
    value = loss(
        torch.cat([scores, extra]),
        torch.cat([labels, torch.ones(1, 3)]),
        torch.cat([mask, torch.zeros(1, 3, dtype=torch.bool)]),
    )
    value.backward()
    assert value.item() == pytest.approx(loss(*batch()).item())
    assert torch.equal(extra.grad, torch.zeros(1, 3))


def assert_connected_zero(loss, scores, labels, mask):
    with torch.autograd.detect_anomaly():  # a fully masked row must not make NaN in backward
        value = loss(scores, labels, mask)
        value.backward()
    assert value.item() == 0.0
    assert torch.equal(scores.grad, torch.zeros_like(scores))


@pytest.mark.parametrize("make_loss", ALL_LOSSES)
def test_no_valid_candidate_gives_connected_zero(make_loss):
    scores = torch.tensor([[1.0, 2.0], [3.0, float("inf")]], requires_grad=True)
    assert_connected_zero(make_loss(), scores, torch.ones(2, 2), torch.zeros(2, 2, dtype=bool))


@pytest.mark.parametrize("make_loss", RANKING_LOSSES)
def test_no_relevant_candidate_gives_connected_zero(make_loss):
    scores = torch.tensor([[1.0, 2.0], [3.0, float("inf")]], requires_grad=True)
    mask = torch.tensor([[T, T], [T, F]])
    assert_connected_zero(make_loss(), scores, torch.zeros(2, 2), mask)


@pytest.mark.parametrize("make_loss", ALL_LOSSES)
def test_gradient_pushes_positives_up_and_negatives_down(make_loss):
    scores, labels, mask = batch()
    make_loss()(scores, labels, mask).backward()
    relevant = mask & (labels > 0)
    assert (scores.grad[relevant] < 0).all()  # descent raises positive scores
    assert (scores.grad[mask & ~relevant] > 0).all()  # and lowers negative ones


def test_learned_bias_receives_gradient():
    loss = PointwiseLoss(learn_bias=True, init_bias=0.5)
    assert [p.item() for p in loss.parameters()] == [0.5]
    loss(*batch()).backward()
    assert loss.bias.grad is not None and loss.bias.grad.item() != 0.0
    assert list(PointwiseLoss().parameters()) == []


# --- invariants ------------------------------------------------------------------------------


def test_listwise_with_one_negative_equals_pairwise_logistic():
    torch.manual_seed(0)
    scores = torch.randn(8, 2) * 5  # column 0 the positive, column 1 its one negative
    labels = torch.tensor([[1.0, 0.0]]).expand(8, 2)
    mask = torch.ones(8, 2, dtype=torch.bool)
    listwise = ListwiseSoftmaxLoss()(scores, labels, mask)
    torch.testing.assert_close(listwise, PairwiseLogisticLoss(sigma=1.0)(scores, labels, mask))

    gamma, cos = 20.0, torch.rand(8, 2) * 2 - 1
    torch.testing.assert_close(
        ListwiseSoftmaxLoss()(gamma * cos, labels, mask),
        PairwiseLogisticLoss(sigma=gamma)(cos, labels, mask),
    )


# --- config -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "key", "message"),
    [
        (lambda: PairwiseHingeLoss(margin=-1.0), "margin", "margin=-1.0: must be >= 0"),
        (lambda: PairwiseLogisticLoss(sigma=0.0), "sigma", "sigma=0.0: must be > 0"),
        (lambda: PairwiseLogisticLoss(sigma=-1), "sigma", "sigma=-1: must be > 0"),
        (lambda: PointwiseLoss(pos_weight=0.0), "pos_weight", "pos_weight=0.0: must be > 0"),
        (lambda: PointwiseLoss(init_bias=math.inf), "init_bias", "must be finite"),
        (lambda: PointwiseLoss(learn_bias="yes"), "learn_bias", "must be true or false"),
    ],
)
def test_invalid_values_raise_config_error(make, key, message):
    with pytest.raises(ConfigError, match=message) as info:
        make()
    assert info.value.key == key


def test_zero_margin_is_allowed():
    assert PairwiseHingeLoss(margin=0).margin == 0.0


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("pointwise", PointwiseLoss),
        ("pairwise_hinge", PairwiseHingeLoss),
        ("pairwise_logistic", PairwiseLogisticLoss),
        ("listwise_softmax", ListwiseSoftmaxLoss),
    ],
)
def test_yaml_instantiates(name, cls):
    loss = instantiate(OmegaConf.load(LOSS_CONF / f"{name}.yaml"))
    assert type(loss) is cls
    assert loss.needs_negatives_per_row is (cls is not PointwiseLoss)
    assert torch.isfinite(loss(*batch()))


def test_pointwise_balance_weighs_the_classes_equally():
    # BCE at logit 0 is log 2 for either class; at logit x: positive softplus(-x), negative
    # softplus(x). One positive at 2, three negatives at 0: per class means, then their mean.
    scores = torch.tensor([[2.0, 0.0, 0.0, 0.0]])
    labels = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    mask = torch.ones(1, 4, dtype=torch.bool)
    pos, neg = math.log(1 + math.exp(-2.0)), math.log(2.0)
    balanced = PointwiseLoss(balance=True)(scores, labels, mask)
    plain = PointwiseLoss()(scores, labels, mask)
    assert balanced.item() == pytest.approx((pos + neg) / 2)
    assert plain.item() == pytest.approx((pos + 3 * neg) / 4)


def test_symmetric_listwise_softmax_by_hand():
    # rows: -log softmax of the diagonal, log(1 + e^-2) each; columns: log(1 + e^-1) for
    # column 0 (scores 2 and 1) and log(1 + e^-3) for column 1 (scores 0 and 3).
    scores = torch.tensor([[2.0, 0.0], [1.0, 3.0]])
    labels, mask = torch.eye(2), torch.ones(2, 2, dtype=torch.bool)
    rows = math.log(1 + math.exp(-2))
    cols = (math.log(1 + math.exp(-1)) + math.log(1 + math.exp(-3))) / 2
    got = ListwiseSoftmaxLoss(symmetric=True)(scores, labels, mask)
    assert got.item() == pytest.approx((rows + cols) / 2, abs=1e-6)
    # A column relevant to no row (a drawn negative) adds no column term; masked entries
    # drop out of the column softmax as they do from the row one.
    scores3 = torch.cat([scores, torch.tensor([[5.0], [5.0]])], 1)
    labels3 = torch.cat([labels, torch.zeros(2, 1)], 1)
    mask3 = torch.ones(2, 3, dtype=torch.bool)
    mask3[1, 0] = False
    got = ListwiseSoftmaxLoss(symmetric=True)(scores3, labels3, mask3)
    row0 = math.log(math.exp(2) + 1 + math.exp(5)) - 2
    row1 = math.log(math.exp(3) + math.exp(5)) - 3
    col0, col1 = 0.0, math.log(1 + math.exp(-3))  # column 0: only row 0 is valid
    assert got.item() == pytest.approx(((row0 + row1) / 2 + (col0 + col1) / 2) / 2, abs=1e-5)
    with pytest.raises(ConfigError, match="symmetric"):
        ListwiseSoftmaxLoss(symmetric="yes")


def test_one_valid_positive_a_row_takes_class_indices_with_the_same_value():
    from twotower.losses.listwise_softmax import single_positive

    g = torch.Generator().manual_seed(0)
    scores = torch.randn(5, 7, generator=g)
    rows, cols = torch.arange(5), torch.tensor([0, 3, 6, 2, 2])
    labels = torch.zeros(5, 7)
    labels[rows, cols] = torch.tensor([1.0, 2.0, 1.0, 1.0, 3.0])  # grades: still one-hot targets
    mask = torch.rand(5, 7, generator=g) > 0.3
    mask[rows, cols] = True
    log_p = torch.log_softmax(scores.masked_fill(~mask, float("-inf")), dim=1)
    assert torch.equal(single_positive(labels, mask), cols)
    torch.testing.assert_close(
        ListwiseSoftmaxLoss()(scores, labels, mask), -log_p[rows, cols].mean()
    )
    # A masked positive leaves its row without one: the weighted path, which skips the row.
    mask[0, 0] = False
    assert single_positive(labels, mask) is None
    log_p = torch.log_softmax(scores.masked_fill(~mask, float("-inf")), dim=1)
    expected = -log_p[rows[1:], cols[1:]].mean()
    torch.testing.assert_close(ListwiseSoftmaxLoss()(scores, labels, mask), expected)
