"""Small Lightning callbacks the training script relies on."""

from __future__ import annotations

import math
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping, RichModelSummary
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_warn
from pytorch_lightning.utilities.model_summary import get_human_readable_count as human_count

from twotower.errors import ConfigError, TrainingDiverged, check, check_positive
from twotower.runs import LAST


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
    """Training wall time, the part of it spent in training steps and the part validating,
    samples seen (all processes) and the untrained model's metrics; kept in checkpoints, so a
    resumed run reports its whole.

    ``train_seconds`` sums each training batch's time from the end of the one before (or the
    epoch's start, or a validation's end): loading, step and step hooks, not the validation,
    checkpoint writes or other epoch-end work that ``seconds`` (the whole fit) also holds.
    """

    def __init__(self) -> None:
        self.samples = 0
        self.seconds = self.train_seconds = self.val_seconds = 0.0
        self.untrained: dict[str, float] = {}
        self._start = self._val_start = self._before = self._mark = 0.0

    def state_dict(self) -> dict[str, Any]:
        elapsed = time.perf_counter() - self._start if self._start else 0.0
        return {
            "samples": self.samples,
            "seconds": self._before + elapsed,
            "train_seconds": self.train_seconds,
            "val_seconds": self.val_seconds,
            "untrained": dict(self.untrained),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.samples, self.val_seconds = state["samples"], state["val_seconds"]
        self._before, self.untrained = state["seconds"], dict(state["untrained"])
        # checkpoints from before train_seconds: the fit less its validation
        self.train_seconds = state.get("train_seconds", state["seconds"] - state["val_seconds"])

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._mark = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.samples += len(batch["doc_id"]) * trainer.world_size
        now = time.perf_counter()
        self.train_seconds += now - self._mark
        self._mark = now

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._val_start = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING:  # not the validations before and after fit
            self.val_seconds += time.perf_counter() - self._val_start
            self._mark = time.perf_counter()  # a validation inside an epoch is not training

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.seconds = self._before + time.perf_counter() - self._start

    def totals(self) -> dict[str, float]:
        """``samples``, ``seconds``, ``train_seconds`` and ``val_seconds`` of the fit so far.

        Take them right after ``fit``: a later ``validate`` or ``test`` with ``ckpt_path``
        restores this callback's state from that checkpoint (the best epoch's counts).
        """
        names = ("samples", "seconds", "train_seconds", "val_seconds")
        return {name: getattr(self, name) for name in names}


class ModelSummary(RichModelSummary):
    """Lightning's rich model summary without its FLOPs and Mode columns, its metric states
    and with its totals in one line.

    Lightning counts FLOPs only through an ``example_input_array``, which a two-tower module
    (two inputs, no ``forward``) has not: the column read 0 for every layer. Every layer is in
    train mode while it trains.
    """

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs: Any,
    ) -> None:
        from rich.console import Console
        from rich.table import Table

        columns = [(name, cells) for name, cells in summary_data if name not in ("FLOPs", "Mode")]
        table = Table(header_style=summarize_kwargs.get("header_style", "bold magenta"))
        for name, _ in columns:
            table.add_column(name, justify="right" if name == "Params" else "left")
        rows = list(zip(*(cells for _, cells in columns), strict=True))
        data = dict(summary_data)
        # Parameter-free ModuleDicts (the module's metric states) and their members: 12 rows
        # that say nothing about the model.
        quiet = {
            name
            for name, kind, params in zip(data["Name"], data["Type"], data["Params"], strict=True)
            if kind == "ModuleDict" and params.strip() == "0"
        }
        for row, name in zip(rows, data["Name"], strict=True):
            if name.split(".", 1)[0] not in quiet:
                table.add_row(*row)
        console = Console()
        console.print(table)
        frozen = total_parameters - trainable_parameters
        console.print(
            f"params: {human_count(trainable_parameters).strip()} trainable, "
            f"{human_count(frozen).strip()} frozen, {model_size:.1f} MB"
        )


