"""Cross-batch memory (XBM): the last M positives of earlier batches as extra negatives."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from twotower.errors import ConfigError, check
from twotower.negatives.base import resize_from_state
from twotower.negatives.in_batch import InBatchNegatives

if TYPE_CHECKING:
    from twotower.data.base import Catalogue


class CrossBatchMemory(InBatchNegatives):
    """In-batch negatives plus a FIFO queue of the last ``memory_size`` document vectors of
    earlier training batches (Wang et al., CVPR 2020; Merlin's cached cross-batch sampler).

    The queue holds each entry's vector (detached: no gradient reaches a past batch), its
    document id and the query id it was the positive of. Every query of a batch scores the
    whole queue in the same matmul as the batch's documents, and the in-batch masking rule
    applies to it unchanged: an entry with the row's positive ``doc_id``, or the positive of
    a row's ``query_id`` (a relevant document), or with ``mask_history`` any training
    positive of the row's query, is masked for that row. Under DDP the global batch is
    enqueued, so every process holds the same queue. The queue is in checkpoints (resumed
    runs go on with it); validation and test use no memory, so ``val/loss`` stays the in-batch
    objective and compares across strategies.

    Entries are encoded by the towers of up to ``memory_size / global batch`` steps ago; XBM's
    premise is that embeddings drift slowly once the first epochs are past. ``start_step``
    leaves the queue empty until then (the paper's warm-up).

    logQ (``logq``): queue entries were positives of earlier batches, drawn with the same
    popularity ``p_j`` as the batch's, so the pool holds ``G + M`` draws with ``p``: each
    candidate's expected count is ``(G + M) p_j``, and with ``K`` uniform draws
    ``(G + M) p_j + K / N`` (:class:`InBatchNegatives`). Without uniform draws that is
    ``log p_j`` up to a constant of the row, which a softmax ignores.

    Args:
        memory_size: queue length M (document vectors), >= 1 and at most the number of
            training documents (checked by :meth:`bind`).
        start_step: training steps before the first entry is enqueued, >= 0.
        **kwargs: :class:`InBatchNegatives`'s (``num_uniform``, ``logq``, ``mask_history``...).
    """

    def __init__(self, memory_size: int = 16384, start_step: int = 0, **kwargs: Any):
        super().__init__(**kwargs)
        ok = isinstance(memory_size, int) and not isinstance(memory_size, bool)
        check(ok and memory_size >= 1, "memory_size", memory_size, "must be an integer >= 1")
        ok = isinstance(start_step, int) and not isinstance(start_step, bool)
        check(ok and start_step >= 0, "start_step", start_step, "must be an integer >= 0")
        self.memory_size, self.start_step = memory_size, start_step
        # Shapes are set by the first batch (the tower's width) or by a checkpoint.
        self.register_buffer("queue", torch.empty(0, 0))  # (M, D), oldest first
        self.register_buffer("queue_ids", torch.empty(0, dtype=torch.long))  # (M,)
        self.register_buffer("queue_owners", torch.empty(0, dtype=torch.long))  # (M,)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def bind(self, catalogue: Catalogue) -> None:
        """:meth:`InBatchNegatives.bind`, and a memory no longer than the training documents."""
        super().bind(catalogue)
        n_docs = len(torch.unique(catalogue.positive_doc))
        if self.memory_size > n_docs:
            # The queue holds training positives: past n_docs entries it repeats documents, the
            # older copies encoded by older towers.
            raise ConfigError(
                "memory_size",
                self.memory_size,
                f"exceeds the {n_docs:,} training documents (distinct training positives), "
                f"so the queue would hold documents twice: use at most {n_docs}",
            )

    def memory(self) -> tuple[Tensor, Tensor, Tensor] | None:
        if not self.training or not len(self.queue_ids):
            return None
        return self.queue, self.queue_ids, self.queue_owners

    def remember(self, docs: Tensor, doc_ids: Tensor, owner_ids: Tensor) -> None:
        self.steps += 1
        if int(self.steps) <= self.start_step:
            return
        m = self.memory_size
        # Concatenate then keep the newest M: a global batch larger than M keeps its last M.
        self.queue = torch.cat([self.queue.to(docs.dtype).reshape(-1, docs.shape[1]), docs])[-m:]
        self.queue_ids = torch.cat([self.queue_ids, doc_ids])[-m:]
        self.queue_owners = torch.cat([self.queue_owners, owner_ids])[-m:]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The queue's length and width come from the checkpoint.
        resize_from_state(self, state_dict, prefix, ("queue", "queue_ids", "queue_owners"))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        # A run resumed with a shorter memory_size keeps the newest entries.
        self.queue = self.queue[-self.memory_size :]
        self.queue_ids = self.queue_ids[-self.memory_size :]
        self.queue_owners = self.queue_owners[-self.memory_size :]
