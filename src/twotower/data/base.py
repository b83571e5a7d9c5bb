"""RetrievalDataModule: what every text datamodule gives the module, whatever its source.

- ``datasets[split]``: rows (query, positive doc[, negatives][, label]) for the loss and the
  in-batch metrics; training rows follow ``format``, validation and test rows are presampled.
- ``corpus``, ``doc_ids`` and ``doc_texts``: every document, ranked whole at evaluation.
- ``eval_splits[split]``: the judged queries of ``val`` and ``test`` with their qrels.

``val_dataloader()`` and ``test_dataloader()`` return three loaders: the rows, the judged
queries and the corpus (see :class:`twotower.module.TwoTowerModule`).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from twotower.data.components.batches import TextDataset, TextPairDataset, collate, labelled_rows
from twotower.data.components.tokenizers import Tokenizer
from twotower.data.components.tokens import TokenStore
from twotower.data.components.unique import UNIQUE, BatchRows, DuplicateFreeSampler
from twotower.errors import check, check_choice
from twotower.formats import FORMATS

log = logging.getLogger("twotower.data")

Judgments = dict[str, dict[str, int]]  # query id -> doc id -> grade


@dataclass
class EvalSplit:
    """The judged queries of one split and their relevance judgments."""

    queries: TokenStore  # row i is query_ids[i] (a FeatureStore for recommendation data)
    query_ids: list[str]
    qrels: Judgments
    doc_ids: list[str] = field(repr=False)
    # (query rows, doc indices) never ranked for that query: a user's training items (and
    # validation items when testing), RecBole's full-ranking protocol. None: nothing excluded.
    exclude: tuple[Tensor, Tensor] | None = field(default=None, repr=False)
    # (D,) bool: the documents ranked for this split (cold-start items); None: all of them.
    candidates: Tensor | None = field(default=None, repr=False)

    @cached_property
    def judged(self):
        """The qrels in tensor form (:class:`twotower.retrieval.ranking.Qrels`), built once."""
        from twotower.retrieval.ranking import Qrels

        query_index = {q: i for i, q in enumerate(self.query_ids)}
        doc_index = {d: i for i, d in enumerate(self.doc_ids)}
        return Qrels.from_dict(self.qrels, query_index, doc_index)


@dataclass
class Catalogue:
    """What catalogue-aware negatives need from the data (:meth:`RetrievalDataModule.catalogue`).

    Args:
        docs: every document (item): ``len()`` and ``.batch(rows)`` give a tower's input.
        positive_query: ``(P,)`` long, the query id (user index) of each training positive.
        positive_doc: ``(P,)`` long, its document (item index).
        queries: the queries (users), as ``docs`` is for documents; for mining.
        query_rows: ``(n_query_ids,)`` long, the row of ``queries`` of each query id (-1: the
            id has no training row).
    """

    docs: Any
    positive_query: Tensor
    positive_doc: Tensor
    queries: Any = None
    query_rows: Tensor | None = None

    @cached_property
    def doc_counts(self) -> Tensor:
        """``(N,)`` float64, times each document is a training positive."""
        return torch.bincount(self.positive_doc.long(), minlength=len(self.docs)).double()


def check_int(key: str, value: Any, minimum: int) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
    check(ok, key, value, f"must be an integer >= {minimum}")


def rows_dataset(
    queries: TokenStore,
    docs: TokenStore,
    query_index: Tensor,
    pos_id: Tensor,
    neg_id: Tensor | None,
    fmt: str,
    labelled_negatives: int,
    query_id: Tensor | None = None,
) -> TextPairDataset:
    """Rows of format ``fmt`` from positive pairs ``(query_index, pos_id)`` and their ``neg_id``.

    ``query_id`` (per query) marks identical queries, whose positives mask each other.
    """
    if fmt == "labelled":
        rows, doc_id, label = labelled_rows(pos_id, neg_id, labelled_negatives)
        return TextPairDataset(queries, docs, doc_id, query_index[rows], query_id, label=label)
    neg = neg_id if fmt == "presampled" else None
    return TextPairDataset(queries, docs, pos_id, query_index, query_id, neg_id=neg)


REDRAW_ROUNDS = 20  # then a draw that is still relevant stays (and is masked in training)


def uniform_negatives(
    pos_id: Tensor, n_docs: int, k: int, seed: int, query: Tensor | None = None
) -> Tensor:
    """``(N, k)`` documents drawn uniformly (seeded), never a row's own positive and, given
    each row's ``query`` ``(N,)``, never another relevant document of its query (the rows'
    other positives: graded qrels with several relevant documents)."""
    g = torch.Generator().manual_seed(seed)
    if n_docs < 2:
        raise ValueError(f"the corpus has {n_docs} document(s): negatives need at least 2")
    # Draw from n_docs - 1 and skip the positive: uniform over the other documents.
    neg = torch.randint(0, n_docs - 1, (len(pos_id), k), generator=g)  # (N, k)
    neg = neg + (neg >= pos_id[:, None]).long()
    if query is None or not len(pos_id):
        return neg
    keys = torch.unique(query.long() * n_docs + pos_id.long())  # sorted relevant pairs
    rows = query.long()[:, None] * n_docs

    def relevant(drawn: Tensor) -> Tensor:
        at = torch.searchsorted(keys, rows + drawn).clamp(max=len(keys) - 1)
        return keys[at] == rows + drawn  # (N, k)

    bad = relevant(neg)
    for _ in range(REDRAW_ROUNDS):
        if not bad.any():
            break
        neg[bad] = torch.randint(0, n_docs, (int(bad.sum()),), generator=g)
        bad &= relevant(neg)
    return neg


class RetrievalDataModule(pl.LightningDataModule, ABC):
    """Base class: loaders over prepared rows, judged queries and the corpus.

    Subclasses fill ``datasets``, ``corpus``, ``doc_ids`` and ``eval_splits`` in
    :meth:`prepare`, called once by :meth:`setup`.

    Args:
        tokenizer: fitted on the training texts unless already fitted (hashing, checkpoint).
        format: training row format: ``pairs``, ``presampled`` or ``labelled``.
        batch_size: training rows per batch.
        eval_batch_size: validation / test rows, queries or documents per batch.
        num_negatives: presampled negatives per row (K).
        labelled_negatives: negative rows per positive row in the labelled format.
        max_query_words: longer queries are truncated (and counted in the log).
        max_doc_words: longer documents are truncated (and counted in the log).
        max_word_tokens: tokens kept per word (longer words are cut and counted).
        shuffle_train: shuffle the training rows every epoch.
        unique_in_batch: ``doc``, ``query`` or ``both``: training batches in which it appears
            at most once (:mod:`~twotower.data.components.unique`); ``None``: any order.
        num_workers: DataLoader worker processes (batches are cheap; 0 is usually best).
        seed: seed of everything the data module draws (split, negatives).
        eval_rows: validation and test also score the split's (query, doc) rows in batches
            (``loss``, ``accuracy``, ``batch/*``) beside the full-corpus ranking; ``False``
            ranks alone, RecBole's protocol (on ml-100k the rows cost 10x the ranking).
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
        max_word_tokens: int = 32,
        shuffle_train: bool = True,
        unique_in_batch: str | None = None,
        num_workers: int = 0,
        seed: int = 0,
        eval_rows: bool = True,
    ):
        super().__init__()
        check(isinstance(tokenizer, Tokenizer), "tokenizer", tokenizer, "must be a Tokenizer")
        check_choice("format", format, FORMATS)
        for key, value in {
            "batch_size": batch_size,
            "eval_batch_size": eval_batch_size,
            "num_negatives": num_negatives,
            "labelled_negatives": labelled_negatives,
            "max_query_words": max_query_words,
            "max_doc_words": max_doc_words,
            "max_word_tokens": max_word_tokens,
        }.items():
            check_int(key, value, 1)
        expected = f"must be <= num_negatives ({num_negatives}): they are taken from them"
        check(
            labelled_negatives <= num_negatives, "labelled_negatives", labelled_negatives, expected
        )
        check(isinstance(shuffle_train, bool), "shuffle_train", shuffle_train, "must be a bool")
        if unique_in_batch is not None:
            check_choice("unique_in_batch", unique_in_batch, UNIQUE)
        self.unique_in_batch = unique_in_batch
        check_int("num_workers", num_workers, 0)
        check(isinstance(seed, int), "seed", seed, "must be an integer")
        check(isinstance(eval_rows, bool), "eval_rows", eval_rows, "must be true or false")
        self.eval_rows = eval_rows
        self.tokenizer = tokenizer
        self.format, self.batch_size, self.eval_batch_size = format, batch_size, eval_batch_size
        self.num_negatives, self.labelled_negatives = num_negatives, labelled_negatives
        self.max_query_words, self.max_doc_words = max_query_words, max_doc_words
        self.max_word_tokens = max_word_tokens
        self.shuffle_train, self.num_workers, self.seed = shuffle_train, num_workers, seed
        self.datasets: dict[str, TextPairDataset] = {}
        self.corpus: TokenStore | None = None
        self.doc_ids: list[str] = []
        self.doc_texts: list[str] = []  # for display (search results, export)
        self.query_texts: list[str] = []  # row i of the query store (twotower.mine writes them)
        self.eval_splits: dict[str, EvalSplit] = {}

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int):
        # The loaders build CPU tensors: on a CPU there is nothing to move, and Lightning's
        # walk through every nested feature dict costs about 3% of an ml-100k epoch. (Here,
        # not on the module: Lightning warns when a module hook shadows a datamodule's.)
        if device.type == "cpu":
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    @property
    def train_format(self) -> str:
        """The training rows' format (val / test rows are always ``presampled``)."""
        return self.format

    @property
    def vocab_size(self) -> int:
        """The tokenizer's vocabulary size (after :meth:`setup` for a fitted vocabulary)."""
        return self.tokenizer.vocab_size

    input_kind = "text"  # what the towers receive: token ids (text towers) or feature dicts

    def tower_inputs(self, side: str) -> dict[str, Any]:
        """Keyword arguments the ``side`` (``query`` / ``doc``) tower is built with."""
        return {"vocab_size": self.vocab_size}

    def catalogue(self) -> Catalogue:
        """The corpus with its training-positive counts and pairs (after :meth:`setup`)."""
        self._require("train")
        rows = self.datasets["train"]
        keep = torch.ones(len(rows), dtype=torch.bool) if rows.label is None else rows.label > 0
        ids = rows.query_id[rows.query_index]  # (N,) each row's query id
        query_rows = torch.full((int(ids.max()) + 1 if len(ids) else 0,), -1, dtype=torch.long)
        query_rows[ids] = rows.query_index.long()
        return Catalogue(self.corpus, ids[keep], rows.doc_id[keep], rows.queries, query_rows)

    def warn_about_splits(self) -> None:
        """Data that train or validate but cannot say much: warn before the run starts."""
        n_val = len(self.eval_splits["val"].query_ids)
        if n_val < 2:
            rank_zero_warn(
                f"the validation split has {n_val} judged query: the best checkpoint and "
                "early stopping are chosen on it alone"
            )

    @abstractmethod
    def prepare(self) -> None:
        """Read, fit the tokenizer, encode and fill the attributes."""

    def setup(self, stage: str | None = None) -> None:
        """Prepare the data once; later calls do nothing."""
        if self.corpus is None:
            self.prepare()

    def encode(self, texts: list[str], max_words: int, what: str) -> TokenStore:
        """Tokenise ``texts``; truncations are counted in the log, never silent."""
        store, n_cut = self.tokenizer.encode_store(texts, max_words, self.max_word_tokens)
        empty = int((store.text_len == 0).sum())
        level = logging.WARNING if n_cut or empty else logging.INFO
        log.log(
            level,
            "%s: %d texts, %d truncated to %d words / %d tokens per word, %d without any token",
            what,
            len(texts),
            n_cut,
            max_words,
            self.max_word_tokens,
            empty,
        )
        return store

    # -- loaders -----------------------------------------------------------------------------
    def _loader(
        self, dataset: Dataset, batch_size: int, shuffle: bool, unique: str | None = None
    ) -> DataLoader:
        sampler = None
        distributed = dist.is_available() and dist.is_initialized()
        if unique is not None:  # the sampler yields whole batches, which may be short
            replicas = {"num_replicas": 1, "rank": 0}
            if distributed:
                replicas = {"num_replicas": dist.get_world_size(), "rank": dist.get_rank()}
            sampler = DuplicateFreeSampler(
                dataset, unique, batch_size, shuffle=shuffle, seed=self.seed, **replicas
            )
            return DataLoader(
                BatchRows(dataset),
                batch_size=None,
                sampler=sampler,
                collate_fn=collate,
                num_workers=self.num_workers,
                persistent_workers=self.num_workers > 0,
            )
        if not shuffle and distributed:
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

    def _require(self, split: str) -> None:
        if split not in self.datasets:
            raise RuntimeError(f"no {split} data: call setup() first")

    def train_dataloader(self) -> DataLoader:
        self._require("train")
        return self._loader(
            self.datasets["train"], self.batch_size, self.shuffle_train, self.unique_in_batch
        )

    def _eval_loaders(self, split: str) -> list[DataLoader]:
        self._require(split)
        size = self.eval_batch_size
        by_length = getattr(self.tokenizer, "encode_by_length", False)
        queries = TextDataset(self.eval_splits[split].queries, "query", by_length)
        rows = [self._loader(self.datasets[split], size, False)] if self.eval_rows else []
        return [
            *rows,
            self._loader(queries, size, False),
            self._loader(TextDataset(self.corpus, "doc", by_length), size, False),
        ]

    def val_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders("val")

    def test_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders("test")
