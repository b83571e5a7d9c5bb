"""Hydra entry point: compose -> build and check every part -> fit -> validate/test -> report.

python -m twotower.train tower=lstm loss=pairwise_hinge
python -m twotower.train -m tower=mlp,lstm,cnn loss=pointwise,listwise_softmax
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import resource
import time
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import EarlyStopping
from pytorch_lightning.loggers import Logger
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn

from twotower.callbacks import FitStats
from twotower.config_check import check_config, run_cli
from twotower.data.features import Feature
from twotower.data.tokenizers import tokenizer_from_state
from twotower.errors import ConfigError, DataError, user_errors
from twotower.module import TwoTowerModule
from twotower.provenance import provenance
from twotower.retrieval.runfile import write_run
from twotower.runs import keep_previous, resume_target
from twotower.summary import flat_hparams, print_metrics

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def build(cfg: DictConfig, key: str, **kwargs: Any) -> Any:
    """Instantiate ``cfg`` (found at ``key``); a :class:`ConfigError` is re-raised with the key."""
    try:
        return hydra.utils.instantiate(cfg, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        if isinstance(cause, ConfigError):
            raise cause.under(key) from None
        if isinstance(cause, DataError):
            raise cause from None
        raise ConfigError(
            key, OmegaConf.select(cfg, "_target_"), f"cannot be built: {cause or e}"
        ) from e
    except ConfigError as e:
        raise e.under(key) from None


# What each training-row format holds, for messages that say which format a part needs.
FORMAT_COLUMNS = {
    "pairs": "pairs (query, doc)",
    "labelled": "labelled (label, query, doc)",
    "presampled": "presampled (query, doc, neg_1..neg_K)",
}


def doc_tower_config(cfg: DictConfig) -> DictConfig:
    """The document tower's config: its own (``tower@doc_tower=...``) or the query tower's."""
    return cfg.doc_tower if cfg.get("doc_tower") is not None else cfg.tower


def check_tower_input(tower_cfg: DictConfig, key: str, kind: str) -> None:
    """A text tower on feature data (or the reverse) is a config error, named before building."""
    target = OmegaConf.select(tower_cfg, "_target_")
    try:
        tower_kind = getattr(hydra.utils.get_class(target), "input_kind", "text")
    except Exception:  # noqa: BLE001 - an unknown target is reported by build() below
        return
    if tower_kind != kind:
        options = "tower=features or tower=id" if kind == "features" else "tower=mlp, lstm or cnn"
        expected = f"encodes {tower_kind}, but the data give {kind}: use {options}"
        raise ConfigError(f"{key}._target_", target, expected)


def inputs_state(inputs: dict[str, Any]) -> dict[str, Any]:
    """A tower's data-given arguments as plain data (feature schemas as dicts) for checkpoints."""
    return {
        k: [dataclasses.asdict(f) for f in v] if k == "features" else v for k, v in inputs.items()
    }


