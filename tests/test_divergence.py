"""DivergenceGuard under a gradient scaler: an overflow is a skipped step, not divergence."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.precision import MixedPrecision

from twotower.callbacks import DivergenceGuard
from twotower.errors import TrainingDiverged


class SumOfLinear(pl.LightningModule):
    """A float16 sum whose bias gradient is the loss scale: 2**16 overflows float16 (max
    65504), 2**15 does not."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 2)
        self.scales: list[float] = []

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        self.scales.append(self.trainer.precision_plugin.scaler.get_scale())
        return self.linear(batch[0]).sum()  # float16 under autocast

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_an_overflow_under_a_gradient_scaler_is_a_skipped_step():
    # Lightning turns 16-mixed into bf16-mixed on a CPU: the float16 plugin is passed directly.
    pl.seed_everything(0)
    module = SumOfLinear()
    before = [p.detach().clone() for p in module.parameters()]
    trainer = pl.Trainer(
        accelerator="cpu",
        plugins=[MixedPrecision("16-mixed", "cpu", torch.amp.GradScaler("cpu"))],
        callbacks=[DivergenceGuard()],
        max_steps=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    data = torch.utils.data.TensorDataset(torch.rand(3, 4))  # one row a step: bias grad = scale
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=1))
    # The first step overflowed and was skipped (the scale halved); the others trained.
    assert module.scales == [2.0**16, 2.0**15, 2.0**15]
    changed = [(p - b).abs().max() > 1e-6 for p, b in zip(module.parameters(), before, strict=True)]
    assert any(changed)  # the steps after the skipped one trained


def stub_trainer(scaler: torch.amp.GradScaler | None) -> SimpleNamespace:
    """What the guard reads of a trainer: the precision plugin's scaler and, to stop, the
    step and the checkpoints."""
    return SimpleNamespace(
        precision_plugin=SimpleNamespace(scaler=scaler),
        global_step=7,
        callbacks=[],
        checkpoint_callback=None,
    )


def infinite_gradient() -> torch.nn.Module:
    module = torch.nn.Linear(3, 1)
    module.weight.grad = torch.tensor([[1.0, float("inf"), 0.0]])
    return module


@pytest.mark.parametrize(
    "scaler, diverged",
    [
        (torch.amp.GradScaler("cpu"), False),  # the scaler skips the step
        (None, True),  # 32-true and bf16-mixed: nothing skips it
        (torch.amp.GradScaler("cpu", enabled=False), True),
        (torch.amp.GradScaler("cpu", init_scale=1e-5), True),  # the scale has collapsed
    ],
    ids=["scaler", "no_scaler", "disabled_scaler", "collapsed_scale"],
)
def test_an_infinite_gradient_is_divergence_unless_a_scaler_skips_it(scaler, diverged):
    guard, trainer, module = DivergenceGuard(), stub_trainer(scaler), infinite_gradient()
    if not diverged:
        guard.on_before_optimizer_step(trainer, module, optimizer=None)
        return
    with pytest.raises(TrainingDiverged, match=r"^step 7: gradient norm.*=inf; last good"):
        guard.on_before_optimizer_step(trainer, module, optimizer=None)


def test_a_non_finite_loss_stops_even_under_a_scaler():
    # The scale multiplies only the backward: a NaN loss is the forward's, no skip fixes it.
    guard, trainer = DivergenceGuard(), stub_trainer(torch.amp.GradScaler("cpu"))
    with pytest.raises(TrainingDiverged, match=r"^step 7: train/loss=nan"):
        guard.on_train_batch_end(trainer, None, torch.tensor(float("nan")), None, 0)
