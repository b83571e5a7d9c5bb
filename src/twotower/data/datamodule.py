"""SyntheticDataModule: the quick embedded data set that the default config trains on."""

from __future__ import annotations

import logging
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

from twotower.data.batches import TextPairDataset, collate, labelled_rows
from twotower.data.synthetic import SyntheticData, SyntheticGenerator, SyntheticSplit
from twotower.data.tokenizers import Tokenizer
from twotower.errors import check, check_choice

log = logging.getLogger("twotower.data")

FORMATS = ("pairs", "presampled", "labelled")


def _check_int(key: str, value: Any, minimum: int) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
    check(ok, key, value, f"must be an integer >= {minimum}")


class SyntheticDataModule(pl.LightningDataModule):
    """Synthetic queries and documents (see synthetic.py), tokenised once, batched by indexing.

    Training rows follow ``format``: ``pairs`` (query, positive doc), ``presampled`` (query,
    positive doc, K negatives) or ``labelled`` (label, query, doc; each query gives one
    positive row and ``labelled_negatives`` negative rows). Validation and test always yield
    the presampled form, so their loss and metrics compare across training formats.

    Args:
        tokenizer: fitted on the training queries and documents in :meth:`setup` unless it
            is already fitted (hashing, or restored from a checkpoint).
        format: training row format, one of ``pairs``, ``presampled``, ``labelled``.
        batch_size: training rows per batch.
        eval_batch_size: validation / test queries per batch.
        num_negatives: presampled negatives per query (K).
        labelled_negatives: negative rows per positive row in the labelled format.
        max_query_words: longer queries are truncated (and counted in the log).
        max_doc_words: longer documents are truncated (and counted in the log).
        shuffle_train: shuffle the training rows every epoch.
        num_workers: DataLoader worker processes (batches are cheap; 0 is usually best).
        seed: generator seed.
        num_docs, num_topics, stems_per_topic, queries_per_doc, eval_queries_per_doc,
            typo_rate, variant_rate, synonym_rate: see :class:`SyntheticGenerator`.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        *,
        format: str = "presampled",
        batch_size: int = 128,
        eval_batch_size: int = 256,
        num_negatives: int = 4,
        labelled_negatives: int = 2,
        max_query_words: int = 16,
        max_doc_words: int = 64,
        shuffle_train: bool = True,
        num_workers: int = 0,
        seed: int = 0,
        num_docs: int = 7000,
        num_topics: int = 20,
        stems_per_topic: int = 60,
        queries_per_doc: int = 4,
        eval_queries_per_doc: int = 3,
        typo_rate: float = 0.1,
        variant_rate: float = 0.5,
        synonym_rate: float = 0.3,
    ):
        super().__init__()
        check(isinstance(tokenizer, Tokenizer), "tokenizer", tokenizer, "must be a Tokenizer")
        check_choice("format", format, FORMATS)
        counts = {
            "batch_size": batch_size,
            "eval_batch_size": eval_batch_size,
            "num_negatives": num_negatives,
            "labelled_negatives": labelled_negatives,
            "max_query_words": max_query_words,
            "max_doc_words": max_doc_words,
        }
        for key, value in counts.items():
            _check_int(key, value, 1)
        expected = f"must be <= num_negatives ({num_negatives}): they are taken from them"
        check(
            labelled_negatives <= num_negatives, "labelled_negatives", labelled_negatives, expected
        )
        check(isinstance(shuffle_train, bool), "shuffle_train", shuffle_train, "must be a bool")
        _check_int("num_workers", num_workers, 0)
        check(isinstance(seed, int), "seed", seed, "must be an integer")
        self.generator = SyntheticGenerator(  # validates its own arguments
            num_docs=num_docs,
            num_topics=num_topics,
            stems_per_topic=stems_per_topic,
            queries_per_doc=queries_per_doc,
            eval_queries_per_doc=eval_queries_per_doc,
            num_negatives=num_negatives,
            typo_rate=typo_rate,
            variant_rate=variant_rate,
            synonym_rate=synonym_rate,
            seed=seed,
        )
        self.tokenizer = tokenizer
        self.format, self.batch_size, self.eval_batch_size = format, batch_size, eval_batch_size
        self.labelled_negatives = labelled_negatives
        self.max_query_words, self.max_doc_words = max_query_words, max_doc_words
        self.shuffle_train, self.num_workers = shuffle_train, num_workers
        self.data: SyntheticData | None = None
        self.datasets: dict[str, TextPairDataset] = {}

    @property
    def train_format(self) -> str:
        """The training rows' format (val / test are always ``presampled``)."""
        return self.format

    @property
    def vocab_size(self) -> int:
        """The tokenizer's vocabulary size (after :meth:`setup` for a fitted vocabulary)."""
        return self.tokenizer.vocab_size

    def setup(self, stage: str | None = None) -> None:
        """Generate, fit the tokenizer on the training texts, encode; later calls do nothing."""
        if self.data is not None:
            return
        data = self.generator.generate()
        if not self.tokenizer.is_fitted:  # train texts only: val / test stay unseen
            self.tokenizer.fit(data.train.queries + [data.docs[d] for d in data.train.doc_ids])
        self.data = data
        self._encode()

    def _encode(self) -> None:
        data = self.data
        docs, n_cut = self.tokenizer.encode(data.docs, self.max_doc_words)  # (D, Wd, T)
        cut = [f"{n_cut}/{len(data.docs)} documents to {self.max_doc_words} words"]
        for name in ("train", "val", "test"):
            split: SyntheticSplit = getattr(data, name)
            queries, n_cut = self.tokenizer.encode(split.queries, self.max_query_words)
            cut.append(f"{n_cut}/{len(split.queries)} {name} queries to {self.max_query_words}")
            fmt = self.format if name == "train" else "presampled"
            self.datasets[name] = _dataset(split, queries, docs, fmt, self.labelled_negatives)
        splits = (data.train, data.val, data.test)
        log.info(
            "synthetic data: documents train/val/test %s, queries %s, %d %s training rows; "
            "%s vocab_size=%d",
            "/".join(str(len(s.doc_ids)) for s in splits),
            "/".join(str(len(s.queries)) for s in splits),
            len(self.datasets["train"]),
            self.format,
            type(self.tokenizer).__name__,
            self.vocab_size,
        )
        truncated = any(not c.startswith("0/") for c in cut)
        log.log(logging.WARNING if truncated else logging.INFO, "truncated %s", ", ".join(cut))

    def _loader(self, name: str, batch_size: int, shuffle: bool) -> DataLoader:
        if name not in self.datasets:
            raise RuntimeError("call setup() before asking for a dataloader")
        dataset, sampler = self.datasets[name], None
        if not shuffle and dist.is_available() and dist.is_initialized():
            # Lightning's own distributed sampler always shuffles training rows: honour
            # shuffle_train=false with one that does not (Lightning keeps a given one).
            sampler = DistributedSampler(dataset, shuffle=False)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle if sampler is None else None,
            sampler=sampler,
            drop_last=False,
            collate_fn=collate,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, self.shuffle_train)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size, False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, False)


def _dataset(
    split: SyntheticSplit, queries: torch.Tensor, docs: torch.Tensor, fmt: str, negatives: int
) -> TextPairDataset:
    """The rows of one split in format ``fmt`` over the shared corpus ``docs``."""
    pos_id = torch.tensor(split.pos_ids)  # (Q,)
    neg_id = torch.tensor(split.neg_ids).view(len(pos_id), -1)  # (Q, K)
    query_id = torch.tensor(split.query_ids)  # (Q,)
    if fmt == "labelled":
        query_index, doc_id, label = labelled_rows(pos_id, neg_id, negatives)
        return TextPairDataset(queries, docs, doc_id, query_index, query_id, label=label)
    return TextPairDataset(
        queries, docs, pos_id, query_id=query_id, neg_id=neg_id if fmt == "presampled" else None
    )
