"""GradCache (Gao et al. 2021): a big contrastive batch with one chunk's activations at a time.

The step runs in three passes. (1) Every tower call of the step (queries, documents, and any
documents the negatives encode) runs without a graph, chunk by chunk, and the RNG state before
each chunk is kept. (2) The negatives and the loss run on those vectors, made leaves that
require grad: ``backward`` gives the loss's gradient with respect to each vector, and the
similarity's own parameters (a learnable gamma) their gradients. (3) Each chunk is encoded
again with a graph, under its saved RNG state, so dropout draws the same masks, and
backpropagates its slice of the vector gradients into the tower. The parameter gradients
are then the full batch's, to float rounding, while the graph of one chunk is alive at a
time. BatchNorm would see chunk statistics instead of the batch's: no tower here uses it.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from twotower.errors import check

Inputs = Any  # a tensor of tokens (B, W, T), or a dict (of dicts) of feature tensors


def rows(inputs: Inputs) -> int:
    """The number of rows (the leading size) of a tower's inputs."""
    if isinstance(inputs, Tensor):
        return inputs.shape[0]
    if isinstance(inputs, dict):
        return rows(next(iter(inputs.values())))
    if isinstance(inputs, list | tuple):
        return rows(inputs[0])
    raise TypeError(f"tower inputs of type {type(inputs).__name__}")


def take(inputs: Inputs, start: int, stop: int) -> Inputs:
    """Rows ``start:stop`` of a tower's inputs, whatever their nesting."""
    if isinstance(inputs, Tensor):
        return inputs[start:stop]
    if isinstance(inputs, dict):
        return {k: take(v, start, stop) for k, v in inputs.items()}
    return type(inputs)(take(v, start, stop) for v in inputs)


@dataclass
class RngState:
    """The CPU generator's state and, on a GPU, that device's: enough to replay dropout."""

    cpu: Tensor
    device: torch.device
    cuda: Tensor | None = None

    @classmethod
    def capture(cls, device: torch.device) -> RngState:
        cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        return cls(torch.get_rng_state(), device, cuda)

    @contextmanager
    def replay(self):
        """Run the block from this state; the global generators are left as they were."""
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state(self.cuda, self.device)
            yield


@dataclass
class _Call:
    """One tower call of the step: its chunks, their RNG states and the vectors' leaf."""

    tower: nn.Module
    chunks: list[Inputs]
    states: list[RngState]
    vectors: Tensor = field(repr=False)


class GradCache:
    """Computes a training step's loss and parameter gradients chunk by chunk.

    Args:
        chunk_size: rows per tower forward pass; a batch of up to ``chunk_size`` rows is
            one chunk (and the step is the uncached one, with the same arithmetic).
    """

    def __init__(self, chunk_size: int):
        ok = isinstance(chunk_size, int) and not isinstance(chunk_size, bool) and chunk_size > 0
        check(ok, "model.grad_cache.chunk_size", chunk_size, "must be a positive integer or null")
        self.chunk_size = chunk_size

    def _encoder(self, tower: nn.Module, calls: list[_Call], device: torch.device):
        def encode(inputs: Inputs) -> Tensor:
            n = rows(inputs)
            chunks = [take(inputs, i, i + self.chunk_size) for i in range(0, n, self.chunk_size)]
            states, outputs = [], []
            with torch.no_grad():
                for chunk in chunks:
                    states.append(RngState.capture(device))
                    outputs.append(tower(chunk))
            vectors = torch.cat(outputs).requires_grad_()
            calls.append(_Call(tower, chunks, states, vectors))
            return vectors

        return encode

    def backward(
        self, module: nn.Module, batch: dict, scale: Callable[[Tensor], Tensor] | None = None
    ) -> tuple[Tensor, Any]:
        """Accumulate the step's gradients into ``module``'s parameters.

        Args:
            module: a :class:`~twotower.module.TwoTowerModule` (towers, similarity,
                negatives, loss).
            batch: the training batch.
            scale: applied to the loss before backward (a mixed-precision loss scaler).

        Returns:
            the loss (detached) and the candidates, as ``model_step`` gives them.
        """
        device = next(module.parameters()).device
        calls: list[_Call] = []
        encode_query = self._encoder(module.query_tower, calls, device)
        encode_doc = self._encoder(module.doc_tower, calls, device)
        q = encode_query(batch["query"])  # (B, D) leaves
        d = encode_doc(batch["doc"])
        cands = module.negatives(q, d, batch, module.similarity, encode_doc)
        loss = module.objective(cands, batch, q, d)
        (scale(loss) if scale is not None else loss).backward()
        for call in calls:
            grad = call.vectors.grad
            if grad is None:  # the loss does not depend on these vectors (all masked)
                continue
            start = 0
            for chunk, state in zip(call.chunks, call.states, strict=True):
                with state.replay():
                    out = call.tower(chunk)
                torch.autograd.backward(out, grad[start : start + len(out)])
                start += len(out)
        return loss.detach(), cands
