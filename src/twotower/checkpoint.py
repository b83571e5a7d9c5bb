"""Rebuild a trained TwoTowerModule and its tokenizer from a checkpoint alone.

Checkpoints hold plain data (weights, the resolved run config, the tokenizer state and the
towers' data-given arguments), so they load with ``weights_only=True`` and need neither the
``conf/`` tree nor the training data. The module is built by :func:`twotower.build.build_module`,
the path training takes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from twotower.build import build_module, inputs_from_state
from twotower.compat import current_config
from twotower.data.components.tokenizers import Tokenizer, tokenizer_from_state
from twotower.errors import ConfigError
from twotower.module import TwoTowerModule


def read_checkpoint(path: str | Path, key: str = "ckpt") -> dict[str, Any]:
    """The checkpoint's contents; a missing or foreign file is a :class:`ConfigError`."""
    if not path or not Path(path).is_file():
        raise ConfigError(key, str(path), "no such checkpoint file")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    hparams = ckpt.get("hyper_parameters", {})
    if "config" not in hparams or "tokenizer_state" not in hparams:
        raise ConfigError(key, str(path), "is not a twotower checkpoint (no config / tokenizer)")
    return ckpt


def read_tokenizer(path: str | Path, key: str = "ckpt_path") -> Tokenizer:
    """The tokenizer of checkpoint ``path`` (a resumed run keeps the vocabulary it indexes)."""
    return tokenizer_from_state(read_checkpoint(path, key)["hyper_parameters"]["tokenizer_state"])


def load_module(
    path: str | Path, key: str = "ckpt"
) -> tuple[TwoTowerModule, Tokenizer, DictConfig]:
    """The module (in eval mode), its tokenizer and the run config of checkpoint ``path``."""
    ckpt = read_checkpoint(path, key)
    hparams = ckpt["hyper_parameters"]
    cfg = OmegaConf.create(current_config(hparams["config"]))
    tokenizer = tokenizer_from_state(hparams["tokenizer_state"])
    state = hparams.get("tower_inputs")
    if not state:  # checkpoints from before feature towers: text, sized by the tokenizer
        state = {side: {"vocab_size": tokenizer.vocab_size} for side in ("query", "doc")}
    inputs = {side: inputs_from_state(kw) for side, kw in state.items()}
    module = build_module(cfg, inputs, hparams["tokenizer_state"])
    module.load_state_dict(ckpt["state_dict"])
    return module.eval(), tokenizer, cfg
