"""Class paths renamed since 0.1.0, so checkpoints and exports made before keep loading.

Checkpoints keep the run config (with its ``_target_`` paths) and the tokenizer's class path;
this maps an old path to where the class lives now.
"""

from __future__ import annotations

from typing import Any

MOVED = {
    "twotower.data.datamodule.SyntheticDataModule": "twotower.data.synthetic.SyntheticDataModule",
    "twotower.data.beir_datamodule.BeirDataModule": "twotower.data.beir.BeirDataModule",
    "twotower.data.pairs_datamodule.PairFileDataModule": "twotower.data.pairs.PairFileDataModule",
    "twotower.data.recbole_datamodule.RecBoleDataModule": "twotower.data.recbole.RecBoleDataModule",
    "twotower.negatives.mixed.MixedNegatives": "twotower.negatives.in_batch.InBatchNegatives",
}
MOVED_MODULES = {"twotower.data.tokenizers": "twotower.data.components.tokenizers"}


def current_target(target: str) -> str:
    """Where class ``target`` (``module.Class``) lives now."""
    if target in MOVED:
        return MOVED[target]
    module, _, name = target.rpartition(".")
    return f"{MOVED_MODULES.get(module, module)}.{name}"


def current_config(node: Any) -> Any:
    """A plain-data config with every ``_target_`` moved to its current path."""
    if isinstance(node, dict):
        return {
            k: current_target(v) if k == "_target_" and isinstance(v, str) else current_config(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [current_config(v) for v in node]
    return node
