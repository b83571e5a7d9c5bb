"""Train / validation / test splits of interactions, as RecBole 1.2.1 makes them.

Each split maps interaction tensors to ``part``, ``(N,)`` long: 0 train, 1 validation, 2 test.

- ``random``: RecBole's default (``split: {RS: [0.8, 0.1, 0.1]}, order: RO, group_by: user``):
  shuffle every interaction, then split each user's by :func:`split_counts`.
- ``loo``: leave one out by time: per user, the latest interaction is the test one, the one
  before it the validation one.
- ``temporal``: every interaction sorted by time, split by :func:`split_counts`.
- ``cold_items``: a share of the items is held out with all their interactions (cold start).

RecBole's benchmark files (``NAME.train.inter``, ``NAME.valid.inter``, ``NAME.test.inter``)
replace all of these: see :func:`benchmark_files`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from twotower.errors import DataError

SPLITS = ("random", "loo", "temporal", "cold_items")
PARTS = ("train", "val", "test")
BENCHMARK_SUFFIXES = ("train", "valid", "test")  # RecBole's benchmark_filename default


def split_counts(total: int, ratios: Sequence[float]) -> list[int]:
    """How many of ``total`` interactions each part gets: RecBole's ``_calcu_split_ids``.

    Every part but the first rounds down; then, while the first keeps more than one, a part
    whose share is below one interaction (but not zero) takes one from it, the last part first.

    >>> split_counts(10, [0.8, 0.1, 0.1]), split_counts(5, [0.8, 0.1, 0.1])
    ([8, 1, 1], [3, 1, 1])
    >>> split_counts(2, [0.8, 0.1, 0.1]), split_counts(1, [0.8, 0.1, 0.1])
    ([1, 0, 1], [1, 0, 0])
    """
    ratios = [r / sum(ratios) for r in ratios]  # RecBole normalises: [8, 1, 1] works too
    counts = [int(r * total) for r in ratios]
    counts[0] = total - sum(counts[1:])
    for i in range(1, len(ratios)):
        if counts[0] <= 1:
            break
        if 0 < ratios[-i] * total < 1:
            counts[-i] += 1
            counts[0] -= 1
    return counts


def _rank_in_group(group: Tensor) -> tuple[Tensor, Tensor]:
    """Each element's position among its group's members (in tensor order), and group sizes.

    ``group`` holds ids ``0..G-1``. Returns ``(rank (N,), sizes (G,))``.
    """
    order = torch.sort(group, stable=True).indices  # (N,) members of a group stay in order
    sizes = torch.bincount(group)  # (G,)
    starts = sizes.cumsum(0) - sizes
    rank = torch.empty_like(group)
    rank[order] = torch.arange(len(group)) - starts[group[order]]
    return rank, sizes


def grouped_split(group: Tensor, ratios: Sequence[float]) -> Tensor:
    """Split each group's elements in tensor order by :func:`split_counts` of its size."""
    group = torch.unique(group, return_inverse=True)[1]  # ids 0..G-1
    rank, sizes = _rank_in_group(group)
    bounds = {}  # group size -> cumulative counts of the parts; sizes repeat a lot
    for size in sizes.unique().tolist():
        bounds[size] = torch.tensor(split_counts(size, ratios)).cumsum(0)[:-1].tolist()
    bound = torch.tensor([bounds[s] for s in sizes.tolist()], dtype=torch.long)  # (G, P - 1)
    return (rank[:, None] >= bound[group]).sum(1)  # (N,)


def random_split(user: Tensor, ratios: Sequence[float], seed: int = 2020) -> Tensor:
    """RecBole's default split: shuffle all interactions, split each user's by ratio.

    RecBole seeds torch with ``seed`` and shuffles with ``torch.randperm``; the per-user counts
    follow :func:`split_counts`, so on ml-100k this gives 80,808 / 9,596 / 9,596.

    Args:
        user: ``(N,)`` the user of each interaction.
        ratios: the parts' shares (train, validation, test), normalised by their sum.
        seed: the shuffle's seed (RecBole's default is 2020).
    """
    perm = torch.randperm(len(user), generator=torch.Generator().manual_seed(seed))  # (N,)
    part = torch.empty_like(perm)
    part[perm] = grouped_split(user[perm], ratios)
    return part


def loo_split(user: Tensor, time: Tensor | None) -> tuple[Tensor, int]:
    """Leave one out: per user, the latest interaction is test, the one before validation.

    Ties in ``time`` keep file order (the later line is the latest); ``time=None`` orders by
    file position alone. Users with fewer than 3 interactions keep them all in training.

    Returns:
        ``(part, users with fewer than 3 interactions)``.
    """
    group = torch.unique(user, return_inverse=True)[1]
    order = torch.arange(len(user))
    if time is not None:
        order = torch.sort(time, stable=True).indices
    order = order[torch.sort(group[order], stable=True).indices]  # by user, then time
    rank, sizes = _rank_in_group(group[order])
    last = sizes[group[order]] - 1 - rank  # 0 for each user's latest interaction
    sorted_part = torch.where(last == 0, 2, torch.where(last == 1, 1, 0))
    sorted_part[sizes[group[order]] < 3] = 0
    part = torch.empty_like(order)
    part[order] = sorted_part
    return part, int((sizes < 3).sum())


def temporal_split(time: Tensor, ratios: Sequence[float]) -> Tensor:
    """Sort every interaction by time (stable: ties keep file order), split by ratio."""
    order = torch.sort(time, stable=True).indices
    counts = torch.tensor(split_counts(len(time), ratios))
    part = torch.empty_like(order)
    part[order] = torch.repeat_interleave(torch.arange(len(counts)), counts)
    return part


def cold_item_split(item: Tensor, share: float, seed: int) -> Tensor:
    """Hold out a seeded ``share`` of the items with all their interactions (cold start).

    The held-out items are drawn from those that have an interaction; the first half of them
    (rounded down) is validation, the rest test; every other interaction is training.
    """
    items = torch.unique(item)
    perm = torch.randperm(len(items), generator=torch.Generator().manual_seed(seed))
    n_cold = int(share * len(items) + 0.5)
    cold = items[perm[:n_cold]]
    val, test = cold[: n_cold // 2], cold[n_cold // 2 :]
    return torch.isin(item, val).long() + 2 * torch.isin(item, test).long()


def benchmark_files(directory: str | Path, name: str) -> list[Path] | None:
    """``NAME.{train,valid,test}.inter`` if they exist: they are the split, as in RecBole.

    Raises:
        DataError: only some of the three exist.
    """
    paths = [Path(directory) / f"{name}.{suffix}.inter" for suffix in BENCHMARK_SUFFIXES]
    present = [p.name for p in paths if p.is_file()]
    if not present:
        return None
    for path in paths:
        if not path.is_file():
            problem = f"missing: {', '.join(present)} exist, and benchmark files come in three"
            raise DataError(path, None, None, problem)
    return paths
