"""Categorical encoders: one id per row (the entity's ID, a token feature) -> a vector."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

EMBEDDING_STD = 0.05


def init_embedding(weight: Tensor, padding_idx: int | None = 0) -> None:
    """Small normal rows, the padding row zero.

    Small rows keep a concatenation of many features in the near-linear range of the first
    layer, and still give an ID-only, L2-normalised tower (matrix factorisation) random
    directions to start from.
    """
    nn.init.normal_(weight, std=EMBEDDING_STD)
    if padding_idx is not None:
        with torch.no_grad():
            weight[padding_idx].zero_()


class EmbeddingEncoder(nn.Module):
    """An id -> its row of an embedding table; id 0 (missing) is the zero vector, untrained.

    Args:
        cardinality: Number of ids, including 0.
        dim: Embedding size (:attr:`output_dim`).

    Shapes:
        ids ``(B,)`` long -> ``(B, dim)``.

    Example:
        >>> encoder = EmbeddingEncoder(cardinality=5, dim=3)
        >>> encoder(torch.tensor([0, 4])).shape, encoder(torch.tensor([0])).abs().sum().item()
        (torch.Size([2, 3]), 0.0)
    """

    def __init__(self, cardinality: int, dim: int):
        super().__init__()
        self.output_dim = dim
        self.embedding = nn.Embedding(cardinality, dim, padding_idx=0)
        init_embedding(self.embedding.weight)

    def forward(self, ids: Tensor) -> Tensor:
        return self.embedding(ids)  # (B, dim)


class OneHotEncoder(nn.Module):
    """An id -> its one-hot vector over the ids ``1..cardinality-1``; id 0 is all zeros.

    For features with a handful of values (gender, a rating bucket) the first layer then
    learns one weight column per value directly, with no embedding size to choose.

    Args:
        cardinality: Number of ids, including 0 (:attr:`output_dim` is ``cardinality - 1``).

    Shapes:
        ids ``(B,)`` long -> ``(B, cardinality - 1)``.

    Example:
        >>> OneHotEncoder(cardinality=4)(torch.tensor([2, 0]))
        tensor([[0., 1., 0.],
                [0., 0., 0.]])
    """

    def __init__(self, cardinality: int):
        super().__init__()
        self.cardinality = cardinality
        self.output_dim = cardinality - 1

    def forward(self, ids: Tensor) -> Tensor:
        return F.one_hot(ids, self.cardinality)[:, 1:].float()  # (B, cardinality - 1)
