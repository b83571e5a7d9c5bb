"""InteractionDataset: (user, item) rows over the users' and the items' feature stores.

A batch (use with ``collate_fn=collate``)::

    query     {name: (B, ...)}   the users' features (features.py gives each layout)
    query_id  (B,) long          the user index (rows of one user mask each other's items)
    index     (B,) long          the row index in the dataset
    doc       {name: (B, ...)}   the items' features
    doc_id    (B,) long          the item index

>>> from twotower.data.components.features import Feature, FeatureStore
>>> users = FeatureStore(
...     [Feature("history", "history", 4, width=2)], {"history": torch.tensor([[3, 2], [1, 0]])}
... )
>>> items = FeatureStore([Feature("item_id", "id", 4)], {"item_id": torch.tensor([1, 2, 3])})
>>> batch = InteractionDataset(users, items, torch.tensor([0]), torch.tensor([2])).__getitems__([0])
>>> batch["query"]["history"], batch["doc"]["item_id"]  # item 2 is the target: hidden
(tensor([[0, 2]]), tensor([3]))
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset

from twotower.data.components.features import FeatureStore


class InteractionDataset(Dataset):
    """One row per interaction; :meth:`__getitems__` builds a whole batch by indexing.

    Args:
        users: the features of every user (``user`` indexes it).
        items: the features of every item (``item`` indexes it).
        user: ``(N,)`` long, each row's user.
        item: ``(N,)`` long, each row's item.
        hide_target: zero the row's own item in the user's ``history`` features (item index + 1),
            so a training target never appears in its own input; the store is left untouched.
    """

    def __init__(
        self,
        users: FeatureStore,
        items: FeatureStore,
        user: Tensor,
        item: Tensor,
        hide_target: bool = True,
    ):
        if len(user) != len(item):
            raise ValueError(f"user ({len(user)}) and item ({len(item)}) rows disagree")
        self.users, self.items = users, items
        self.user, self.item = user.long(), item.long()
        self.hide_target = hide_target
        self.history = [f.name for f in users.features if f.kind == "history"]

    def __len__(self) -> int:
        return len(self.user)

    def __getitems__(self, indices: list[int]) -> dict:
        """The batch of rows ``indices``."""
        rows = torch.as_tensor(indices, dtype=torch.long)  # (B,)
        u, i = self.user[rows], self.item[rows]  # (B,), (B,)
        query = self.users.batch(u)
        if self.hide_target:
            for name in self.history:  # masked_fill returns a copy: the store keeps its items
                query[name] = query[name].masked_fill(query[name] == (i + 1)[:, None], 0)  # (B, H)
        return {
            "query": query,
            "query_id": u,
            "index": rows,
            "doc": self.items.batch(i),
            "doc_id": i,
        }

    def __getitem__(self, index: int) -> dict:
        """One row without the batch dimension (for inspection; loaders use __getitems__)."""
        batch = self.__getitems__([index])
        return {
            k: {n: t[0] for n, t in v.items()} if isinstance(v, dict) else v[0]
            for k, v in batch.items()
        }
