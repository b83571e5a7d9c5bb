"""Duplicate-free batches: an epoch order in which no document (or query) repeats in a batch.

In-batch negatives already mask another row's copy of a row's positive, so a duplicate costs
a candidate rather than adding a false negative; this order removes the duplicates instead
(sentence-transformers' ``NoDuplicatesBatchSampler`` does it for its in-batch loss).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import Dataset, DistributedSampler

UNIQUE = ("doc", "query", "both")


def row_keys(dataset: Dataset, what: str) -> list[Tensor]:
    """Each training row's document and/or query id, ``(N,)`` each, for ``what`` in UNIQUE."""
    if hasattr(dataset, "item"):  # interactions: users are the queries, items the documents
        doc, query = dataset.item, dataset.user
    else:
        doc, query = dataset.doc_id, dataset.query_id[dataset.query_index]
    return {"doc": [doc], "query": [query], "both": [doc, query]}[what]


def duplicate_free_batches(keys: list[Tensor], order: Tensor, size: int) -> list[list[int]]:
    """Cut ``order`` into batches of up to ``size`` rows with no key repeated in a batch.

    Greedy: rows are taken in order; a row whose key is already in the batch waits for the
    next one, ahead of the rows not yet taken. Every row is in exactly one batch; only a key
    with more rows than there are batches leaves short batches at the end.
    """
    columns = [k.tolist() for k in keys]
    pending = deque(order.tolist())
    batches = []
    while pending:
        batch: list[int] = []
        seen: list[set] = [set() for _ in columns]
        waiting = []
        while pending and len(batch) < size:
            i = pending.popleft()
            if any(col[i] in s for col, s in zip(columns, seen, strict=True)):
                waiting.append(i)
                continue
            batch.append(i)
            for col, s in zip(columns, seen, strict=True):
                s.add(col[i])
        pending.extendleft(reversed(waiting))
        batches.append(batch)
    return batches


def padded(batch: list[int], columns: list[list], order: list[int], multiple: int) -> list[int]:
    """``batch`` grown to a multiple of ``multiple`` rows with the first rows of ``order`` whose
    keys it lacks (rows of other batches, taken twice this epoch), so that it stays
    duplicate-free; cut down to a multiple instead when too few such rows exist."""
    missing = -len(batch) % multiple
    if not missing:
        return batch
    seen = [{col[i] for i in batch} for col in columns]  # the batch's own rows are excluded
    extra: list[int] = []
    for i in order:
        if len(extra) == missing:
            break
        if not any(col[i] in s for col, s in zip(columns, seen, strict=True)):
            extra.append(i)
            for col, s in zip(columns, seen, strict=True):
                s.add(col[i])
    if len(extra) < missing:
        return batch[: len(batch) - len(batch) % multiple]
    return batch + extra


class DuplicateFreeSampler(DistributedSampler):
    """The batches of :func:`duplicate_free_batches` for one process, one list per batch.

    Global batches (``batch_size x num_replicas`` rows) are duplicate-free, and process
    ``rank`` takes every ``num_replicas``-th row of each, so the rows a DDP step gathers are
    the global batch. DDP needs every process to step as often, with as many rows (the
    gather needs equal shapes): a global batch that does not split evenly (the epoch's last,
    or one cut short by a frequent key) is :func:`padded` with rows of other batches whose
    keys it lacks, as :class:`DistributedSampler` repeats rows to even its shards. The gathered
    batch stays duplicate-free and every row is still seen each epoch, which dropping the
    remainder would not give (a frequent key's one-row batches would never train). Every
    process cuts the same batches from the same order, so all agree on their number. A
    :class:`DistributedSampler` so that Lightning keeps it (and calls :meth:`set_epoch`):
    each epoch draws a new order from ``seed + epoch``. Use it with :class:`BatchRows` and
    ``batch_size=None``: batches may be short at the epoch's end.

    Args:
        dataset: the training rows (text pairs or interactions).
        unique: ``doc``, ``query`` or ``both``: what appears at most once per batch.
        batch_size: rows per process and batch.
    """

    def __init__(
        self,
        dataset: Dataset,
        unique: str,
        batch_size: int,
        *,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        seed: int = 0,
    ):
        super().__init__(dataset, num_replicas, rank, shuffle=shuffle, seed=seed)
        self.keys, self.batch_size = row_keys(dataset, unique), batch_size
        self.short_batches = 0  # of the last epoch: batches cut short by a frequent key
        self._cached: tuple[int, list[list[int]]] | None = None  # (epoch, this process's)

    def batches(self) -> list[list[int]]:
        """This process's batches of the epoch."""
        if self._cached is not None and self._cached[0] == self.epoch:
            return self._cached[1]
        n = len(self.keys[0])
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        size = self.batch_size * self.num_replicas
        batches = duplicate_free_batches(self.keys, order, size)
        self.short_batches = sum(len(b) < size for b in batches[:-1])
        if self.num_replicas > 1:
            columns, rows = [k.tolist() for k in self.keys], order.tolist()
            batches = [padded(b, columns, rows, self.num_replicas) for b in batches]
        shares = [b[self.rank :: self.num_replicas] for b in batches if b]
        self._cached = (self.epoch, shares)
        return shares

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        return len(self.batches())


class BatchRows(Dataset):
    """``rows[indices]`` as one batch: the dataset a batch-yielding sampler indexes."""

    def __init__(self, rows: Dataset):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, indices: list[int]):
        return self.rows.__getitems__(indices)
