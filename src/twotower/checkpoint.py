"""Rebuild a trained TwoTowerModule and its tokenizer from a checkpoint alone.

Checkpoints hold plain data (weights, the resolved run config, the tokenizer state), so they
load with ``weights_only=True`` and need neither the ``conf/`` tree nor the training data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from twotower.data.tokenizers import Tokenizer, tokenizer_from_state
from twotower.errors import ConfigError
from twotower.module import TwoTowerModule
from twotower.retrieval.ranking import DEFAULT_METRICS


def read_checkpoint(path: str | Path, key: str = "ckpt") -> dict[str, Any]:
    """The checkpoint's contents; a missing or foreign file is a :class:`ConfigError`."""
    if not path or not Path(path).is_file():
        raise ConfigError(key, str(path), "no such checkpoint file")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    hparams = ckpt.get("hyper_parameters", {})
    if "config" not in hparams or "tokenizer_state" not in hparams:
        raise ConfigError(key, str(path), "is not a twotower checkpoint (no config / tokenizer)")
    return ckpt


def load_module(
    path: str | Path, key: str = "ckpt"
) -> tuple[TwoTowerModule, Tokenizer, DictConfig]:
    """The module (in eval mode), its tokenizer and the run config of checkpoint ``path``."""
    # The entry point owns part building.
    from twotower.train import build, build_towers, inputs_from_state

    ckpt = read_checkpoint(path, key)
    hparams = ckpt["hyper_parameters"]
    cfg = OmegaConf.create(hparams["config"])
    tokenizer = tokenizer_from_state(hparams["tokenizer_state"])
    state = hparams.get("tower_inputs")
    if not state:  # checkpoints from before feature towers: text, sized by the tokenizer
        state = {side: {"vocab_size": tokenizer.vocab_size} for side in ("query", "doc")}
    inputs = {side: inputs_from_state(kw) for side, kw in state.items()}
    kind = "features" if "features" in inputs["query"] else "text"
    query_tower, doc_tower = build_towers(cfg, inputs, kind)
    module = TwoTowerModule(
        query_tower=query_tower,
        doc_tower=doc_tower,
        similarity=build(cfg.similarity, "similarity"),
        negatives=build(cfg.negatives, "negatives"),
        loss=build(cfg.loss, "loss"),
        optimizer=build(cfg.optimizer, "optimizer"),
        recall_at=tuple(cfg.model.recall_at),
        metrics=tuple(cfg.model.get("metrics") or DEFAULT_METRICS),
        run_depth=cfg.model.get("run_depth", 100),
        config=hparams["config"],
        tokenizer_state=hparams["tokenizer_state"],
        tower_inputs=hparams.get("tower_inputs"),
    )
    module.load_state_dict(ckpt["state_dict"])
    return module.eval(), tokenizer, cfg
