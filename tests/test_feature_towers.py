"""Feature towers: each encoder's maths by hand, padding, missing values, gradients, configs."""

from __future__ import annotations

import inspect
import math
from pathlib import Path

import hydra
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from twotower.data.components.features import Feature
from twotower.errors import ConfigError
from twotower.towers.cnn import CNNTower
from twotower.towers.features.bag import BagEncoder
from twotower.towers.features.categorical import EmbeddingEncoder, OneHotEncoder
from twotower.towers.features.dcn import CrossNetwork
from twotower.towers.features.numeric import BucketEncoder, FloatEncoder, FloatSeqEncoder
from twotower.towers.features.text import TextEncoder
from twotower.towers.features.tower import FeatureTower
from twotower.towers.lstm import LSTMTower
from twotower.towers.mlp import MLPTower

CONF = Path(__file__).parents[1] / "conf" / "tower"
NAN = float("nan")
SMALL = {"output_dim": 8, "id_dim": 6, "embedding_dim": 4, "text_hidden": 5, "hidden_sizes": [12]}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def make_features() -> list[Feature]:
    """One feature of every kind (a user with an item history)."""
    return [
        Feature("user_id", "id", 11),
        Feature("gender", "token", 3),
        Feature("occupation", "token", 8),
        Feature("age", "float", train_values=torch.tensor([18.0, 25.0, 35.0, 50.0, 61.0])),
        Feature("genre", "token_seq", 6, width=3),
        Feature("weekly", "float_seq", width=3, train_values=torch.tensor([0.0, 2.0, 4.0, 6.0])),
        Feature("history", "history", 21, width=5),
        Feature("title_text", "text", 50),
    ]


def make_batch() -> dict[str, torch.Tensor]:
    """Four users; the last has every feature missing or empty."""
    return {
        "user_id": torch.tensor([1, 2, 3, 4]),
        "gender": torch.tensor([1, 2, 1, 0]),
        "occupation": torch.tensor([3, 7, 1, 0]),
        "age": torch.tensor([20.0, 44.0, 70.0, NAN]),
        "genre": torch.tensor([[1, 2, 0], [5, 0, 0], [3, 4, 5], [0, 0, 0]]),
        "weekly": torch.tensor([[1.0, 3.0, NAN], [5.0, NAN, NAN], [0.0, 0.0, 2.0], [NAN] * 3]),
        "history": torch.tensor(
            [[4, 9, 0, 0, 0], [20, 0, 0, 0, 0], [1, 2, 3, 4, 5], [0, 0, 0, 0, 0]]
        ),
        "title_text": torch.tensor(
            [
                [[5, 6, 0], [7, 0, 0]],
                [[9, 10, 11], [0, 0, 0]],
                [[12, 0, 0], [13, 14, 0]],
                [[0, 0, 0], [0, 0, 0]],
            ]
        ),
    }


def build(**kwargs) -> FeatureTower:
    return FeatureTower(make_features(), **{**SMALL, **kwargs}).eval()


NETWORKS = {
    "mlp": {},
    "mlp-linear": {"hidden_sizes": []},
    "mlp-deep-dropout": {"hidden_sizes": [12, 10], "dropout": 0.1, "activation": "tanh"},
    "dcn": {"network": "dcn"},
    "dcn-low-rank": {"network": "dcn", "cross_rank": 3, "cross_layers": 3},
    "dcn-no-deep": {"network": "dcn", "hidden_sizes": []},
    "none-mf": {"network": "none", "include": [], "output_dim": 6},
    "buckets-log-onehot-auto": {
        "float_transform": "bucketize",
        "float_transforms": {"age": "log1p"},
        "one_hot_max": 3,
        "embedding_dim": "auto",
        "history_pooling": "max",
    },
}


# -- the tower ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(NETWORKS))
def test_output_shape_and_unit_norm(name: str) -> None:
    tower = build(**NETWORKS[name])
    out = tower(make_batch())
    assert out.shape == (4, tower.output_dim) and out.dtype == torch.float32
    assert torch.allclose(out.norm(dim=-1), torch.ones(4), atol=1e-5)


def test_unnormalised_output() -> None:
    out = build(normalize=False)(make_batch())
    assert out.shape == (4, 8) and not torch.allclose(out.norm(dim=-1), torch.ones(4))


