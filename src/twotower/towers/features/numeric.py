"""Numeric encoders: a number or a padded list of numbers -> a vector; NaN is missing.

Statistics (mean, standard deviation, bucket boundaries) come from the training values and
are buffers, so a checkpoint carries them and a reloaded tower encodes exactly as before.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from twotower.towers.features.categorical import init_embedding


def finite(values: Tensor | None) -> Tensor:
    """The finite values, flattened, as float64 (a stray NaN would poison every statistic)."""
    if values is None:
        return torch.zeros(0, dtype=torch.float64)
    values = values.detach().flatten().double()
    return values[torch.isfinite(values)]


def moments(values: Tensor) -> tuple[float, float]:
    """Mean and (population) standard deviation; ``(0, 1)`` when there are no values.

    A constant feature has a standard deviation of 0 and carries no information, so it is
    scaled by 1 rather than divided by zero.
    """
    if values.numel() == 0:
        return 0.0, 1.0
    std = values.std(correction=0).item()
    return values.mean().item(), std if std > 0 else 1.0


def quantiles(values: Tensor, q: Tensor) -> Tensor:
    """``torch.quantile(values, q)`` (linear interpolation), without its 16M-value limit."""
    v = values.sort().values
    pos = q * (len(v) - 1)
    lo = pos.floor().long()
    hi = pos.ceil().long()
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


class FloatEncoder(nn.Module):
    """A number -> ``[standardised value, missing flag]``; a missing value standardises to 0.

    The flag lets the network tell "missing" from "exactly the mean".

    Args:
        train_values: The feature's training values (their mean and deviation are kept).
        log: Standardise ``log1p(x)`` instead of ``x``, for heavy-tailed counts (prices,
            view counts). The training values must be >= 0; smaller inputs are clamped to 0.

    Shapes:
        x ``(B,)`` float -> ``(B, 2)``.

    Example:
        >>> encoder = FloatEncoder(torch.tensor([1.0, 3.0]))
        >>> encoder(torch.tensor([3.0, float("nan")]))
        tensor([[1., 0.],
                [0., 1.]])
    """

    output_dim = 2

    def __init__(self, train_values: Tensor | None, *, log: bool = False):
        super().__init__()
        self.log = log
        values = finite(train_values)
        mean, std = moments(values.log1p() if log else values)
        self.register_buffer("mean", torch.tensor(mean))
        self.register_buffer("std", torch.tensor(std))

    def forward(self, x: Tensor) -> Tensor:
        x = x.float()
        if self.log:
            # Training values were all >= 0; a smaller input (below log1p's domain at -1) is
            # treated as the smallest one could be. NaN passes through clamp as missing.
            x = x.clamp(min=0).log1p()
        missing = x.isnan()
        z = ((x - self.mean) / self.std).masked_fill(missing, 0.0)
        return torch.stack([z, missing.float()], dim=-1)  # (B, 2)


class BucketEncoder(nn.Module):
    """A number -> the embedding of its quantile bucket; missing values have their own bucket.

    Boundaries are the training values' quantiles at ``1/buckets .. (buckets-1)/buckets``,
    with duplicates dropped (a value repeated across quantiles would leave empty buckets).
    A value ``x`` falls in bucket ``i`` when ``boundaries[i-1] <= x < boundaries[i]``.
    Buckets let the network learn a non-monotonic effect (age) without depth.

    Args:
        train_values: The feature's training values.
        buckets: Number of quantile buckets asked for (fewer when boundaries coincide).
        dim: Embedding size (:attr:`output_dim`).

    Shapes:
        x ``(B,)`` float -> ``(B, dim)``.

    Example:
        >>> encoder = BucketEncoder(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]), buckets=2, dim=4)
        >>> encoder.boundaries, encoder.num_buckets
        (tensor([3.]), 2)
    """

    def __init__(self, train_values: Tensor | None, buckets: int, dim: int):
        super().__init__()
        self.output_dim = dim
        values = finite(train_values)
        q = torch.arange(1, buckets, dtype=torch.float64) / buckets
        boundaries = quantiles(values, q).unique() if values.numel() else values
        self.register_buffer("boundaries", boundaries.float())
        self.num_buckets = len(boundaries) + 1
        self.embedding = nn.Embedding(self.num_buckets + 1, dim)  # the last row: missing
        init_embedding(self.embedding.weight, padding_idx=None)

    def forward(self, x: Tensor) -> Tensor:
        x = x.float()
        ids = torch.bucketize(x, self.boundaries, right=True)  # (B,) in 0..num_buckets-1
        return self.embedding(ids.masked_fill(x.isnan(), self.num_buckets))  # (B, dim)


class FloatSeqEncoder(nn.Module):
    """A NaN-padded list of numbers -> ``Linear([standardised values, presence mask])``.

    Every position is standardised with the statistics of all training values together
    (positions of a list are alike: weekly counts, ratings), missing values become 0, and
    the mask tells the layer which zeros are real.

    Args:
        train_values: The feature's training values, all positions flattened.
        width: The padded length ``L`` of the feature's column.
        dim: Output size (:attr:`output_dim`).

    Shapes:
        x ``(B, L')`` float with ``L' <= width`` (shorter rows are padded) -> ``(B, dim)``.

    Example:
        >>> encoder = FloatSeqEncoder(torch.tensor([0.0, 2.0]), width=3, dim=4)
        >>> encoder(torch.tensor([[1.0, float("nan"), float("nan")]])).shape
        torch.Size([1, 4])
    """

    def __init__(self, train_values: Tensor | None, width: int, dim: int):
        super().__init__()
        self.width, self.output_dim = width, dim
        mean, std = moments(finite(train_values))
        self.register_buffer("mean", torch.tensor(mean))
        self.register_buffer("std", torch.tensor(std))
        self.linear = nn.Linear(2 * width, dim)

    def forward(self, x: Tensor) -> Tensor:
        x = F.pad(x.float(), (0, self.width - x.shape[1]), value=float("nan"))  # (B, width)
        present = ~x.isnan()
        z = ((x - self.mean) / self.std).masked_fill(~present, 0.0)
        return self.linear(torch.cat([z, present.float()], dim=-1))  # (B, dim)
