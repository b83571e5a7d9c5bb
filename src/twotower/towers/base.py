"""What the towers share: config checks, word hashing, masked pooling and dense layers.

Every tower maps ``tokens`` of shape ``(B, W, T)`` to ``(B, output_dim)``: B texts, W words,
T sub-word ids per word (letter trigrams; T == 1 for word or character tokens). Id 0 is
padding, 1 unknown. Words and the ids inside a word are left-aligned; a word is present iff
any of its ids is nonzero, and a text may have no words at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from twotower.errors import check, check_choice

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU}


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_size(key: str, value: Any, *, minimum: int = 1) -> None:
    """Raise ConfigError unless ``value`` is an integer >= ``minimum``."""
    check(is_int(value) and value >= minimum, key, value, f"must be an integer >= {minimum}")


def check_sizes(key: str, value: Any) -> list[int]:
    """Return ``value`` as a list; raise ConfigError unless it is a non-empty list of ints > 0."""
    ok = isinstance(value, Sequence) and not isinstance(value, str) and len(value) > 0
    ok = ok and all(is_int(v) and v > 0 for v in value)
    check(ok, key, value, "must be a non-empty list of positive integers")
    return list(value)


def check_dropout(key: str, value: Any) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 1
    check(ok, key, value, "must be a number in [0, 1)")


def check_flag(key: str, value: Any) -> None:
    check(isinstance(value, bool), key, value, "must be true or false")


def check_common(vocab_size: Any, output_dim: Any, normalize: Any) -> None:
    """Check the arguments every tower takes."""
    check_size("vocab_size", vocab_size, minimum=2)  # pad and unknown are reserved
    check_size("output_dim", output_dim)
    check_flag("normalize", normalize)


def check_activation(key: str, value: Any) -> None:
    check_choice(key, value, tuple(ACTIVATIONS))


def dense(in_dim: int, out_dim: int, activation: str | None, dropout: float) -> nn.Sequential:
    """One fully connected layer: dropout on its input -> linear -> optional activation."""
    layers = [nn.Dropout(dropout), nn.Linear(in_dim, out_dim)]
    if activation is not None:
        layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


def maybe_normalize(x: Tensor, normalize: bool) -> Tensor:
    # F.normalize clamps the norm, so a zero vector stays zero instead of becoming NaN.
    return F.normalize(x, dim=-1) if normalize else x


class WordEmbedding(nn.Module):
    """Word hashing layer: a word's vector is the sum of its sub-word token embeddings.

    Pad ids add nothing and get no gradient, so a pad word is the zero vector.

    Shapes:
        tokens ``(B, W, T)`` -> words ``(B, W, dim)``, mask ``(B, W)`` (True for present words).
    """

    def __init__(self, vocab_size: int, dim: int):
        super().__init__()
        self.bag = nn.EmbeddingBag(vocab_size, dim, mode="sum", padding_idx=0)
        # N(0, 1) rows summed over a word's trigrams would saturate tanh; keep a word's
        # vector at about unit norm per sub-word token instead.
        nn.init.normal_(self.bag.weight, std=dim**-0.5)
        with torch.no_grad():
            self.bag.weight[0].zero_()

    def forward(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        B, W, T = tokens.shape
        words = present_bags(self.bag, tokens.reshape(B * W, T)).view(B, W, -1)  # (B, W, dim)
        return words, tokens.ne(0).any(-1)


def present_bags(bag: nn.EmbeddingBag, ids: Tensor) -> Tensor:
    """``bag`` over each row of ``ids`` ``(N, L)`` (0 = padding) -> ``(N, dim)``, pads dropped.

    The flat ids with offsets skip the pads before the lookup: passed as a padded 2-D tensor,
    EmbeddingBag looks up, sorts and scatters every pad in backward (most of a text batch's
    slots: 89% of GCIDE's definitions padded to the batch's longest). Empty rows give zeros.
    """
    present = ids != 0  # (N, L)
    counts = present.sum(1)  # (N,)
    # No padding_idx: no pad is left to skip, and its bookkeeping made the backward 1.5x
    # slower (GCIDE definitions, AMD EPYC). Row 0 still gets no gradient: it is never used.
    return F.embedding_bag(
        ids[present],
        bag.weight,
        counts.cumsum(0) - counts,
        max_norm=bag.max_norm,
        norm_type=bag.norm_type,
        scale_grad_by_freq=bag.scale_grad_by_freq,
        mode=bag.mode,
        sparse=bag.sparse,
    )  # (N, dim)


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``x (B, L, D)`` over positions where ``mask (B, L)`` is True; zeros if none."""
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp(min=1)  # (B, D)


def masked_max(x: Tensor, mask: Tensor) -> Tensor:
    """Max of ``x (B, L, D)`` over positions where ``mask (B, L)`` is True; zeros if none."""
    x = x.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(1)  # (B, D)
    # Rows with no position are -inf; masked_fill (not a product) keeps their gradient finite.
    return x.masked_fill(~mask.any(1, keepdim=True), 0.0)
