"""A callback for the crash tests: SIGKILL this process once an epoch's checkpoint exists."""

from __future__ import annotations

import os
import signal

import pytorch_lightning as pl


class KillAfterEpoch(pl.Callback):
    """``kill -9`` this process at the end of training epoch ``epoch`` (0-based).

    ModelCheckpoint writes ``last.ckpt`` when the epoch's validation ends, before this hook.
    """

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGKILL)