def inputs_from_state(state: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`inputs_state`."""
    return {k: [Feature(**f) for f in v] if k == "features" else v for k, v in state.items()}


def build_towers(cfg: DictConfig, inputs: dict[str, dict[str, Any]], kind: str):
    """The query tower and the document tower (``None`` when shared), from the config."""
    check_tower_input(cfg.tower, "tower", kind)
    query_tower = build(cfg.tower, "tower", **inputs["query"])
    if cfg.model.share_towers:
        if kind == "features":
            raise ConfigError(
                "model.share_towers", True, "users and items have different features: set false"
            )
        if cfg.get("doc_tower") is not None and cfg.doc_tower != cfg.tower:
            raise ConfigError(
                "model.share_towers",
                True,
                "needs the same tower on both sides; drop the tower@doc_tower "
                "override or set model.share_towers=false",
            )
        return query_tower, None
    check_tower_input(doc_tower_config(cfg), "doc_tower", kind)
    return query_tower, build(doc_tower_config(cfg), "doc_tower", **inputs["doc"])


def build_module(cfg: DictConfig, datamodule: pl.LightningDataModule) -> TwoTowerModule:
    """Build towers, similarity, negatives and loss, and check that they fit the data."""
    inputs = {side: datamodule.tower_inputs(side) for side in ("query", "doc")}
    query_tower, doc_tower = build_towers(cfg, inputs, datamodule.input_kind)
    negatives = build(cfg.negatives, "negatives")
    try:
        negatives.check_batch_size(cfg.data.batch_size)
    except ConfigError as e:
        raise e.under("negatives") from None
    loss = build(cfg.loss, "loss")
    fmt = datamodule.train_format
    if fmt not in negatives.formats:
        needs = " or ".join(FORMAT_COLUMNS[f] for f in negatives.formats)
        raise ConfigError(
            "negatives._target_",
            cfg.negatives._target_,
            f"needs training rows of format {needs}, but the data are {FORMAT_COLUMNS[fmt]}",
        )
    if loss.needs_negatives_per_row and fmt == "labelled":
        raise ConfigError(
            "loss._target_",
            cfg.loss._target_,
            "ranks a relevant against a non-relevant candidate of the same "
            f"query, but the data are {FORMAT_COLUMNS['labelled']}, one candidate per row; "
            "use loss=pointwise or presampled data",
        )
    if getattr(negatives, "frequency", None) is not None and not loss.needs_negatives_per_row:
        # logQ subtracts log p from each logit, +5 to +12 here: losses that compare the
        # scores of a row ignore that level, a sigmoid of each score alone saturates.
        raise ConfigError(
            "negatives.logq",
            cfg.negatives.logq,
            "corrects a softmax over sampled candidates; loss=pointwise scores each candidate "
            "alone, where the shift saturates the sigmoid: use a pairwise or listwise loss, "
            "or negatives.logq=null",
        )
    negatives.bind(datamodule.catalogue())
    return TwoTowerModule(
        query_tower=query_tower,
        doc_tower=doc_tower,
        similarity=build(cfg.similarity, "similarity"),
        negatives=negatives,
        loss=loss,
        optimizer=build(cfg.optimizer, "optimizer"),
        scheduler=build(cfg.scheduler, "scheduler") if cfg.get("scheduler") else None,
        scheduler_monitor=cfg.model.scheduler_monitor,
        recall_at=tuple(cfg.model.recall_at),
        metrics=tuple(cfg.model.metrics),
        run_depth=cfg.model.run_depth,
        config=OmegaConf.to_container(cfg, resolve=True),
        tokenizer_state=datamodule.tokenizer.state_dict(),
        tower_inputs={side: inputs_state(kw) for side, kw in inputs.items()},
    )


def log_final(logger: Logger, params: dict[str, Any], metrics: dict[str, float], step: int):
    """Hyper-parameters with the final metrics (TensorBoard's HPARAMS tab compares runs)."""
    final = {f"final/{k}": v for k, v in metrics.items()}
    if "metrics" in inspect.signature(logger.log_hyperparams).parameters:
        logger.log_hyperparams(params, metrics=final)
    else:
        logger.log_hyperparams(params)
        logger.log_metrics(final, step=step)
    logger.save()


def write_runs(module: TwoTowerModule, datamodule, out_dir: Path, tag: str) -> None:
    """TREC run files of the last full-corpus rankings (``run.val.trec``, ``run.test.trec``)."""
    for stage, ranking in module.rankings.items():
        split = datamodule.eval_splits[stage]
        path = out_dir / f"run.{stage}.trec"
        write_run(path, split.query_ids, datamodule.doc_ids, ranking.indices, ranking.scores, tag)


def peak_memory_mib() -> float:
    """This process's peak resident memory so far (MiB)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kib / 1024


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train and evaluate one configuration; returns what ``metrics.json`` holds."""
    started = time.perf_counter()
    check_config(cfg)  # missing, unknown and mistyped keys: one line, before any work
    resume = resume_target(cfg.get("ckpt_path"))
    ckpt_path = str(resume.ckpt) if resume else cfg.get("ckpt_path")
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    out_dir = Path(cfg.paths.output_dir)

    if ckpt_path:  # continue with the vocabulary the checkpoint's embeddings index
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        tokenizer = tokenizer_from_state(ckpt["hyper_parameters"]["tokenizer_state"])
    else:
        tokenizer = build(cfg.tokenizer, "tokenizer")
    datamodule = build(cfg.data, "data", tokenizer=tokenizer)
    datamodule.prepare_data()
    datamodule.setup("fit")
    module = build_module(cfg, datamodule)
    warn_about_data(datamodule)
    run_test = cfg.run_test and "test" in datamodule.eval_splits
    if cfg.run_test and not run_test:
        rank_zero_info("twotower: the data have no test split: the test stage is skipped")

    stats = FitStats()
    callbacks = [build(c, f"callbacks.{k}") for k, c in (cfg.get("callbacks") or {}).items()]
    if cfg.get("stopping_step") is not None:
        callbacks.append(early_stopping(cfg))
    logger = build(cfg.logger, "logger") if cfg.get("logger") else False
    trainer: pl.Trainer = build(
        cfg.trainer, "trainer", callbacks=[*callbacks, stats], logger=logger
    )

    # A resumed run keeps the untrained metrics of its start (FitStats is in checkpoints).
    if not ckpt_path and cfg.eval_before_training and not trainer.fast_dev_run:
        untrained = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
        stats.untrained = {f"untrained/{k}": v for k, v in untrained.items()}
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    metrics: dict[str, float] = dict(stats.untrained)
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    ckpt = best or None  # fast_dev_run saves no checkpoint: evaluate the weights in memory
    metrics.update(
        trainer.validate(module, datamodule=datamodule, ckpt_path=ckpt, verbose=False)[0]
    )
    if run_test:
        metrics.update(
            trainer.test(module, datamodule=datamodule, ckpt_path=ckpt, verbose=False)[0]
        )

    result = {
        "metrics": {k: float(v) for k, v in metrics.items()},
        "wall_time_s": time.perf_counter() - started,
        "train_time_s": stats.seconds,
        # per epoch, without the validation inside fit (full-corpus ranking each epoch)
        "epoch_time_s": (stats.seconds - stats.val_seconds) / max(1, trainer.current_epoch),
        "validation_time_s": stats.val_seconds,
        "peak_memory_mib": peak_memory_mib(),
        "train_samples": stats.samples,
        "train_samples_per_s": stats.samples / stats.seconds if stats.seconds else 0.0,
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "best_checkpoint": best,
        "resumed_from": ckpt_path,
        "seed": cfg.seed,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "provenance": provenance(),  # git commit, package versions: what reproduces the run
    }
    if trainer.is_global_zero:
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in ("metrics.json", *(f"run.{stage}.trec" for stage in module.rankings)):
            keep_previous(out_dir / name)  # a resumed, finished run keeps its first results
        (out_dir / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
        write_runs(module, datamodule, out_dir, tag=cfg.run_tag)
        if logger:
            log_final(logger, flat_hparams(cfg), result["metrics"], trainer.global_step)
        print_metrics(result, out_dir / "metrics.json")
    return result


def warn_about_data(datamodule: pl.LightningDataModule) -> None:
    """Data that train or validate but cannot say much: warn before the run starts."""
    n_val = len(datamodule.eval_splits["val"].query_ids)
    if n_val < 2:
        rank_zero_warn(
            f"the validation split has {n_val} judged query: the best checkpoint and early "
            "stopping are chosen on it alone"
        )


def early_stopping(cfg: DictConfig) -> pl.Callback:
    """Stop after ``stopping_step`` validations without improvement (RecBole's name)."""
    steps = cfg.stopping_step
    ok = isinstance(steps, int) and not isinstance(steps, bool) and steps >= 1
    if not ok:
        raise ConfigError("stopping_step", steps, "must be an integer >= 1, or null")
    checkpoint = (cfg.get("callbacks") or {}).get("model_checkpoint") or {}
    return EarlyStopping(
        monitor=cfg.optimized_metric, mode=checkpoint.get("mode", "max"), patience=steps
    )


def resumed_config(cfg: DictConfig) -> DictConfig:
    """A resume's config: the run's own overrides, then this command's (``trainer.max_epochs``
    extends a run); so ``ckpt_path=last`` alone continues the newest run as it was."""
    resume = resume_target(cfg.get("ckpt_path"))
    if resume is None:
        return cfg
    saved = OmegaConf.load(resume.run_dir / ".hydra" / "overrides.yaml")
    merged: dict[str, str] = {}
    for override in [*saved, *HydraConfig.get().overrides.task]:
        key = override.split("=", 1)[0].lstrip("+~")
        if key != "ckpt_path":
            merged[key] = override
    merged["ckpt_path"] = f"ckpt_path='{resume.ckpt}'"
    return hydra.compose(config_name="train", overrides=list(merged.values()))


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    with user_errors():  # one line naming the key or the file, not a torch stack trace
        result = train(resumed_config(cfg))
    metric = cfg.get("optimized_metric")
    return result["metrics"].get(metric) if metric else None


if __name__ == "__main__":
    run_cli(main, str(CONF_DIR), "train")
