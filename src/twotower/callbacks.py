"""Small Lightning callbacks the training script relies on."""

from __future__ import annotations

import os
import time

import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn


class ThreadsPerProcess(pl.Callback):
    """Give each of several CPU processes its share of the cores.

    Two processes with torch's default thread count on 2 cores made steps 6-15x slower.
    """

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if trainer.strategy.root_device.type == "cpu" and trainer.world_size > 1:
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
            per_node = max(1, trainer.world_size // max(1, trainer.num_nodes))
            torch.set_num_threads(max(1, (cores or os.cpu_count() or 1) // per_node))


class FitStats(pl.Callback):
    """Training wall time, the part of it spent validating, and samples seen (all processes)."""

    def __init__(self) -> None:
        self.samples = 0
        self.seconds = 0.0
        self.val_seconds = 0.0
        self._start = self._val_start = 0.0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.samples += len(batch["doc_id"]) * trainer.world_size

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._val_start = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING:  # not the validations before and after fit
            self.val_seconds += time.perf_counter() - self._val_start

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.seconds = time.perf_counter() - self._start
