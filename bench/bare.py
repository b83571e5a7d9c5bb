"""The same model on the same batches in a bare PyTorch loop: what training costs without
Lightning, twotower's callbacks, logging or metrics.

The parts come from the run config through the one build path (:mod:`twotower.build`), the
batches from the datamodule's own train loader; the loop is forward, loss, backward, step.
"""

from __future__ import annotations

import time

import pytorch_lightning as pl
from omegaconf import DictConfig

from twotower.build import build_for_data, instantiate


def prepared(cfg: DictConfig):
    """The datamodule (set up) and module of ``cfg``, seeded as ``twotower.train`` seeds them."""
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = instantiate(cfg.data, "data", tokenizer=instantiate(cfg.tokenizer, "tokenizer"))
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule, build_for_data(cfg, datamodule)


def bare_epochs(cfg: DictConfig, epochs: int) -> dict[str, float]:
    """Train ``epochs`` epochs of ``cfg`` in a plain loop; seconds per epoch and samples/s."""
    datamodule, module = prepared(cfg)
    module.train()
    optimizer = module.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    loader = datamodule.train_dataloader()
    seconds, samples = [], 0
    for _ in range(epochs):
        start = time.perf_counter()
        for batch in loader:
            loss, _, _, _ = module.model_step(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            module.similarity.clamp_()
            samples += len(batch["doc_id"])
        seconds.append(time.perf_counter() - start)
    total = sum(seconds)
    return {
        "epoch_time_s": total / epochs,
        "samples_per_s": samples / total,
    }


def framework_epochs(cfg: DictConfig) -> dict[str, float]:
    """``twotower.train`` on ``cfg`` (no validation before, no test): its training time only."""
    from twotower.train import train

    result = train(cfg)
    return {
        "epoch_time_s": result["epoch_time_s"],
        "samples_per_s": result["train_samples_per_s"],
        "peak_memory_mib": result["peak_memory_mib"],
        "validation_s_per_epoch": result["validation_time_s"] / max(1, result["epochs"]),
    }
