"""DCN-v2 cross network: explicit feature crosses of growing degree, one layer each."""

from __future__ import annotations

from torch import Tensor, nn


class CrossNetwork(nn.Module):
    """``x_{l+1} = x_0 * (W_l x_l + b_l) + x_l`` for ``num_layers`` layers.

    Layer ``l`` adds crosses of degree ``l + 2`` between the input's entries, which an MLP
    only approximates; the residual keeps the lower degrees.

    Args:
        dim: Size of the input (the concatenated features) and of every layer.
        num_layers: Number of cross layers.
        rank: ``None`` for a full ``dim x dim`` matrix ``W_l``; an integer for the paper's
            low-rank ``W_l = U_l V_l^T`` with ``U_l, V_l`` of shape ``(dim, rank)``.

    Shapes:
        x ``(B, dim)`` -> ``(B, dim)``.

    References:
        Wang et al. 2021, "DCN V2: Improved Deep & Cross Network and Practical Lessons for
        Web-scale Learning to Rank Systems", WWW.

    Example:
        >>> import torch
        >>> CrossNetwork(dim=6, num_layers=2, rank=3)(torch.randn(4, 6)).shape
        torch.Size([4, 6])
    """

    def __init__(self, dim: int, num_layers: int = 2, rank: int | None = None):
        super().__init__()
        self.output_dim = dim

        def weight() -> nn.Module:
            if rank is None:
                return nn.Linear(dim, dim)
            return nn.Sequential(nn.Linear(dim, rank, bias=False), nn.Linear(rank, dim))

        self.layers = nn.ModuleList(weight() for _ in range(num_layers))

    def forward(self, x0: Tensor) -> Tensor:
        x = x0
        for layer in self.layers:
            x = x0 * layer(x) + x  # (B, dim)
        return x
