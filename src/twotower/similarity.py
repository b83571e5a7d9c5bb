"""Relevance between query and document vectors: cosine or dot, times a scale gamma."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from twotower.errors import check, check_choice, check_positive


class Similarity(nn.Module):
    """``gamma * sim(q, d)`` with ``sim`` cosine (default) or dot product.

    gamma is the DSSM smoothing factor (the inverse softmax temperature; the seeds use 20).
    A learnable gamma is stored as its logarithm so it stays positive; :meth:`clamp_`, called
    after each optimizer step, puts it back to at most ``max_scale`` as in CLIP. Clamping the
    parameter rather than the forward value keeps its gradient at the bound, so it can come
    back down.

    Args:
        kind: ``cosine`` or ``dot``.
        scale: gamma, > 0.
        learnable: learn gamma (starting from ``scale``).
        max_scale: upper bound for a learnable gamma.

    Shapes:
        q: ``(B, D)``; d: ``(N, D)`` -> ``(B, N)`` (one matmul), or ``(B, C, D)`` -> ``(B, C)``
        (each query against its own candidates).

    References:
        Huang et al., Learning Deep Structured Semantic Models for Web Search, CIKM 2013.
        Radford et al., Learning Transferable Visual Models From Natural Language Supervision,
        ICML 2021 (learnable temperature).
    """

    def __init__(
        self,
        kind: str = "cosine",
        scale: float = 20.0,
        learnable: bool = False,
        max_scale: float = 100.0,
    ):
        super().__init__()
        check_choice("kind", kind, ("cosine", "dot"))
        check_positive("scale", scale)
        check_positive("max_scale", max_scale)
        check(scale <= max_scale, "scale", scale, f"must be <= max_scale ({max_scale})")
        self.kind, self.max_scale = kind, max_scale
        log_scale = torch.tensor(math.log(scale))
        if learnable:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.exp()

    def clamp_(self) -> None:
        """Clamp a learnable gamma in place to at most ``max_scale`` (no-op when fixed)."""
        if isinstance(self.log_scale, nn.Parameter):
            with torch.no_grad():
                self.log_scale.clamp_(max=math.log(self.max_scale))

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """The vectors whose dot product is the (unscaled) similarity."""
        return F.normalize(x, dim=-1) if self.kind == "cosine" else x

    def forward(self, q: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        # gamma scales the (B, D) queries, not the (B, N) scores: one pass over B x D values
        # instead of two (forward and backward) over B x N.
        q, d = self.scale * self.prepare(q), self.prepare(d)
        if d.dim() == 2:
            return q @ d.T  # (B, N)
        return torch.einsum("bd,bcd->bc", q, d)  # (B, C)
