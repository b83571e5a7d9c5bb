"""What a finished run reports: hyper-parameters for TensorBoard's HPARAMS tab and a table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

# Config sections that describe the experiment (paths, logger and callbacks do not).
HPARAM_SECTIONS = (
    "tower",
    "doc_tower",
    "similarity",
    "negatives",
    "loss",
    "optimizer",
    "scheduler",
    "model",
    "data",
    "tokenizer",
)


def flat_hparams(cfg: DictConfig) -> dict[str, Any]:
    """Scalar settings keyed by config path, plus the config-group choices of the run."""
    params: dict[str, Any] = {"seed": cfg.seed, "trainer.max_epochs": cfg.trainer.get("max_epochs")}
    if HydraConfig.initialized():
        choices = HydraConfig.get().runtime.choices
        params.update({k: v for k, v in choices.items() if not k.startswith("hydra") and v})
    container = OmegaConf.to_container(cfg, resolve=True)

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if not str(k).startswith("_"):
                    walk(v, f"{prefix}.{k}")
        elif node is None or isinstance(node, bool | int | float | str):
            params[prefix] = "none" if node is None else node
        else:
            params[prefix] = str(node)

    for section in HPARAM_SECTIONS:
        if container.get(section) is not None:
            walk(container[section], section)
    return params


def print_metrics(result: dict[str, Any], path: Path) -> None:
    """Print the final metrics as one table: untrained validation, validation and test."""
    metrics = result["metrics"]
    names = sorted({k.split("/", 1)[1] for k in metrics if k.startswith(("val/", "test/"))})
    table = Table(title=f"twotower: final metrics (written to {path})")
    table.add_column("metric")
    columns = [("untrained val", "untrained/val/"), ("val (best)", "val/"), ("test", "test/")]
    columns = [(t, p) for t, p in columns if any(k.startswith(p) for k in metrics)]
    for title, _ in columns:
        table.add_column(title, justify="right")
    for name in names:
        row = [f"{metrics[p + name]:.4f}" if p + name in metrics else "" for _, p in columns]
        table.add_row(name, *row)
    console = Console()
    console.print(table)
    if "train_samples" not in result:  # an evaluation: nothing was trained
        return
    console.print(
        f"train: {result['train_samples']} samples in {result['train_time_s']:.1f} s "
        f"({result['train_samples_per_s']:.0f}/s); wall time {result['wall_time_s']:.1f} s"
    )
