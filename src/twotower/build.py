"""The one build path: a run config plus the data's tower inputs -> a TwoTowerModule.

``twotower.train`` builds from a datamodule (:func:`build_for_data`); checkpoints, and through
them ``evaluate`` and ``export``, build from the tower inputs kept in the checkpoint
(:func:`build_module`). Before training, every part checks that it fits the others and the
data (``Negatives.check``, ``Loss.check``, ``input_kind``), each error one line naming the key.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf

from twotower.data.components.features import Feature
from twotower.errors import ConfigError, DataError, under
from twotower.module import TwoTowerModule
from twotower.retrieval.ranking import DEFAULT_METRICS


def instantiate(cfg: DictConfig, key: str, **kwargs: Any) -> Any:
    """Instantiate ``cfg`` (found at ``key``); a :class:`ConfigError` is re-raised with the key
    the user wrote the value at (``tower.model`` for ``tokenizer.model: ${tower.model}``)."""
    try:
        return hydra.utils.instantiate(cfg, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        if isinstance(cause, ConfigError):
            raise written_at(cfg, cause.under(key), key) from None
        if isinstance(cause, DataError):
            raise cause from None
        raise ConfigError(
            key, OmegaConf.select(cfg, "_target_"), f"cannot be built: {cause or e}"
        ) from e
    except ConfigError as e:
        raise written_at(cfg, e.under(key), key) from None


def written_at(cfg: DictConfig, error: ConfigError, key: str) -> ConfigError:
    """``error`` renamed to the key its value interpolates, if it is one (``${tower.model}``)."""
    leaf = error.key[len(key) + 1 :]
    node = cfg._get_node(leaf) if leaf and "." not in leaf and leaf in cfg else None
    source = re.fullmatch(r"\$\{([\w.@]+)\}", str(node._value())) if node is not None else None
    return ConfigError(source[1], error.value, error.expected) if source else error


def doc_tower_config(cfg: DictConfig) -> DictConfig:
    """The document tower's config: its own (``tower@doc_tower=...``) or the query tower's."""
    return cfg.doc_tower if cfg.get("doc_tower") is not None else cfg.tower


def check_tower_input(tower_cfg: DictConfig, key: str, kind: str) -> None:
    """A text tower on feature data (or the reverse) is a config error, named before building."""
    target = OmegaConf.select(tower_cfg, "_target_")
    try:
        tower_kind = getattr(hydra.utils.get_class(target), "input_kind", "text")
    except Exception:  # noqa: BLE001 - an unknown target is reported by instantiate()
        return
    if tower_kind != kind:
        options = "tower=features or tower=id" if kind == "features" else "tower=mlp, lstm or cnn"
        expected = f"encodes {tower_kind}, but the data give {kind}: use {options}"
        raise ConfigError(f"{key}._target_", target, expected)


def check_parts(cfg: DictConfig) -> None:
    """Build the parts that need no data (similarity, negatives, loss, distillation and
    trainable text towers, over a 2-id vocabulary) and drop them: a bad value fails before
    the data are read. What depends on the data is checked again by :func:`build_for_data`."""
    for key in ("similarity", "negatives", "loss", "distill"):
        if cfg.get(key) is not None:
            instantiate(cfg[key], key)
    for key in ("tower", "doc_tower"):
        node = cfg.get(key)
        target = OmegaConf.select(node, "_target_") if node is not None else None
        try:
            tower = hydra.utils.get_class(target) if target else None
        except Exception:  # noqa: BLE001 - an unknown target is reported by instantiate()
            continue
        # A pretrained tower would load its model here: it is built once, with the data.
        if getattr(tower, "input_kind", None) == "text" and not hasattr(tower, "tokenizer_class"):
            instantiate(node, key, vocab_size=2)


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
    query_tower = instantiate(cfg.tower, "tower", **inputs["query"])
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
    return query_tower, instantiate(doc_tower_config(cfg), "doc_tower", **inputs["doc"])


def restore_kwargs(tower) -> dict[str, Any]:
    """A tower's own ``restore_kwargs()`` (e.g. a transformer's config), or nothing."""
    return tower.restore_kwargs() if hasattr(tower, "restore_kwargs") else {}


def build_module(
    cfg: DictConfig,
    inputs: dict[str, dict[str, Any]],
    tokenizer_state: dict[str, Any],
    data_format: str | None = None,
) -> TwoTowerModule:
    """A :class:`TwoTowerModule` from the run config and the towers' data-given arguments.

    Args:
        cfg: the run config (``conf/train.yaml`` composed, or a checkpoint's).
        inputs: ``{"query": kwargs, "doc": kwargs}`` for the towers beyond their config
            (vocabulary size, feature schema).
        tokenizer_state: the tokenizer's ``state_dict()``, kept in checkpoints.
        data_format: the training rows' format; given, the negatives and the loss check that
            they can train on it (a checkpoint being loaded is not checked).
    """
    kind = "features" if "features" in inputs["query"] else "text"
    query_tower, doc_tower = build_towers(cfg, inputs, kind)
    # What a tower needs to be rebuilt without its source files (a pretrained model's
    # architecture) goes into the checkpoint beside the data-given arguments.
    sides = (("query", query_tower), ("doc", doc_tower or query_tower))
    inputs = {side: {**inputs[side], **restore_kwargs(tower)} for side, tower in sides}
    negatives = instantiate(cfg.negatives, "negatives")
    loss = instantiate(cfg.loss, "loss")
    distill = instantiate(cfg.distill, "distill") if cfg.get("distill") else None
    if data_format is not None:
        with under("negatives"):
            negatives.check(loss, data_format, cfg.data.batch_size)
        with under("loss"):
            loss.check(data_format)
        if distill is not None:
            with under("distill"):
                distill.check(data_format)
    model = cfg.model
    chunk_size, clip = grad_cache_options(cfg)
    return TwoTowerModule(
        query_tower=query_tower,
        doc_tower=doc_tower,
        similarity=instantiate(cfg.similarity, "similarity"),
        negatives=negatives,
        loss=loss,
        optimizer=instantiate(cfg.optimizer, "optimizer"),
        scheduler=instantiate(cfg.scheduler, "scheduler") if cfg.get("scheduler") else None,
        scheduler_monitor=model.get("scheduler_monitor", "val/loss"),
        scheduler_interval=model.get("scheduler_interval", "epoch"),
        recall_at=tuple(model.recall_at),
        metrics=tuple(model.get("metrics") or DEFAULT_METRICS),
        run_depth=model.get("run_depth", 100),
        config=OmegaConf.to_container(cfg, resolve=True),
        tokenizer_state=tokenizer_state,
        tower_inputs={side: inputs_state(kw) for side, kw in inputs.items()},
        grad_cache=chunk_size,
        gradient_clip=clip,
        distill=distill,
    )


def grad_cache_options(cfg: DictConfig) -> tuple[int | None, tuple[float | None, str | None]]:
    """``model.grad_cache.chunk_size`` and the clipping the module then applies itself.

    GradCache steps the optimizer by hand (Lightning's manual optimization), which takes
    neither Lightning's gradient clipping nor its accumulation: the module clips instead,
    and accumulation is refused (GradCache is the way to a big batch here).
    """
    chunk_size = OmegaConf.select(cfg, "model.grad_cache.chunk_size")
    trainer = cfg.get("trainer") or {}
    clip = (trainer.get("gradient_clip_val"), trainer.get("gradient_clip_algorithm"))
    if chunk_size is None:
        return None, clip
    accumulate = trainer.get("accumulate_grad_batches", 1)
    if accumulate not in (None, 1):
        raise ConfigError(
            "trainer.accumulate_grad_batches",
            accumulate,
            "must be 1 with model.grad_cache.chunk_size (GradCache computes the whole "
            "batch's gradient in one step: raise data.batch_size instead)",
        )
    if (
        clip[0]
        and "16" in str(trainer.get("precision"))
        and "bf16" not in str(trainer.get("precision"))
    ):
        raise ConfigError(
            "trainer.gradient_clip_val",
            clip[0],
            "cannot clip with model.grad_cache and precision=16-mixed (the scaled gradients "
            "are unscaled only at the step): use bf16-mixed or 32-true, or no clipping",
        )
    return chunk_size, clip


def check_tokenizer(cfg: DictConfig, tokenizer) -> None:
    """A pretrained tower reads its own tokenizer's ids: any other tokenizer is a config error
    (its ids would index the model's embeddings as other sub-words)."""
    for key in ("tower", "doc_tower"):
        node = cfg.get(key)
        target = OmegaConf.select(node, "_target_") if node is not None else None
        wanted = getattr(hydra.utils.get_class(target), "tokenizer_class", None) if target else None
        if wanted and type(tokenizer).__name__ != wanted:
            raise ConfigError(
                "tokenizer._target_",
                f"{type(tokenizer).__module__}.{type(tokenizer).__qualname__}",
                f"{key}={target.rsplit('.', 1)[-1]} reads its own model's token ids: use "
                "tokenizer=hf",
            )


def check_monitors(cfg: DictConfig, eval_rows: bool) -> None:
    """A watched metric that validation will not log (``data.eval_rows=false`` logs no
    ``val/loss``) is a config error now, not a crash at the end of the first epoch."""
    if eval_rows:
        return
    watched = {"optimized_metric": cfg.get("optimized_metric")}
    scheduler = OmegaConf.select(cfg, "scheduler._target_") or ""
    if scheduler.endswith("ReduceLROnPlateau"):
        watched["model.scheduler_monitor"] = OmegaConf.select(cfg, "model.scheduler_monitor")
    for key, metric in watched.items():
        name = str(metric or "").split("/", 1)[-1]
        if name in ("loss", "accuracy") or name.startswith("batch/"):
            raise ConfigError(
                key,
                metric,
                "is a metric of the validation rows, which data.eval_rows=false skips: watch a "
                "full-ranking metric (val/ndcg@10) or set data.eval_rows=true",
            )


def build_for_data(cfg: DictConfig, datamodule) -> TwoTowerModule:
    """The module for training on ``datamodule`` (set up): checked against its rows' format and
    batch size, its negatives bound to the training data."""
    check_tokenizer(cfg, datamodule.tokenizer)
    check_monitors(cfg, datamodule.eval_rows)
    inputs = {side: datamodule.tower_inputs(side) for side in ("query", "doc")}
    module = build_module(
        cfg, inputs, datamodule.tokenizer.state_dict(), data_format=datamodule.train_format
    )
    with under("negatives"):  # a setting the data cannot hold (negatives.memory_size)
        module.negatives.bind(datamodule.catalogue())
    return module