def test_input_kinds() -> None:
    assert FeatureTower.input_kind == "features"
    assert MLPTower.input_kind == LSTMTower.input_kind == CNNTower.input_kind == "text"


def test_encoders_follow_the_options() -> None:
    tower = build(
        one_hot_max=3,
        dims={"occupation": 7, "weekly": 2},
        float_transforms={"age": "bucketize"},
        exclude=["title_text"],
    )
    encoders = dict(zip(tower.names, tower.encoders, strict=True))
    assert list(encoders) == [
        "user_id",
        "gender",
        "occupation",
        "age",
        "genre",
        "weekly",
        "history",
    ]
    assert isinstance(encoders["gender"], OneHotEncoder) and encoders["gender"].output_dim == 2
    assert isinstance(encoders["occupation"], EmbeddingEncoder)
    assert encoders["occupation"].output_dim == 7 and encoders["weekly"].output_dim == 2
    assert isinstance(encoders["age"], BucketEncoder) and encoders["age"].output_dim == 4
    assert encoders["user_id"].output_dim == encoders["history"].output_dim == 6
    # A feature named in dims is embedded even under one_hot_max.
    assert isinstance(build(one_hot_max=3, dims={"gender": 5}).encoders[1], EmbeddingEncoder)


def test_include_and_use_id_select_features() -> None:
    assert build(include=["age", "genre"]).names == ["user_id", "age", "genre"]
    assert build(include=["age", "genre"], exclude=["genre"], use_id=False).names == ["age"]


def test_auto_embedding_dim() -> None:
    features = [Feature(name, "token", n) for name, n in [("a", 8), ("b", 16), ("c", 10_000)]]
    tower = FeatureTower(features, use_id=False, embedding_dim="auto", max_embedding_dim=32)
    # round(6 * 8 ** 0.25) = round(10.09); 6 * 16 ** 0.25 = 12; 6 * 10 = 60 is capped at 32.
    assert [e.output_dim for e in tower.encoders] == [10, 12, 32]


def test_cold_start_tower_ignores_the_id() -> None:
    batch = {k: v[[0, 0]] for k, v in make_batch().items()}
    batch["user_id"] = torch.tensor([1, 7])
    out = build(use_id=False)(batch)
    # Two rows of one batch may take different SIMD paths: equal up to rounding, not bits.
    torch.testing.assert_close(out[0], out[1], rtol=1e-6, atol=1e-6)
    out = build()(batch)
    assert not torch.allclose(out[0], out[1])


def test_padding_does_not_change_output() -> None:
    tower = build(network="dcn", history_pooling="max")
    batch = make_batch()
    batch["weekly"][:, 2] = NAN  # the last position is padding in every row
    expected = tower(batch)
    padded = {
        **batch,
        "genre": F.pad(batch["genre"], (0, 4)),
        "history": F.pad(batch["history"], (0, 3)),
        "title_text": F.pad(batch["title_text"], (0, 2, 0, 3)),  # more trigrams and words
        "weekly": batch["weekly"][:, :2],  # float_seq rows shorter than the width are padded
    }
    assert torch.allclose(tower(padded), expected, atol=1e-6)


def test_missing_values_give_finite_output_and_differ_from_the_mean() -> None:
    tower = build(use_id=False, include=["age"], hidden_sizes=[])
    mean = tower.encoders[0].mean.item()
    out = tower({"age": torch.tensor([NAN, mean])})
    assert torch.isfinite(out).all() and not torch.allclose(out[0], out[1])
    everything_missing = {k: v[3:] for k, v in make_batch().items()}
    for kwargs in NETWORKS.values():
        assert torch.isfinite(build(**kwargs)(everything_missing)).all()


@pytest.mark.parametrize("name", ["mlp", "dcn-low-rank", "buckets-log-onehot-auto"])
def test_gradients_reach_every_encoder(name: str) -> None:
    tower = build(**NETWORKS[name]).train()
    batch = make_batch()
    (tower(batch) * torch.randn(4, tower.output_dim)).sum().backward()
    for pname, p in tower.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


