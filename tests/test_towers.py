"""Towers: shapes, padding invariance, empty texts, gradients, config checks and YAML files."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

import hydra
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from tests.configs import TEXT_TOWERS
from twotower.errors import ConfigError
from twotower.towers.cnn import CNNTower
from twotower.towers.lstm import LSTMTower
from twotower.towers.mlp import MLPTower

VOCAB, OUT = 30, 6
CONF = Path(__file__).parents[1] / "conf" / "tower"

TOWERS: dict[str, Callable[..., nn.Module]] = {
    **{
        f"mlp-{mode}-{act}": lambda mode=mode, act=act, **kw: MLPTower(
            VOCAB, output_dim=OUT, hidden_sizes=[10, 8], bag_mode=mode, activation=act, **kw
        )
        for mode in ("sum", "mean")
        for act in ("tanh", "relu", "gelu")
    },
    **{
        f"lstm-{pool}-{'bi' if bi else 'uni'}": lambda pool=pool, bi=bi, **kw: LSTMTower(
            VOCAB, output_dim=OUT, embed_dim=8, hidden_size=5, bidirectional=bi, pooling=pool, **kw
        )
        for pool in ("last", "mean", "max", "attention")
        for bi in (True, False)
    },
    "lstm-last-2layers": lambda **kw: LSTMTower(
        VOCAB, output_dim=OUT, embed_dim=8, hidden_size=5, num_layers=2, pooling="last", **kw
    ),
    "cnn-k3": lambda **kw: CNNTower(
        VOCAB, output_dim=OUT, embed_dim=8, num_filters=7, kernel_sizes=[3], **kw
    ),
    "cnn-k124": lambda **kw: CNNTower(
        VOCAB, output_dim=OUT, embed_dim=8, num_filters=7, kernel_sizes=[1, 2, 4], **kw
    ),
    # Every text tower of conf/tower as its YAML builds it: a new tower is tested as it lands.
    **{
        f"yaml-{option}": lambda option=option, **kw: hydra.utils.instantiate(
            OmegaConf.load(CONF / f"{option}.yaml"), vocab_size=VOCAB, **{"output_dim": OUT, **kw}
        )
        for option in TEXT_TOWERS
    },
}
each_tower = pytest.mark.parametrize("name", list(TOWERS))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def make_tokens(word_counts: list[int], W: int, T: int, seed: int = 0) -> torch.Tensor:
    """Left-aligned ``(B, W, T)`` ids: text b has ``word_counts[b]`` words of 1..T ids each."""
    g = torch.Generator().manual_seed(seed)
    B = len(word_counts)
    ids = torch.randint(1, VOCAB, (B, W, T), generator=g)  # 1 = unknown is a real token
    ids_per_word = torch.randint(1, T + 1, (B, W, 1), generator=g)
    present = torch.arange(W)[None, :, None] < torch.tensor(word_counts)[:, None, None]
    return ids * (torch.arange(T) < ids_per_word) * present


def build(name: str, **kw) -> nn.Module:
    return TOWERS[name](**kw).eval()


@each_tower
def test_output_shape(name: str) -> None:
    out = build(name)(make_tokens([3, 1, 5, 0], W=5, T=3))
    assert out.shape == (4, OUT) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


@each_tower
def test_padding_does_not_change_output(name: str) -> None:
    tower = build(name)
    tokens = make_tokens([4, 1, 2, 0], W=4, T=3)
    padded = F.pad(tokens, (0, 2, 0, 3))  # 2 more ids per word, 3 more pad words
    torch.testing.assert_close(tower(padded), tower(tokens), atol=1e-6, rtol=0)


@each_tower
def test_same_text_in_another_batch(name: str) -> None:
    tower = build(name)
    batch = make_tokens([2, 6, 1, 0], W=6, T=3)
    for b, n in enumerate([2, 6, 1]):
        alone = batch[b : b + 1, :n]  # no pad words at all: nothing to mask
        torch.testing.assert_close(tower(batch)[b], tower(alone)[0], atol=1e-6, rtol=0)


@each_tower
def test_empty_texts_are_finite(name: str) -> None:
    tower = build(name)
    assert torch.isfinite(tower(torch.zeros(3, 4, 2, dtype=torch.long))).all()
    assert torch.isfinite(tower(torch.zeros(2, 1, 1, dtype=torch.long))).all()


@each_tower
def test_gradients_reach_every_parameter(name: str) -> None:
    tower = TOWERS[name]().train()
    tower(make_tokens([3, 1, 4, 0], W=4, T=3)).sum().backward()
    for pname, p in tower.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname
    bags = [m for m in tower.modules() if isinstance(m, nn.EmbeddingBag)]
    assert bags and all(bag.weight.grad[0].abs().sum() == 0 for bag in bags)  # the pad row


@each_tower
def test_normalize_gives_unit_vectors(name: str) -> None:
    out = build(name, normalize=True)(make_tokens([3, 1, 5], W=5, T=3))
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(3))


@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_mlp_bag_layer_is_multi_hot_times_weight(mode: str) -> None:
    tower = MLPTower(VOCAB, hidden_sizes=[4], output_dim=3, bag_mode=mode).eval()
    tokens = torch.tensor([[[2, 3, 0], [2, 0, 0], [0, 0, 0]]])  # ids 2, 3, 2
    counts = torch.zeros(1, VOCAB).index_add_(1, torch.tensor([2, 3, 2]), torch.ones(1, 3))
    h = counts @ tower.bag.weight / (3 if mode == "mean" else 1) + tower.bag_bias  # (1, 4)
    output_layer = tower.layers[-1][1]  # dropout, linear, tanh
    expected = torch.tanh(output_layer(torch.tanh(h)))
    torch.testing.assert_close(tower(tokens), expected)


@pytest.mark.parametrize("tower", [MLPTower, CNNTower])
def test_output_activation_is_tanh_even_for_relu(tower: type) -> None:
    out = tower(VOCAB, activation="relu", output_activation=True)(make_tokens([3, 1], W=3, T=2))
    assert out.abs().max() < 1 and out.min() < 0  # relu would leave no negative values


def test_lstm_last_joins_forward_end_and_backward_start() -> None:
    tower = TOWERS["lstm-last-2layers"]().eval()
    tokens = make_tokens([4, 2], W=4, T=2)
    words, _ = tower.embed(tokens[1:, :2])  # the second text without its pad words
    states, _ = tower.lstm(words)  # (1, 2, 10): the top layer's states
    last = torch.cat([states[0, -1, :5], states[0, 0, 5:]])  # forward at word 2, backward at 1
    torch.testing.assert_close(tower(tokens)[1], tower.out(last))


def test_cnn_pools_every_window_of_an_unpadded_text() -> None:
    tower = CNNTower(VOCAB, embed_dim=8, num_filters=7, kernel_sizes=[1, 3], output_dim=3).eval()
    tokens = make_tokens([5, 2], W=5, T=2)
    words, _ = tower.embed(tokens[1:, :2])  # the second text without its pad words
    x = words.transpose(1, 2)  # (1, 8, 2)
    pooled = torch.cat([torch.tanh(conv(x)).amax(-1) for conv in tower.convs], dim=-1)  # (1, 14)
    torch.testing.assert_close(tower(tokens)[1:], tower.out(pooled))


@pytest.mark.parametrize("name", [n for n in TOWERS if n.startswith(("lstm", "cnn"))])
def test_empty_text_is_the_projection_of_zeros(name: str) -> None:
    tower = build(name)
    out = tower(make_tokens([0, 3], W=3, T=2))
    torch.testing.assert_close(out[0], tower.out(torch.zeros(tower.out[1].in_features)))


@pytest.mark.parametrize(
    ("tower", "kwargs", "key"),
    [
        (MLPTower, {"hidden_sizes": [300, 0]}, "hidden_sizes"),
        (MLPTower, {"hidden_sizes": []}, "hidden_sizes"),
        (MLPTower, {"activation": "sigmoid"}, "activation"),
        (MLPTower, {"bag_mode": "max"}, "bag_mode"),
        (MLPTower, {"dropout": 1.5}, "dropout"),
        (MLPTower, {"output_dim": 0}, "output_dim"),
        (MLPTower, {"output_activation": "yes"}, "output_activation"),
        (LSTMTower, {"pooling": "median"}, "pooling"),
        (LSTMTower, {"hidden_size": 0}, "hidden_size"),
        (LSTMTower, {"num_layers": 1.5}, "num_layers"),
        (LSTMTower, {"dropout": 1.5}, "dropout"),
        (LSTMTower, {"output_dim": 0}, "output_dim"),
        (CNNTower, {"kernel_sizes": [3, 0]}, "kernel_sizes"),
        (CNNTower, {"num_filters": 0}, "num_filters"),
        (CNNTower, {"activation": "sigmoid"}, "activation"),
        (CNNTower, {"dropout": 1.5}, "dropout"),
        (CNNTower, {"output_dim": 0}, "output_dim"),
        (CNNTower, {"normalize": "yes"}, "normalize"),
        (CNNTower, {"vocab_size": 1}, "vocab_size"),
    ],
)
def test_invalid_config_names_the_key(tower: type, kwargs: dict, key: str) -> None:
    kwargs = {"vocab_size": VOCAB, **kwargs}
    with pytest.raises(ConfigError, match=f"^{key}=") as info:
        tower(kwargs.pop("vocab_size"), **kwargs)
    assert info.value.key == key


@pytest.mark.parametrize("option", TEXT_TOWERS)
def test_yaml_lists_every_argument_with_its_default(option: str) -> None:
    cfg = OmegaConf.load(CONF / f"{option}.yaml")
    tower = hydra.utils.get_class(cfg._target_)
    params = inspect.signature(tower).parameters
    defaults = {k: p.default for k, p in params.items() if k != "vocab_size"}
    assert cfg._target_ == f"{tower.__module__}.{tower.__name__}"
    yaml = OmegaConf.to_container(cfg)
    yaml.pop("_target_")
    assert yaml == {k: list(v) if isinstance(v, tuple) else v for k, v in defaults.items()}


@pytest.mark.parametrize("option", TEXT_TOWERS)
def test_yaml_instantiates_and_runs(option: str) -> None:
    tower = hydra.utils.instantiate(OmegaConf.load(CONF / f"{option}.yaml"), vocab_size=50)
    out = tower(make_tokens([3, 0], W=4, T=2))
    assert out.shape == (2, tower.output_dim) == (2, 128)
