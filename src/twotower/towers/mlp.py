"""DSSM tower: a multi-layer perceptron over the bag of a text's sub-word tokens."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch
from torch import Tensor, nn

from twotower.errors import check_choice
from twotower.towers.base import (
    ACTIVATIONS,
    check_activation,
    check_common,
    check_dropout,
    check_flag,
    check_sizes,
    dense,
    maybe_normalize,
    present_bags,
)


class MLPTower(nn.Module):
    """Bag of all tokens of a text -> hidden layers -> ``output_dim`` (the DSSM projection).

    The first layer is the paper's sparse multi-hot input times a weight matrix, computed as
    an ``nn.EmbeddingBag`` over the ids (pads are skipped and not counted by ``"mean"``), so
    the cost grows with the number of tokens, not with ``vocab_size``. Word order is ignored.

    Args:
        vocab_size: Number of token ids, including pad (0) and unknown (1).
        output_dim: Size of the output vector (128 in the paper).
        normalize: L2-normalise the output.
        hidden_sizes: Hidden layer sizes; the first is the bag layer ([300, 300] in the paper).
        activation: ``tanh`` (the paper), ``relu`` or ``gelu``.
        dropout: Dropout on the input of every dense layer after the bag layer.
        bag_mode: ``sum`` (multi-hot counts, the paper) or ``mean`` (counts / text length).
        output_activation: Apply tanh to the output, as the paper does (tanh rather than
            ``activation``, so a relu tower still has signed outputs).

    Shapes:
        tokens ``(B, W, T)`` -> ``(B, output_dim)``.

    References:
        Huang et al. 2013, "Learning Deep Structured Semantic Models for Web Search using
        Clickthrough Data", CIKM.

    Example:
        >>> tower = MLPTower(vocab_size=100, hidden_sizes=[16], output_dim=8)
        >>> tower(torch.randint(0, 100, (4, 6, 3))).shape
        torch.Size([4, 8])
    """

    input_kind = "text"

    def __init__(
        self,
        vocab_size: int,
        *,
        output_dim: int = 128,
        normalize: bool = False,
        hidden_sizes: Sequence[int] = (300, 300),
        activation: str = "tanh",
        dropout: float = 0.0,
        bag_mode: str = "sum",
        output_activation: bool = True,
    ):
        super().__init__()
        check_common(vocab_size, output_dim, normalize)
        hidden_sizes = check_sizes("hidden_sizes", hidden_sizes)
        check_activation("activation", activation)
        check_dropout("dropout", dropout)
        check_choice("bag_mode", bag_mode, ("sum", "mean"))
        check_flag("output_activation", output_activation)
        self.output_dim, self.normalize = output_dim, normalize

        self.bag = nn.EmbeddingBag(vocab_size, hidden_sizes[0], mode=bag_mode, padding_idx=0)
        # The paper's uniform (Xavier) init of the dense layer this bag replaces; N(0, 1) rows
        # summed over a text's tokens would saturate tanh.
        nn.init.xavier_uniform_(self.bag.weight)
        with torch.no_grad():
            self.bag.weight[0].zero_()
        self.bag_bias = nn.Parameter(torch.zeros(hidden_sizes[0]))
        self.bag_activation = ACTIVATIONS[activation]()
        out_activation = "tanh" if output_activation else None
        self.layers = nn.Sequential(
            *(dense(i, o, activation, dropout) for i, o in pairwise(hidden_sizes)),
            dense(hidden_sizes[-1], output_dim, out_activation, dropout),
        )

    def forward(self, tokens: Tensor) -> Tensor:
        B = tokens.shape[0]
        h = present_bags(self.bag, tokens.reshape(B, -1)) + self.bag_bias  # (B, hidden_sizes[0])
        out = self.layers(self.bag_activation(h))  # (B, output_dim)
        return maybe_normalize(out, self.normalize)
