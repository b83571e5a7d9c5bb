"""LSTM-DSSM tower: an LSTM over the hashed words of a text, pooled to one vector."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from twotower.errors import check_choice
from twotower.towers.base import (
    WordEmbedding,
    check_common,
    check_dropout,
    check_flag,
    check_size,
    dense,
    masked_max,
    masked_mean,
    maybe_normalize,
)

POOLINGS = ("last", "mean", "max", "attention")


class AdditiveAttention(nn.Module):
    """Bahdanau-style pooling: ``score_t = v^T tanh(W h_t + b)``, softmax over present words.

    Shapes:
        x ``(B, L, D)``, mask ``(B, L)`` -> ``(B, D)``; zeros where a row has no word.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, 1, bias=False)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        scores = self.v(torch.tanh(self.proj(x))).squeeze(-1)  # (B, L)
        # A finite fill (not -inf) keeps rows without words free of NaN; multiplying by the
        # mask then gives them zero weight everywhere.
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=1) * mask  # (B, L)
        return torch.einsum("bl,bld->bd", weights, x)  # (B, D)


class LSTMTower(nn.Module):
    """Hashed words -> (bi)LSTM -> pooling over words -> linear to ``output_dim``.

    Args:
        vocab_size: Number of token ids, including pad (0) and unknown (1).
        output_dim: Size of the output vector.
        normalize: L2-normalise the output.
        embed_dim: Size of a word vector (the sum of its sub-word token embeddings).
        hidden_size: LSTM hidden size per direction.
        num_layers: Stacked LSTM layers.
        bidirectional: Run a backward LSTM too and concatenate both directions.
        dropout: Dropout between LSTM layers and on the pooled vector.
        pooling: ``last`` (final state of each direction, the paper), ``mean`` or ``max`` over
            present words, or ``attention`` (additive attention over present words).

    Shapes:
        tokens ``(B, W, T)`` -> ``(B, output_dim)``.

    References:
        Palangi et al. 2016, "Deep Sentence Embedding Using Long Short-Term Memory Networks",
        IEEE/ACM TASLP.

    Example:
        >>> tower = LSTMTower(vocab_size=100, embed_dim=8, hidden_size=8, output_dim=4)
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
        hidden_size: int = 128,
        num_layers: int = 1,
        bidirectional: bool = True,
        dropout: float = 0.0,
        pooling: str = "attention",
    ):
        super().__init__()
        check_common(vocab_size, output_dim, normalize)
        check_size("embed_dim", embed_dim)
        check_size("hidden_size", hidden_size)
        check_size("num_layers", num_layers)
        check_flag("bidirectional", bidirectional)
        check_dropout("dropout", dropout)
        check_choice("pooling", pooling, POOLINGS)
        self.output_dim, self.normalize, self.pooling = output_dim, normalize, pooling

        self.embed = WordEmbedding(vocab_size, embed_dim)
        self.lstm = nn.LSTM(
            embed_dim,
            hidden_size,
            num_layers=num_layers,
            bidirectional=bidirectional,
            # nn.LSTM only drops between layers (and warns when there is one layer).
            dropout=dropout if num_layers > 1 else 0.0,
            batch_first=True,
        )
        pooled_dim = hidden_size * (2 if bidirectional else 1)
        self.attention = AdditiveAttention(pooled_dim) if pooling == "attention" else None
        self.out = dense(pooled_dim, output_dim, None, dropout)

    def forward(self, tokens: Tensor) -> Tensor:
        B, W, _ = tokens.shape
        words, mask = self.embed(tokens)  # (B, W, E), (B, W)
        lengths = mask.sum(1)  # words are left-aligned
        # An empty text runs over one pad word (a zero vector); pooling then ignores it.
        packed = pack_padded_sequence(
            words, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False
        )
        states, (h_n, _) = self.lstm(packed)
        states, _ = pad_packed_sequence(states, batch_first=True, total_length=W)  # (B, W, H')

        if self.pooling == "last":
            # The forward direction ends at the last word, the backward one at the first.
            last = h_n[-2:] if self.lstm.bidirectional else h_n[-1:]  # (dirs, B, H)
            pooled = torch.cat(list(last), dim=-1) * mask.any(1, keepdim=True)  # (B, H')
        elif self.pooling == "mean":
            pooled = masked_mean(states, mask)
        elif self.pooling == "max":
            pooled = masked_max(states, mask)
        else:
            pooled = self.attention(states, mask)
        return maybe_normalize(self.out(pooled), self.normalize)  # (B, output_dim)
