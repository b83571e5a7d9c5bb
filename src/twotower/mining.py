"""HardNegativeMiner: mine the training queries' hard negatives inside a run, and refresh them.

At the start of epoch ``mining.start_epoch`` (0: before training; by default 1 with
``source=model``, whose untrained towers would mine noise, and 0 with the other sources) the
miner encodes every training query and the whole corpus, ranks them with the exact blocked
search, filters the ranking (:mod:`twotower.retrieval.mining`) and gives the table to the
negatives strategy; every ``refresh_every`` epochs after, it does it again with the current
weights (ANCE, Xiong et al. ICLR 2021). ``source=model`` encodes with the model being trained;
a checkpoint path encodes with that checkpoint's towers (trained with the same tokenizer: token
ids must mean the same words); ``bm25`` ranks the raw texts with BM25 (``bm25s``), once. Every
process mines the same table from the same weights.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn

from twotower.errors import ConfigError, check
from twotower.retrieval.evaluation import CorpusEvaluator
from twotower.retrieval.mining import MiningWindow, lowest_per_row, mine_dense, select
from twotower.retrieval.sparse import BM25

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


def is_export(source: str) -> bool:
    return Path(source, "manifest.json").is_file()


def is_text_source(source: str) -> bool:
    """Whether ``source`` mines from the raw texts (BM25, an export) rather than a module."""
    return source == "bm25" or is_export(source)


def mine_from(source: str, model, catalogue, datamodule, window: MiningWindow, batch_size: int):
    """Mine with ``source``: ``bm25``, an export directory, or ``model`` (a loaded module:
    the one being trained, or a checkpoint's). Returns what :func:`mine_with_model` does."""
    if source == "bm25":
        return mine_with_bm25(catalogue, *texts_of(datamodule), window)
    if is_export(source):
        queries, _ = texts_of(datamodule)
        return mine_with_export(source, catalogue, queries, datamodule.doc_ids, window)
    return mine_with_model(model, catalogue, window, batch_size)


def texts_of(datamodule) -> tuple[list[str], list[str]]:
    """The query and document texts BM25 mines from; a ConfigError for data without them."""
    queries = getattr(datamodule, "query_texts", None)
    docs = getattr(datamodule, "doc_texts", None)
    if not queries or not docs:
        raise ConfigError(
            "negatives.mining.source",
            "bm25",
            "needs text data (queries and documents as texts); these data have none: "
            "use source=model or a checkpoint",
        )
    return queries, docs


def mine_with_bm25(catalogue, query_texts, doc_texts, window: MiningWindow):
    """Rank the corpus for every training query of ``catalogue`` with BM25 over the raw texts.

    Returns what :func:`mine_with_model` does; its last entry is the seconds spent indexing.
    """
    started = time.perf_counter()
    ids = torch.unique(catalogue.positive_query.long())  # (Q,) training query ids
    texts = [query_texts[int(r)] for r in catalogue.query_rows[ids]]
    index = BM25(doc_texts)
    indexed = time.perf_counter() - started
    scores, ranked = index.search(texts, window.rank_max)
    pos_rows = torch.searchsorted(ids, catalogue.positive_query.long())
    positive = None
    if window.needs_scores:
        pair_scores = index.score_pairs(texts, pos_rows, catalogue.positive_doc.long())
        positive = lowest_per_row(pair_scores, pos_rows, len(ids))
    pos_docs, n_docs = catalogue.positive_doc, len(doc_texts)
    table, counts = select(scores, ranked, window, pos_rows, pos_docs, n_docs, positive)
    return ids, table, counts, indexed


def mine_with_export(directory, catalogue, query_texts, doc_ids, window: MiningWindow):
    """Rank with an export (``twotower.export``): its query tower encodes the training queries
    and its index (exact or faiss) searches its documents, which are mapped to this data's by
    id; an exported document the data do not have is dropped from the ranking.

    Returns what :func:`mine_with_model` does; its last entry is the seconds spent encoding.
    """
    from twotower.serving import TwoTowerRetriever, load_doc_embeddings

    retriever = TwoTowerRetriever.load(directory)
    started = time.perf_counter()
    ids = torch.unique(catalogue.positive_query.long())  # (Q,) training query ids
    texts = [query_texts[int(r)] for r in catalogue.query_rows[ids]]
    with warnings.catch_warnings():  # a query of unknown words still ranks (arbitrarily)
        warnings.simplefilter("ignore")
        queries = torch.cat(
            [retriever.encode(texts[i : i + 1024]) for i in range(0, len(texts), 1024)]
        )
    encoded = time.perf_counter() - started
    here = {doc: i for i, doc in enumerate(doc_ids)}
    to_data = torch.tensor([here.get(doc, -1) for doc in retriever.doc_ids] + [-1])
    scores, ranked = retriever.index.search(queries, window.rank_max)
    ranked = to_data[ranked.long()]  # -1 (no document) maps to the appended -1
    scores = scores.masked_fill(ranked < 0, float("-inf"))
    pos_rows = torch.searchsorted(ids, catalogue.positive_query.long())
    positive = None
    if window.needs_scores:
        exported = {doc: i for i, doc in enumerate(retriever.doc_ids)}
        at = torch.tensor([exported.get(doc_ids[d], -1) for d in catalogue.positive_doc.tolist()])
        vectors = load_doc_embeddings(directory)
        pair = (queries[pos_rows] * vectors[at.clamp(min=0)].float()).sum(1)
        pair[at < 0] = float("inf")  # a positive the export lacks sets no threshold
        positive = lowest_per_row(pair, pos_rows, len(ids))
    pos_docs, n_docs = catalogue.positive_doc, len(doc_ids)
    table, counts = select(scores, ranked, window, pos_rows, pos_docs, n_docs, positive)
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
        self.start = settings.get("start_epoch")
        if self.start is None:  # the model mines once it has trained; the others are ready
            self.start = 1 if self.source == "model" else 0
        self.every = settings.get("refresh_every", 0)
        self.batch_size = settings.get("batch_size", 1024)
        for key, value in (("start_epoch", self.start), ("refresh_every", self.every)):
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
            check(ok, f"mining.{key}", value, "must be an integer >= 0")
        if self.source == "model" and self.start == 0:
            kept = f"until epoch {self.every}" if self.every else "all run (refresh_every=0)"
            rank_zero_warn(
                "negatives.mining.start_epoch=0 with source=model mines with the untrained "
                f"model, whose ranking is noise, and trains on that table {kept}: "
                "start_epoch >= 1 mines after some in-batch training"
            )
        if self.source != "model" and self.every:
            raise ConfigError(
                "negatives.mining.refresh_every",
                self.every,
                f"must be 0 with source={self.source} (only source=model changes as it "
                "trains: a BM25 ranking, a checkpoint or an export would mine the same table)",
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
        datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
        model = None if is_text_source(self.source) else self._model(module)
        ids, table, counts, encoded = mine_from(
            self.source, model, catalogue, datamodule, self.window, self.batch_size
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