def test_state_dict_round_trip_keeps_the_statistics() -> None:
    kwargs = {"float_transforms": {"age": "bucketize"}, "network": "dcn"}
    tower = build(**kwargs)
    state = tower.state_dict()
    assert {"encoders.3.boundaries", "encoders.5.mean", "encoders.5.std"} <= set(state)
    # Other training values (same number of buckets) and another init: the state rules.
    features = make_features()
    features[3] = Feature("age", "float", train_values=torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]))
    features[5] = Feature("weekly", "float_seq", width=3, train_values=torch.tensor([9.0, 1.0]))
    torch.manual_seed(1)
    other = FeatureTower(features, **{**SMALL, **kwargs}).eval()
    assert not torch.allclose(other(make_batch()), tower(make_batch()))
    other.load_state_dict(state)
    torch.testing.assert_close(other(make_batch()), tower(make_batch()), rtol=1e-6, atol=1e-6)


# -- the encoders, by hand ---------------------------------------------------------------------


def test_standardize() -> None:
    encoder = FloatEncoder(torch.tensor([1.0, 2.0, 3.0, 4.0, NAN]))  # NaN is not a statistic
    assert encoder.mean.item() == 2.5 and encoder.std.item() == pytest.approx(math.sqrt(1.25))
    out = encoder(torch.tensor([4.0, NAN, 2.5]))
    expected = torch.tensor([[1.5 / math.sqrt(1.25), 0.0], [0.0, 1.0], [0.0, 0.0]])
    assert torch.allclose(out, expected)


def test_standardize_without_spread_or_values() -> None:
    constant = FloatEncoder(torch.tensor([3.0, 3.0]))
    assert (constant.mean.item(), constant.std.item()) == (3.0, 1.0)
    empty = FloatEncoder(None)
    assert (empty.mean.item(), empty.std.item()) == (0.0, 1.0)


def test_log1p() -> None:
    encoder = FloatEncoder(torch.tensor([0.0, math.e - 1]), log=True)  # log1p: 0, 1
    assert encoder.mean.item() == pytest.approx(0.5) == encoder.std.item()
    out = encoder(torch.tensor([math.e**2 - 1, -5.0, NAN]))  # log1p 2 -> 3; clamped to 0 -> -1
    assert torch.allclose(out, torch.tensor([[3.0, 0.0], [-1.0, 0.0], [0.0, 1.0]]), atol=1e-5)


def test_bucket_boundaries_are_the_quantiles() -> None:
    values = torch.arange(1.0, 11.0)
    encoder = BucketEncoder(values, buckets=4, dim=2)
    # Quantiles 0.25, 0.5, 0.75 of 1..10 at positions 2.25, 4.5, 6.75 of the sorted values.
    assert torch.allclose(encoder.boundaries, torch.tensor([3.25, 5.5, 7.75]))
    assert torch.allclose(
        encoder.boundaries, torch.quantile(values, torch.tensor([0.25, 0.5, 0.75]))
    )
    assert encoder.num_buckets == 4 and encoder.embedding.num_embeddings == 5


def test_bucket_ids_with_duplicate_boundaries_and_missing() -> None:
    encoder = BucketEncoder(torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 2.0]), buckets=4, dim=3)
    assert encoder.boundaries.tolist() == [1.0] and encoder.num_buckets == 2
    out = encoder(torch.tensor([0.5, 1.0, 1.5, 2.0, NAN]))
    assert torch.equal(out, encoder.embedding.weight[[0, 1, 1, 1, 2]])
    nothing = BucketEncoder(None, buckets=4, dim=3)  # no training values: one bucket + missing
    assert nothing.num_buckets == 1
    assert torch.equal(nothing(torch.tensor([5.0, NAN])), nothing.embedding.weight[[0, 1]])


def test_float_seq_standardises_with_global_statistics() -> None:
    encoder = FloatSeqEncoder(torch.tensor([[0.0, 2.0], [4.0, 6.0]]), width=2, dim=4)
    with torch.no_grad():  # read the layer's input back
        encoder.linear.weight.copy_(torch.eye(4))
        encoder.linear.bias.zero_()
    std = math.sqrt(5.0)  # of 0, 2, 4, 6 around 3
    out = encoder(torch.tensor([[8.0, NAN], [NAN, NAN]]))
    assert torch.allclose(out, torch.tensor([[5 / std, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]]))


