"""Hydra entry point: compose -> build and check every part -> fit -> validate/test -> report.

python -m twotower.train tower=lstm loss=pairwise_hinge
python -m twotower.train -m tower=mlp,lstm,cnn loss=pointwise,listwise_softmax
"""

from __future__ import annotations

import time
from typing import Any

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from pytorch_lightning.utilities import rank_zero_info

from twotower.allocator import keep_freed_memory
from twotower.build import build_for_data, check_parts, instantiate
from twotower.callbacks import FitStats, early_stopping
from twotower.checkpoint import read_tokenizer
from twotower.config_check import CONF_DIR, check_config, check_optimizer, run_cli
from twotower.errors import under, user_errors
from twotower.mining import HardNegativeMiner
from twotower.runs import is_resume, nothing_left_on_error, resume_target, resumed_config
from twotower.summary import run_result, write_results
from twotower.teacher import TeacherCache


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train and evaluate one configuration; returns what ``metrics.json`` holds."""
    started = time.perf_counter()
    check_config(cfg)  # missing, unknown and mistyped keys: one line, before any work
    check_optimizer(cfg)  # values torch refuses (optimizer.lr=-1), before the data are read
    check_parts(cfg)  # loss.margin=-1 and the like, before the data are read
    resume = resume_target(cfg.get("ckpt_path"))
    ckpt_path = str(resume.ckpt) if resume else cfg.get("ckpt_path")
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    keep_freed_memory(cfg.get("malloc_heap_mib") or 0)

    # A resumed run continues with the vocabulary its checkpoint's embeddings index.
    tokenizer = read_tokenizer(ckpt_path) if ckpt_path else instantiate(cfg.tokenizer, "tokenizer")
    datamodule = instantiate(cfg.data, "data", tokenizer=tokenizer)
    datamodule.prepare_data()
    datamodule.setup("fit")
    module = build_for_data(cfg, datamodule)
    if cfg.model.get("compile"):
        for tower in {module.query_tower, module.doc_tower}:  # one call when shared
            tower.compile()
    datamodule.warn_about_splits()
    run_test = cfg.run_test and "test" in datamodule.eval_splits
    if cfg.run_test and not run_test:
        rank_zero_info("twotower: the data have no test split: the test stage is skipped")

    stats = FitStats()
    callbacks = [instantiate(c, f"callbacks.{k}") for k, c in (cfg.get("callbacks") or {}).items()]
    if cfg.get("stopping_step") is not None:
        callbacks.append(early_stopping(cfg))
    miner = None
    if getattr(module.negatives, "hard", None) is not None:  # hard_negatives > 0
        with under("negatives"):
            miner = HardNegativeMiner(module.negatives.hard.mining)
        callbacks.append(miner)
    teacher = None
    if module.distill is not None:
        teacher = TeacherCache(cfg.get("teacher") or {})
        callbacks.append(teacher)
    logger = instantiate(cfg.logger, "logger") if cfg.get("logger") else False
    # GradCache steps by hand and clips itself (TwoTowerModule.gradient_clip).
    manual = {} if module.automatic_optimization else {"gradient_clip_val": None}
    trainer: pl.Trainer = instantiate(
        cfg.trainer, "trainer", callbacks=[*callbacks, stats], logger=logger, **manual
    )

    # A resumed run keeps the untrained metrics of its start (FitStats is in checkpoints).
    if not ckpt_path and cfg.eval_before_training and not trainer.fast_dev_run:
        untrained = first(trainer.validate(module, datamodule=datamodule, verbose=False))
        stats.untrained = {f"untrained/{k}": v for k, v in untrained.items()}
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    # Taken now: validate and test below restore the best checkpoint's callback states,
    # FitStats' counts of that epoch among them.
    fit = {**stats.totals(), "epochs": trainer.current_epoch, "global_step": trainer.global_step}
    minings = list(miner.minings) if miner is not None else None
    metrics: dict[str, float] = dict(stats.untrained)
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    ckpt = best or None  # fast_dev_run saves no checkpoint: evaluate the weights in memory
    metrics.update(
        first(trainer.validate(module, datamodule=datamodule, ckpt_path=ckpt, verbose=False))
    )
    if run_test:
        metrics.update(
            first(trainer.test(module, datamodule=datamodule, ckpt_path=ckpt, verbose=False))
        )

    result = run_result(cfg, trainer, fit, metrics, started, ckpt_path)
    if minings is not None:  # each mining's epoch, seconds and filter counts
        result["mining"] = minings
    if teacher is not None and teacher.entry is not None:  # encoded or cached, and seconds
        result["teacher"] = teacher.entry
    if trainer.is_global_zero:
        write_results(result, cfg, trainer, module.rankings, datamodule)
    return result


def first(results: list[dict[str, float]]) -> dict[str, float]:
    """The metrics of a validate or test call; none when it ran no batch (limit_*_batches=0)."""
    return results[0] if results else {}


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    out = HydraConfig.get().runtime.output_dir
    with user_errors():  # one line naming the key or the file, not a torch stack trace
        with nothing_left_on_error(out, fresh=not is_resume(cfg.get("ckpt_path"))):
            result = train(resumed_config(cfg))
    metric = cfg.get("optimized_metric")
    return result["metrics"].get(metric) if metric else None


if __name__ == "__main__":
    run_cli(main, str(CONF_DIR), "train")
