"""What a finished run reports: ``metrics.json``, TREC run files, TensorBoard's HPARAMS tab and
a table on the console."""

from __future__ import annotations

import inspect
import json
import resource
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import Logger
from rich.console import Console
from rich.table import Table

from twotower.provenance import provenance
from twotower.retrieval.runfile import write_run
from twotower.runs import keep_previous

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
    """Print the final metrics as one table (untrained validation, validation and test), then
    where they were written and, for a training run, its counts and times."""
    metrics = result["metrics"]
    names = sorted({k.split("/", 1)[1] for k in metrics if k.startswith(("val/", "test/"))})
    table = Table(title="twotower: final metrics")
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
    console.print(f"written to {path}", soft_wrap=True)  # one line: a path to copy whole
    if "train_samples" not in result:  # an evaluation: nothing was trained
        return
    if result.get("best_checkpoint"):
        console.print(f"best checkpoint: {result['best_checkpoint']}", soft_wrap=True)
    # A resumed run's training counts are the whole run's; the wall time is this command's.
    whole = " (the whole run, resumed)" if result.get("resumed_from") else ""
    console.print(
        f"train{whole}: {result['train_samples']} samples in {result['train_time_s']:.1f} s "
        f"({result['train_samples_per_s']:.0f}/s), validation {result['validation_time_s']:.1f} s; "
        f"this command's wall time {result['wall_time_s']:.1f} s",
        soft_wrap=True,
    )


def peak_memory_mib() -> float:
    """This process's peak resident memory so far (MiB)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kib / 1024


def run_result(
    cfg: DictConfig,
    trainer: pl.Trainer,
    fit: dict[str, float],
    metrics: dict[str, float],
    started: float,
    resumed_from: str | None,
) -> dict[str, Any]:
    """What ``metrics.json`` holds for a training run that began at ``started``.

    Args:
        fit: the fit's totals (:meth:`FitStats.totals`), ``epochs`` and ``global_step``,
            taken when ``fit`` returned.
    """
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    train_s = fit["train_seconds"]  # training batches only (FitStats)
    return {
        "metrics": {k: float(v) for k, v in metrics.items()},
        "wall_time_s": time.perf_counter() - started,
        # the whole fit: training, validation (the full-corpus ranking), checkpoint writes
        "fit_time_s": fit["seconds"],
        "train_time_s": train_s,
        "epoch_time_s": train_s / max(1, fit["epochs"]),
        "validation_time_s": fit["val_seconds"],
        "peak_memory_mib": peak_memory_mib(),
        "train_samples": fit["samples"],
        "train_samples_per_s": fit["samples"] / train_s if train_s > 0 else 0.0,
        "epochs": fit["epochs"],
        "global_step": fit["global_step"],
        "best_checkpoint": best,
        "resumed_from": resumed_from,
        "seed": cfg.seed,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "provenance": provenance(),  # git commit, package versions: what reproduces the run
    }


def log_final(logger: Logger, params: dict[str, Any], metrics: dict[str, float], step: int):
    """Hyper-parameters with the final metrics (TensorBoard's HPARAMS tab compares runs)."""
    final = {f"final/{k}": v for k, v in metrics.items()}
    if "metrics" in inspect.signature(logger.log_hyperparams).parameters:
        logger.log_hyperparams(params, metrics=final)
    else:
        logger.log_hyperparams(params)
        logger.log_metrics(final, step=step)
    logger.save()


def write_results(
    result: dict[str, Any], cfg: DictConfig, trainer: pl.Trainer, rankings: dict, datamodule
) -> None:
    """``metrics.json`` and ``run.<stage>.trec`` in the run directory, the final metrics in
    the logger, and the table on the console; a resumed, finished run keeps its first ones."""
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in ("metrics.json", *(f"run.{stage}.trec" for stage in rankings)):
        keep_previous(out_dir / name)
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    for stage, ranking in rankings.items():
        split = datamodule.eval_splits[stage]
        write_run(
            out_dir / f"run.{stage}.trec",
            split.query_ids,
            datamodule.doc_ids,
            ranking.indices,
            ranking.scores,
            cfg.run_tag,
        )
    if trainer.logger:
        log_final(trainer.logger, flat_hparams(cfg), result["metrics"], trainer.global_step)
    print_metrics(result, out_dir / "metrics.json")