def test_one_hot_and_embedding() -> None:
    assert OneHotEncoder(4)(torch.tensor([0, 1, 3])).tolist() == [[0, 0, 0], [1, 0, 0], [0, 0, 1]]
    encoder = EmbeddingEncoder(5, 3)
    assert torch.equal(encoder(torch.tensor([2, 0])), encoder.embedding.weight[[2, 0]])
    assert encoder.embedding.weight[0].abs().sum() == 0


def set_rows(bag: BagEncoder) -> torch.Tensor:
    with torch.no_grad():
        bag.bag.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, -2.0], [3.0, 4.0], [-1.0, 6.0]]))
    return torch.tensor([[1, 2, 0, 0], [3, 0, 0, 0], [0, 0, 0, 0], [1, 3, 2, 0]])


@pytest.mark.parametrize(
    "pooling, expected",
    [
        ("mean", [[2.0, 1.0], [-1.0, 6.0], [0.0, 0.0], [1.0, 8 / 3]]),
        ("sum", [[4.0, 2.0], [-1.0, 6.0], [0.0, 0.0], [3.0, 8.0]]),
        ("max", [[3.0, 4.0], [-1.0, 6.0], [0.0, 0.0], [3.0, 6.0]]),
    ],
)
def test_bag_pooling_ignores_padding(pooling: str, expected: list) -> None:
    bag = BagEncoder(4, 2, pooling)
    ids = set_rows(bag)
    assert torch.allclose(bag(ids), torch.tensor(expected))


def test_text_encoder_is_the_dssm_tower() -> None:
    encoder = TextEncoder(50, 5)
    assert isinstance(encoder, MLPTower) and encoder.output_dim == 5 and not encoder.normalize
    assert encoder.bag.embedding_dim == 5
    out = encoder(make_batch()["title_text"])
    assert out.shape == (4, 5) and out.abs().max() <= 1


def test_cross_layers_follow_the_dcn_v2_formula() -> None:
    net = CrossNetwork(3, num_layers=2)
    x0 = torch.tensor([[1.0, -2.0, 0.5]])
    x = x0
    for layer in net.layers:
        x = x0 * (x @ layer.weight.T + layer.bias) + x
    assert torch.allclose(net(x0), x)
    with torch.no_grad():  # W = 0, b = 1: x1 = x0 * 1 + x0 = 2 x0, x2 = x0 * 1 + x1 = 3 x0
        for layer in net.layers:
            layer.weight.zero_()
            layer.bias.fill_(1.0)
    assert torch.allclose(net(x0), 3 * x0)


def test_low_rank_cross_layer_is_u_v_transpose() -> None:
    low = CrossNetwork(4, num_layers=1, rank=2)
    full = CrossNetwork(4, num_layers=1)
    v, u = low.layers[0]
    with torch.no_grad():
        full.layers[0].weight.copy_(u.weight @ v.weight)  # (4, 2) @ (2, 4)
        full.layers[0].bias.copy_(u.bias)
    x0 = torch.randn(3, 4)
    assert torch.allclose(low(x0), full(x0), atol=1e-6)
    assert sum(p.numel() for p in low.parameters()) == 2 * 4 * 2 + 4


