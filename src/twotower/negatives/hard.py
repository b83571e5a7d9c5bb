"""Mined hard negatives: each training query's table of mined documents, sampled each step."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from twotower.distributed import gather
from twotower.errors import check, check_choice
from twotower.negatives.base import (
    Encoder,
    History,
    catalogue_vectors,
    resize_from_state,
    sample_hard,
)

SOURCES = ("model", "bm25")  # or a path: a checkpoint, an export, a mined-negatives file


class HardNegatives(nn.Module):
    """``num`` mined documents per row, from the table a miner fills (:meth:`set_table`).

    The table holds, for each training query id, the documents mined for it (best first, -1
    padded; :mod:`twotower.retrieval.mining` filters them). Each step draws ``num`` of them per
    row (``sample``: ``random`` from the window, or the ``top`` ones). Their vectors are encoded
    by the document tower with gradient and, like in-batch documents, serve every query of the
    (global, under DDP) batch in the same matmul: under DDP each process's ``(B * num, D)``
    block is gathered in rank order, with the ids beside it, so no column is paired with
    another row's ids. A mined column is masked for a row when it is a training positive of
    that row's query (whichever row it was mined for), when it repeats a document already among
    the candidates (a batch positive or an earlier mined column: no duplicate negatives), or is
    a pad. Until the first mining (``mining.start_epoch``) the table is empty and the batch has
    no mined columns; validation and test batches never have them.

    Args:
        num: mined negatives per row per step, >= 1.
        sample: ``random`` or ``top``.
        mining: the miner's settings (:class:`twotower.mining.HardNegativeMiner`): ``source``
            (``model``, ``bm25`` or a path), ``rank_min``, ``rank_max``, ``margin``,
            ``relative_margin``, ``start_epoch``, ``refresh_every``, ``batch_size``.
    """

    def __init__(self, num: int, sample: str = "random", mining: Mapping[str, Any] | None = None):
        super().__init__()
        ok = isinstance(num, int) and not isinstance(num, bool)
        check(ok and num >= 1, "hard_negatives", num, "must be an integer >= 1")
        check_choice("hard_sample", sample, ("random", "top"))
        self.num, self.sample = num, sample
        self.mining = dict(mining or {})
        self.history = History()  # always: a mined document can be relevant to any query
        self.register_buffer("table", torch.empty(0, 0, dtype=torch.int32))  # (ids, W)

    def bind(self, catalogue) -> None:
        self.catalogue = catalogue
        self.history.bind(catalogue)

    def set_table(self, table: Tensor) -> None:
        """The mined documents ``(n_query_ids, W)`` long, -1 padded, row = query id."""
        self.table = table.to(self.table.device, torch.int32)  # half the bytes in checkpoints

    def candidates(self, batch: dict, encode: Encoder, device) -> tuple[Tensor, Tensor]:
        """``(vectors, doc_ids)`` of the (global) batch's mined columns ``(G*num, .)``; a pad's
        id is -1 (its vector is document 0's, never a valid candidate)."""
        query_id = batch["query_id"]
        rows = self.table[query_id.clamp(max=len(self.table) - 1)].long()  # (B, W)
        rows[query_id >= len(self.table)] = -1  # a query the miner did not see
        picked = sample_hard(rows, self.num, self.sample).flatten()  # (B*num,)
        docs = picked.clamp(min=0).cpu()  # a pad encodes document 0, masked
        vectors, inverse = catalogue_vectors(self.catalogue, docs, encode, device)
        vectors, _ = gather(vectors[inverse])  # (G*num, D), with gradient
        ids, _ = gather(picked.to(device))
        return vectors, ids

    def mask(self, query_id: Tensor, ids: Tensor, earlier: Tensor) -> Tensor:
        """``(B, G*num)`` True where a mined column (``ids``, -1 a pad) is a valid negative for
        the row."""
        # A column repeating an earlier candidate (a batch document, an earlier mined column).
        # Pads keep their own id, -1, so a pad never makes a real document a repeat.
        order = torch.arange(len(ids), device=ids.device)
        unique, inverse = torch.unique(ids, return_inverse=True)
        first = torch.full_like(unique, len(ids)).scatter_reduce(0, inverse, order, "amin")
        repeat = (first[inverse] != order) | torch.isin(ids, earlier)  # (G*num,)
        keep = ((ids >= 0) & ~repeat)[None, :]
        return keep & ~self.history(query_id, ids)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        resize_from_state(self, state_dict, prefix, ("table",))  # its shape is the data's
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
