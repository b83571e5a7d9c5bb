"""Small Lightning callbacks the training script relies on."""

from __future__ import annotations

import os
import time

import pytorch_lightning as pl
import torch


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
    """Training wall time and samples seen (over all processes), for ``metrics.json``."""

    def __init__(self) -> None:
        self.samples = 0
        self.seconds = 0.0
        self._start = 0.0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.samples += batch["query"].shape[0] * trainer.world_size

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.seconds = time.perf_counter() - self._start
