"""All-gather with gradient, so in-batch negatives span the global batch under DDP."""

from __future__ import annotations

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` outside torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _AllGather(torch.autograd.Function):
    """Concatenate every process's tensor; the backward returns each process the summed
    gradient of its own slice. Built on all_reduce because gloo has no reduce_scatter."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        rank, size = world()
        parts = [torch.empty_like(x) for _ in range(size)]
        dist.all_gather(parts, x.contiguous())
        ctx.rank, ctx.n = rank, x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)  # every process's loss depends on every slice
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


def gather(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All-gather ``x`` along dim 0 (with gradient when it needs one).

    Returns the global tensor and the offset of this process's rows in it. Every process must
    pass the same shape, which DistributedSampler's equal shards give.
    """
    rank, size = world()
    if size == 1:
        return x, 0
    if x.requires_grad:
        return _AllGather.apply(x), rank * x.shape[0]
    parts = [torch.empty_like(x) for _ in range(size)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts), rank * x.shape[0]
