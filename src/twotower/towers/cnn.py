"""CDSSM tower: convolution over word windows, max pooling over time."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from twotower.towers.base import (
    ACTIVATIONS,
    WordEmbedding,
    check_activation,
    check_common,
    check_dropout,
    check_flag,
    check_size,
    check_sizes,
    dense,
    masked_max,
    maybe_normalize,
)


class CNNTower(nn.Module):
    """Hashed words -> one convolution per window size -> max over time -> linear.

    Each convolution is "full" (padded by ``k - 1`` on both sides), so a text shorter than
    the window still yields features; max pooling only sees windows that contain at least
    one present word.

    Args:
        vocab_size: Number of token ids, including pad (0) and unknown (1).
        output_dim: Size of the output vector (128 in the paper).
        normalize: L2-normalise the output.
        embed_dim: Size of a word vector (the sum of its sub-word token embeddings).
        num_filters: Feature maps per window size (300 in the paper).
        kernel_sizes: Window sizes in words (the paper uses one, 3).
        activation: ``tanh`` (the paper), ``relu`` or ``gelu``, applied to the feature maps.
        dropout: Dropout on the pooled features.
        output_activation: Apply tanh to the output (the paper's semantic layer).

    Shapes:
        tokens ``(B, W, T)`` -> ``(B, output_dim)``.

    References:
        Shen et al. 2014, "A Latent Semantic Model with Convolutional-Pooling Structure for
        Information Retrieval", CIKM.

    Example:
        >>> tower = CNNTower(vocab_size=100, embed_dim=8, num_filters=6, output_dim=4)
        >>> tower(torch.randint(0, 100, (3, 5, 2))).shape
        torch.Size([3, 4])
    """

    input_kind = "text"

    def __init__(
        self,
        vocab_size: int,
        *,
        output_dim: int = 128,
        normalize: bool = False,
        embed_dim: int = 128,
        num_filters: int = 128,
        kernel_sizes: Sequence[int] = (1, 2, 3),
        activation: str = "tanh",
        dropout: float = 0.0,
        output_activation: bool = False,
    ):
        super().__init__()
        check_common(vocab_size, output_dim, normalize)
        check_size("embed_dim", embed_dim)
        check_size("num_filters", num_filters)
        kernel_sizes = check_sizes("kernel_sizes", kernel_sizes)
        check_activation("activation", activation)
        check_dropout("dropout", dropout)
        check_flag("output_activation", output_activation)
        self.output_dim, self.normalize = output_dim, normalize

        self.embed = WordEmbedding(vocab_size, embed_dim)
        self.convs = nn.ModuleList(
            nn.Conv1d(embed_dim, num_filters, k, padding=k - 1) for k in kernel_sizes
        )
        self.activation = ACTIVATIONS[activation]()
        out_activation = "tanh" if output_activation else None
        self.out = dense(num_filters * len(kernel_sizes), output_dim, out_activation, dropout)

    def forward(self, tokens: Tensor) -> Tensor:
        words, mask = self.embed(tokens)  # (B, W, E), (B, W)
        lengths = mask.sum(1, keepdim=True)  # (B, 1); words are left-aligned
        x = words.transpose(1, 2)  # (B, E, W)
        pooled = []
        for conv in self.convs:
            k = conv.kernel_size[0]
            maps = self.activation(conv(x)).transpose(1, 2)  # (B, W + k - 1, F)
            # Window j covers words j-k+1..j: it sees a present word iff j < length + k - 1.
            j = torch.arange(maps.shape[1], device=tokens.device)
            valid = (j < lengths + k - 1) & (lengths > 0)  # (B, W + k - 1)
            pooled.append(masked_max(maps, valid))  # (B, F)
        out = self.out(torch.cat(pooled, dim=-1))  # (B, output_dim)
        return maybe_normalize(out, self.normalize)
