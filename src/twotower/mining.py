"""HardNegativeMiner: mine the training queries' hard negatives inside a run, and refresh them.

At the start of epoch ``mining.start_epoch`` (0: before training) the miner encodes every
training query and the whole corpus, ranks them with the exact blocked search, filters the
ranking (:mod:`twotower.retrieval.mining`) and gives the table to the negatives strategy;
every ``refresh_every`` epochs after, it does it again with the current weights (ANCE, Xiong
et al. ICLR 2021). ``source=model`` encodes with the model being trained; a checkpoint path
encodes with that checkpoint's towers (trained with the same tokenizer: token ids must mean
the same words). Every process mines the same table from the same weights.
"""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info

from twotower.errors import ConfigError, check
from twotower.retrieval.evaluation import CorpusEvaluator
from twotower.retrieval.mining import MiningWindow, mine_dense

KEYS = (
    "source",
    "rank_min",
    "rank_max",
    "margin",
    "relative_margin",
    "start_epoch",
    "refresh_every",
    "batch_size",
)


class _Rows:
    """Rows ``rows`` of a token or feature store, as a store (``len`` and ``batch``)."""

    def __init__(self, store: Any, rows: torch.Tensor):
        self.store, self.rows = store, rows

    def __len__(self) -> int:
        return len(self.rows)

    def batch(self, index: torch.Tensor):
        return self.store.batch(self.rows[index])


@torch.no_grad()
def mine_with_model(model, catalogue, window: MiningWindow, batch_size: int = 1024):
    """Rank the corpus for every training query of ``catalogue`` with ``model``'s towers.

    Returns ``(ids, table, counts, encode_s)``: the training query ids ``(Q,)`` sorted, their
    mined documents ``(Q, W)`` (:func:`~twotower.retrieval.mining.select`), the filter counts
    and the seconds spent encoding.
    """
    started = time.perf_counter()
    ids = torch.unique(catalogue.positive_query.long())  # (Q,) training query ids
    rows = catalogue.query_rows[ids]
    was_training = model.training
    model.eval()  # no dropout in the vectors that rank
    try:
        evaluator = CorpusEvaluator()
        queries = evaluator.encode(model, _Rows(catalogue.queries, rows), "query", batch_size)
        docs = evaluator.encode(model, catalogue.docs, "doc", batch_size)
    finally:
        model.train(was_training)
    encoded = time.perf_counter() - started
    pos_rows = torch.searchsorted(ids, catalogue.positive_query.long())
    table, counts = mine_dense(queries, docs, window, pos_rows, catalogue.positive_doc)
    return ids, table, counts, encoded


class HardNegativeMiner(pl.Callback):
    """Fills ``module.negatives.hard``'s table (see the module docstring).

    Args:
        settings: the strategy's ``mining`` settings (``conf/negatives/in_batch.yaml``).
    """

    def __init__(self, settings: dict[str, Any]):
        unknown = set(settings) - set(KEYS)
        check(not unknown, "mining", sorted(unknown), f"unknown keys; valid: {', '.join(KEYS)}")
        self.source = settings.get("source", "model")
        self.window = MiningWindow(
            settings.get("rank_min", 1),
            settings.get("rank_max", 100),
            settings.get("margin"),
            settings.get("relative_margin"),
        )
        self.start = settings.get("start_epoch", 0)
        self.every = settings.get("refresh_every", 0)
        self.batch_size = settings.get("batch_size", 1024)
        for key, value in (("start_epoch", self.start), ("refresh_every", self.every)):
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
            check(ok, f"mining.{key}", value, "must be an integer >= 0")
        if self.source == "bm25":
            raise ConfigError(
                "negatives.mining.source",
                "bm25",
                "BM25 mining runs outside training: python -m twotower.mine source=bm25 writes "
                "a presampled file for data=pairs; in a run use model or a checkpoint path",
            )
        self._encoder = None  # a checkpoint's module, loaded once
        self.minings: list[dict[str, Any]] = []  # one entry per mining: epoch, seconds, counts

    def due(self, epoch: int) -> bool:
        if epoch == self.start:
            return True
        return bool(self.every) and epoch > self.start and (epoch - self.start) % self.every == 0

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if self.due(trainer.current_epoch):
            self.mine(module, trainer.current_epoch, trainer)

    def _model(self, module):
        if self.source == "model":
            return module
        if self._encoder is None:
            from twotower.checkpoint import load_module  # the entry points' loader

            self._encoder, tokenizer, _ = load_module(self.source, "negatives.mining.source")
            if tokenizer.state_dict() != module.hparams.get("tokenizer_state"):
                raise ConfigError(
                    "negatives.mining.source",
                    self.source,
                    "was trained with another tokenizer (vocabulary): its token ids mean other "
                    "words here; mine with source=model or a checkpoint of this data",
                )
            self._encoder.to(module.device)
        return self._encoder

    def mine(self, module, epoch: int = 0, trainer: pl.Trainer | None = None) -> dict[str, Any]:
        """Mine and set the table now; returns the log entry (seconds and filter counts)."""
        started = time.perf_counter()
        catalogue = module.negatives.catalogue
        ids, table, counts, encoded = mine_with_model(
            self._model(module), catalogue, self.window, self.batch_size
        )
        full = torch.full((int(ids[-1]) + 1, table.shape[1]), -1, dtype=torch.int32)
        full[ids] = table.to(torch.int32)
        module.negatives.hard.set_table(full)
        n_docs = len(catalogue.docs)
        entry = {
            "epoch": epoch,
            "queries": len(ids),
            "documents": n_docs,
            "encode_s": encoded,
            "seconds": time.perf_counter() - started,
            **counts,
        }
        self.minings.append(entry)
        rank_zero_info(
            f"twotower: mined hard negatives before epoch {epoch} ({self.source}): "
            f"{len(ids)} queries x {n_docs} documents in {entry['seconds']:.1f} s "
            f"(encoding {encoded:.1f} s); kept {counts['kept']} of {counts['candidates']} "
            f"(relevant {counts['relevant']}, outside ranks {counts['outside_window']}"
            + "".join(f", {k} {counts[k]}" for k in ("margin", "relative_margin") if k in counts)
            + ")"
        )
        if trainer is not None and trainer.logger is not None:
            kept = counts["kept"] / len(ids)
            metrics = {"mining/seconds": entry["seconds"], "mining/kept_per_query": kept}
            trainer.logger.log_metrics(metrics, step=trainer.global_step)
        return entry

    def state_dict(self) -> dict[str, Any]:
        return {"log": self.minings}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.minings = list(state_dict.get("log", []))