# -- config errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, key, message",
    [
        ({"output_dim": 0}, "output_dim", ">= 1"),
        ({"normalize": "yes"}, "normalize", "true or false"),
        ({"use_id": 1}, "use_id", "true or false"),
        ({"id_dim": 0}, "id_dim", ">= 1"),
        ({"embedding_dim": "big"}, "embedding_dim", "or auto"),
        ({"embedding_dim": 0}, "embedding_dim", "or auto"),
        ({"max_embedding_dim": 0}, "max_embedding_dim", ">= 1"),
        ({"one_hot_max": -1}, "one_hot_max", ">= 0"),
        ({"float_transform": "sqrt"}, "float_transform", "standardize, log1p, bucketize"),
        ({"buckets": 1}, "buckets", ">= 2"),
        ({"history_pooling": "median"}, "history_pooling", "mean, sum, max"),
        ({"text_hidden": 0}, "text_hidden", ">= 1"),
        ({"network": "transformer"}, "network", "mlp, dcn, none"),
        ({"hidden_sizes": [8, 0]}, "hidden_sizes", "positive integers"),
        ({"hidden_sizes": 8}, "hidden_sizes", "positive integers"),
        ({"activation": "swish"}, "activation", "tanh, relu, gelu"),
        ({"dropout": 1.0}, "dropout", "[0, 1)"),
        ({"cross_layers": 0}, "cross_layers", ">= 1"),
        ({"cross_rank": 0}, "cross_rank", ">= 1"),
        ({"include": ["genres"]}, "include", "'genres'; available: gender, occupation, age"),
        ({"include": "genre"}, "include", "list of feature names"),
        ({"include": ["user_id"]}, "include", "the id feature, chosen by use_id"),
        ({"exclude": ["nope"]}, "exclude", "unknown feature 'nope'; available: gender"),
        ({"dims": {"nope": 3}}, "dims", "'nope' is not one of the features"),
        ({"dims": {"age": 3}}, "dims", "gender, occupation, genre, weekly"),
        ({"dims": [3]}, "dims", "mapping"),
        ({"dims": {"genre": 0}}, "dims.genre", ">= 1"),
        ({"float_transforms": {"genre": "log1p"}}, "float_transforms", "applies to: age"),
        ({"float_transforms": {"age": "sqrt"}}, "float_transforms.age", "standardize"),
        ({"network": "none"}, "output_dim", "must equal the size of the concatenated features"),
        ({"use_id": False, "include": []}, "include", "selects no feature"),
    ],
)
def test_invalid_config_names_the_key(kwargs: dict, key: str, message: str) -> None:
    with pytest.raises(ConfigError, match=f"^{key}=") as info:
        build(**kwargs)
    assert info.value.key == key and message in str(info.value)


def test_network_none_lists_the_sizes() -> None:
    with pytest.raises(ConfigError) as info:
        build(network="none", include=["age"], output_dim=6)
    assert str(info.value).endswith("8 (user_id 6, age 2)")


def test_use_id_without_an_id_feature() -> None:
    with pytest.raises(ConfigError, match="^use_id=True: no feature of kind id among age"):
        FeatureTower([Feature("age", "float", train_values=torch.tensor([1.0]))])


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"float_transform": "log1p"}, "float_transform"),
        ({"float_transforms": {"balance": "log1p"}}, "float_transforms.balance"),
    ],
)
def test_log1p_of_negative_training_values(kwargs: dict, key: str) -> None:
    features = [
        Feature("balance", "float", train_values=torch.tensor([-3.0, 5.0])),
        Feature("age", "float", train_values=torch.tensor([1.0, 5.0])),
    ]
    with pytest.raises(ConfigError, match=f"^{key}='log1p': feature 'balance'.*min -3"):
        FeatureTower(features, use_id=False, **kwargs)
    # Leaving the feature out (or transforming it otherwise) is fine.
    FeatureTower(features, use_id=False, exclude=["balance"], **kwargs)


# -- YAML files --------------------------------------------------------------------------------


def test_features_yaml_lists_every_argument_with_its_default() -> None:
    cfg = OmegaConf.load(CONF / "features.yaml")
    params = inspect.signature(FeatureTower).parameters
    defaults = {k: p.default for k, p in params.items() if k != "features"}
    defaults.update(
        dims=defaults["dims"] or {}, float_transforms=defaults["float_transforms"] or {}
    )
    yaml = OmegaConf.to_container(cfg)
    assert yaml.pop("_target_") == "twotower.towers.features.tower.FeatureTower"
    assert yaml == {k: list(v) if isinstance(v, tuple) else v for k, v in defaults.items()}


def test_features_yaml_builds_and_runs() -> None:
    tower = hydra.utils.instantiate(
        OmegaConf.load(CONF / "features.yaml"), features=make_features()
    )
    out = tower(make_batch())
    assert out.shape == (4, 64) and torch.isfinite(out).all()
    assert len(tower.encoders) == len(make_features())


def test_id_yaml_is_matrix_factorisation() -> None:
    tower = hydra.utils.instantiate(OmegaConf.load(CONF / "id.yaml"), features=make_features())
    assert tower.names == ["user_id"] and isinstance(tower.network, nn.Identity)
    ids = torch.tensor([3, 5])
    expected = F.normalize(tower.encoders[0].embedding.weight[ids], dim=-1)
    torch.testing.assert_close(tower({"user_id": ids}), expected, rtol=1e-6, atol=1e-6)
