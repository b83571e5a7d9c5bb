"""Text encoder: a text feature (a title, a bio) -> the DSSM tower's vector."""

from __future__ import annotations

from twotower.towers.mlp import MLPTower


class TextEncoder(MLPTower):
    """Letter-trigram ids of a text feature -> bag layer -> tanh output of size ``dim``.

    The DSSM tower (:class:`~twotower.towers.mlp.MLPTower`) with one hidden layer and its
    paper defaults; its tanh output keeps the text's part of the concatenation in
    ``[-1, 1]``, the scale of the other encoders.

    Args:
        vocab_size: Number of token ids, including pad (0) and unknown (1).
        dim: Hidden and output size (:attr:`output_dim`).

    Shapes:
        tokens ``(B, W, T)`` long -> ``(B, dim)``.

    Example:
        >>> import torch
        >>> TextEncoder(vocab_size=50, dim=8)(torch.randint(0, 50, (2, 4, 3))).shape
        torch.Size([2, 8])
    """

    def __init__(self, vocab_size: int, dim: int):
        super().__init__(vocab_size, hidden_sizes=[dim], output_dim=dim)
