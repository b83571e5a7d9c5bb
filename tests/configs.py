"""The options of conf/ groups, found from the files: a new YAML is tested the moment it exists."""

from __future__ import annotations

import hydra
from omegaconf import OmegaConf

from twotower.config_check import CONF_DIR


def options(group: str) -> list[str]:
    """The option names of config group ``group`` (``conf/<group>/*.yaml``)."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def tower_kind(option: str) -> str:
    """What ``tower=<option>`` encodes: ``text`` or ``features`` (its class's ``input_kind``)."""
    target = OmegaConf.load(CONF_DIR / "tower" / f"{option}.yaml")._target_
    return getattr(hydra.utils.get_class(target), "input_kind", "text")


# Pretrained towers need a model directory (tests/hf_tiny.py builds one): tested on their own.
PRETRAINED_TOWERS = ["transformer"]
TEXT_TOWERS = [
    t for t in options("tower") if tower_kind(t) == "text" and t not in PRETRAINED_TOWERS
]
FEATURE_TOWERS = [t for t in options("tower") if tower_kind(t) == "features"]
LOSSES = options("loss")