class RandomState(pl.Callback):
    """Keep the torch, NumPy and Python RNG states in checkpoints and restore them on resume.

    Lightning saves none of them: a resumed run would shuffle, drop out and draw negatives
    from the seed's stream again, not from where the interrupted run stopped.
    """

    def state_dict(self) -> dict[str, Any]:
        name, keys, pos, has_gauss, gauss = np.random.get_state()
        return {
            "torch": torch.get_rng_state(),
            "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
            "python": random.getstate(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        torch.set_rng_state(state["torch"])
        name, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        random.setstate(_tuples(state["python"]))


def _tuples(x: Any) -> Any:
    """Python's RNG state as tuples again (a checkpoint may give lists)."""
    return tuple(_tuples(v) for v in x) if isinstance(x, list | tuple) else x


class DivergenceGuard(pl.Callback):
    """Stop at the first non-finite loss or gradient; warn once about an exploding loss.

    A NaN step would otherwise train on (``train/loss: nan``) and fail later, deep in the
    ranking. The stop names the step, the value and the last good checkpoint. Under a
    gradient scaler (``trainer.precision=16-mixed``) a non-finite gradient is an overflow the
    scaler skips, so it stops only once the scale has collapsed below ``MIN_SCALE``.

    Args:
        warn_factor: warn when the training loss, averaged over recent steps (a moving
            average over about 10), exceeds this multiple of its first value.
    """

    SETTLE = 10  # steps before the average is trusted: single early steps may spike
    # Gradients still overflowing float16 (65504) after scaling by 1e-4 are over ~6.5e8: a
    # divergence, not float16's range. The scaler halves the scale per overflow (2**16 at
    # first) with no floor: unstopped, such a run would skip every step to its end.
    MIN_SCALE = 1e-4

    def __init__(self, warn_factor: float = 3.0):
        check_positive("warn_factor", warn_factor)
        check(warn_factor > 1, "warn_factor", warn_factor, "must be > 1")
        self.warn_factor = warn_factor
        self.first: float | None = None
        self.average = 0.0
        self.steps = 0
        self.warned = False

    def state_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("first", "average", "steps", "warned")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        value = float(loss.detach())
        if not math.isfinite(value):
            raise self._diverged(trainer, "train/loss", value)
        if self.first is None:
            self.first = self.average = value
        self.steps += 1
        self.average += 0.1 * (value - self.average)
        limit = self.warn_factor * abs(self.first) + 1e-3
        if not self.warned and self.steps >= self.SETTLE and self.average > limit:
            self.warned = True
            rank_zero_warn(
                f"train/loss averages {self.average:.4g} at step {trainer.global_step}, over "
                f"{self.warn_factor:g}x its first value ({self.first:.4g}): training may be "
                "diverging (lower optimizer.lr, or clip with trainer.gradient_clip_val)"
            )

    def on_train_start(self, trainer, pl_module) -> None:
        # Walking the module tree for its parameters each step cost 0.3 ms: list them once.
        self._params = [p for p in pl_module.parameters() if p.requires_grad]

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        params = getattr(self, "_params", None) or list(pl_module.parameters())
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        # One fused call for every gradient's norm (clip_grad_norm_'s way): a loop of
        # per-tensor norms cost 3% of a small model's step.
        norms = torch._foreach_norm([g.detach() for g in grads])
        norm = float(torch.linalg.vector_norm(torch.stack(norms)))
        if math.isfinite(norm):
            return
        # A non-finite loss still stops the run (on_train_batch_end): the scale multiplies
        # only the backward, and neither the scaler nor Lightning checks the loss.
        scaler = getattr(trainer.precision_plugin, "scaler", None)  # 16-mixed only
        if scaler is not None and scaler.is_enabled():
            scale = scaler.get_scale()
            if scale >= self.MIN_SCALE:
                return  # the scaler skips this step and lowers its scale
            raise self._diverged(trainer, f"gradient norm (loss scale {scale:.3g})", norm)
        raise self._diverged(trainer, "gradient norm", norm)

    @staticmethod
    def _diverged(trainer: pl.Trainer, what: str, value: float) -> TrainingDiverged:
        return TrainingDiverged(
            f"step {trainer.global_step}: {what}={value}; last good checkpoint: "
            f"{last_good_checkpoint(trainer)} (lower optimizer.lr, or clip with "
            "trainer.gradient_clip_val)"
        )


class LastCheckpoint(pl.Callback):
    """Write ``checkpoints/last.ckpt`` at the end of every training epoch (and optionally
    every ``every_n_steps`` steps), whatever the monitored metric did.

    Lightning's ``save_last`` writes it only in epochs that also save a top-k checkpoint,
    so a crash lost every epoch after the best one. The epoch-end file, written after that
    epoch's validation, is the exact resume point; a mid-epoch one bounds the work a crash
    loses on long epochs (Lightning restarts the interrupted epoch).

    Args:
        dirpath: the checkpoint directory.
        every_n_steps: training steps between extra writes (null: at epoch ends only).
    """

    def __init__(self, dirpath: str, every_n_steps: int | None = None):
        if every_n_steps is not None:
            ok = isinstance(every_n_steps, int) and not isinstance(every_n_steps, bool)
            check(ok and every_n_steps > 0, "every_n_steps", every_n_steps, "must be > 0 or null")
        self.path, self.every_n_steps = Path(dirpath) / LAST, every_n_steps
        self.saved = False

    def _save(self, trainer: pl.Trainer) -> None:
        # atomic: AtomicCheckpointIO (conf/trainer); a full checkpoint, said explicitly
        # (left unset, Lightning logs that it defaults to one, at every save)
        trainer.save_checkpoint(self.path, weights_only=False)
        self.saved = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            self._save(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After the epoch's validation, and before the monitoring callbacks' epoch end
        # (ModelCheckpoint and EarlyStopping update their state in validation's end).
        self._save(trainer)


def last_good_checkpoint(trainer: pl.Trainer) -> str:
    """The newest checkpoint written in this run, for messages."""
    for callback in trainer.callbacks:
        if isinstance(callback, LastCheckpoint) and callback.saved:
            return str(callback.path)
    ckpt = trainer.checkpoint_callback
    return (ckpt.best_model_path if ckpt else "") or "none yet"


def early_stopping(cfg: Any) -> EarlyStopping:
    """Stop after ``stopping_step`` validations without improvement of ``optimized_metric``
    (RecBole's name), in the direction the best checkpoint is chosen in."""
    steps = cfg.stopping_step
    ok = isinstance(steps, int) and not isinstance(steps, bool) and steps >= 1
    if not ok:
        raise ConfigError("stopping_step", steps, "must be an integer >= 1, or null")
    checkpoint = (cfg.get("callbacks") or {}).get("model_checkpoint") or {}
    return EarlyStopping(
        monitor=cfg.optimized_metric, mode=checkpoint.get("mode", "max"), patience=steps
    )
