"""BeirDataModule: a BEIR directory, trained on its train qrels, ranked over its whole corpus."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from twotower.data.base import EvalSplit, RetrievalDataModule, rows_dataset, uniform_negatives
from twotower.data.components.cache import cached
from twotower.data.components.tokenizers import Tokenizer, tokenizer_from_state
from twotower.data.components.tokens import TokenStore
from twotower.data.readers.beir import load_beir
from twotower.errors import DataError, check, check_choice

log = logging.getLogger("twotower.data")


def tokenizer_key(tokenizer: Tokenizer) -> dict[str, Any]:
    """What the cache must know of a tokenizer: its settings, and its vocabulary if fitted."""
    state = tokenizer.state_dict()
    return {"class": state["class"], "config": state["config"], "vocab": state["vocab"]}


def positive_pairs(qrels: dict[str, dict[str, int]], query_index: dict[str, int], doc_index):
    """``(query_index, doc_index)`` tensors of the pairs with grade > 0, in file order."""
    pairs = [
        (query_index[q], doc_index[d])
        for q, docs in qrels.items()
        for d, g in docs.items()
        if g > 0
    ]
    q, d = zip(*pairs, strict=True) if pairs else ((), ())
    return torch.tensor(q, dtype=torch.long), torch.tensor(d, dtype=torch.long)


class BeirDataModule(RetrievalDataModule):
    """``corpus.jsonl``, ``queries.jsonl`` and ``qrels/{train,dev,test}.tsv`` (docs/data.md).

    Trains on the positive pairs of ``qrels/train.tsv`` (grade > 0), validates on ``val_split``
    and tests on ``test_split``; evaluation always ranks the whole corpus. Validation and test
    rows (for the loss) get ``num_negatives`` uniformly drawn documents each, as do training
    rows in the ``presampled`` and ``labelled`` formats (BEIR has no hard negatives).
    Reading and tokenising are cached on disk per (file contents, settings).

    Args:
        tokenizer: fitted on the training queries and the corpus unless already fitted.
        dir: the BEIR directory.
        val_split, test_split: qrels file names (without ``.tsv``) for validation and test.
        max_val_queries: validate on a seeded sample of this many judged queries (full-corpus
            ranking each epoch is the cost); ``None`` keeps all. Tests always use all.
        on_error: ``raise`` stops at the first bad row (file, line, field); ``skip`` drops bad
            rows, and prints and logs how many.
        cache_dir: where prepared data is cached; ``None`` disables the cache.
        **kwargs: see :class:`~twotower.data.base.RetrievalDataModule`.
    """

    has_test = True  # test_split names a qrels file, which must exist

    def __init__(
        self,
        tokenizer: Tokenizer,
        *,
        dir: str,
        val_split: str = "dev",
        test_split: str = "test",
        max_val_queries: int | None = None,
        on_error: str = "raise",
        cache_dir: str | None = ".cache/twotower",
        **kwargs: Any,
    ):
        super().__init__(tokenizer, **kwargs)
        check(dir is not None and str(dir) != "", "dir", dir, "must name a BEIR directory")
        check_choice("on_error", on_error, ("raise", "skip"))
        if max_val_queries is not None:
            check(
                isinstance(max_val_queries, int) and max_val_queries > 0,
                "max_val_queries",
                max_val_queries,
                "must be a positive integer or null",
            )
        self.dir, self.on_error, self.cache_dir = Path(dir), on_error, cache_dir
        self.val_split, self.test_split = val_split, test_split
        self.max_val_queries = max_val_queries
        self.skipped: dict[str, int] = {}

    def _files(self) -> list[Path]:
        if not self.dir.is_dir():
            raise DataError(self.dir, None, None, "no such directory (data.dir)")
        files = [self.dir / "corpus.jsonl", self.dir / "queries.jsonl"]
        for split in ("train", self.val_split, self.test_split):
            path = self.dir / "qrels" / f"{split}.tsv"
            if not path.is_file():
                raise DataError(path, None, None, f"missing: the {split} split needs its qrels")
            files.append(path)
        for path in files[:2]:
            if not path.is_file():
                raise DataError(path, None, None, "missing: a BEIR directory needs it")
        return files

    def _read(self) -> dict[str, Any]:
        """Read, fit the tokenizer and encode: the part worth caching."""
        splits = ("train", self.val_split, self.test_split)
        data = load_beir(self.dir, splits=splits, on_error=self.on_error)
        if (n_docs := len(data.corpus_ids)) < 2:  # uniform_negatives draws from the others
            problem = f"the corpus has {n_docs} document(s): negatives need at least 2"
            raise DataError(self.dir / "corpus.jsonl", None, None, problem)
        query_index = {q: i for i, q in enumerate(data.query_ids)}
        if not self.tokenizer.is_fitted:  # train queries and the corpus; dev / test unseen
            train = [data.query_texts[query_index[q]] for q in data.qrels["train"]]
            self.tokenizer.fit(train + data.corpus_texts)
        corpus = self.encode(data.corpus_texts, self.max_doc_words, "corpus")
        queries = self.encode(data.query_texts, self.max_query_words, "queries")
        return {
            "tokenizer": self.tokenizer.state_dict(),
            "doc_ids": data.corpus_ids,
            "doc_texts": data.corpus_texts,
            "query_ids": data.query_ids,
            "query_texts": data.query_texts,
            "qrels": data.qrels,
            "skipped": data.skipped,
            "corpus": corpus.state_dict(),
            "queries": queries.state_dict(),
        }

    def prepare(self) -> None:
        settings = {
            "tokenizer": tokenizer_key(self.tokenizer),
            "max_query_words": self.max_query_words,
            "max_doc_words": self.max_doc_words,
            "max_word_tokens": self.max_word_tokens,
            "splits": [self.val_split, self.test_split],
            "on_error": self.on_error,
        }
        value = cached(self.cache_dir, "beir", self._files(), settings, self._read)
        self.tokenizer = tokenizer_from_state(value["tokenizer"])
        self.skipped = value["skipped"]
        self.doc_ids, self.doc_texts = value["doc_ids"], value["doc_texts"]
        self.query_texts = value["query_texts"]
        self.corpus = TokenStore(**value["corpus"])
        queries = TokenStore(**value["queries"])
        query_index = {q: i for i, q in enumerate(value["query_ids"])}
        doc_index = {d: i for i, d in enumerate(self.doc_ids)}
        n_docs = len(self.doc_ids)
        for stage, split in (
            ("train", "train"),
            ("val", self.val_split),
            ("test", self.test_split),
        ):
            qrels = value["qrels"][split]
            if stage == "val":  # the sample's rows too: the val loss costs what it measures
                qrels = self._val_sample(qrels)
            q, pos = positive_pairs(qrels, query_index, doc_index)
            if not len(q):
                path = self.dir / "qrels" / f"{split}.tsv"
                raise DataError(path, None, "score", "no relevant pair (score > 0) in the file")
            seed = self.seed + {"train": 0, "val": 1, "test": 2}[stage]
            neg = uniform_negatives(pos, n_docs, self.num_negatives, seed, query=q)  # (N, K)
            fmt = self.format if stage == "train" else "presampled"
            self.datasets[stage] = rows_dataset(
                queries, self.corpus, q, pos, neg, fmt, self.labelled_negatives
            )
            if stage != "train":
                self.eval_splits[stage] = self._eval_split(stage, qrels, queries, query_index)
        log.info(
            "BEIR %s: %d documents; train/val/test rows %s; judged queries val/test %s; %s "
            "vocab_size=%d",
            self.dir,
            n_docs,
            "/".join(str(len(self.datasets[s])) for s in ("train", "val", "test")),
            "/".join(str(len(self.eval_splits[s].query_ids)) for s in ("val", "test")),
            type(self.tokenizer).__name__,
            self.vocab_size,
        )

    def _val_sample(self, qrels: dict) -> dict:
        """The seeded sample of ``max_val_queries`` judged queries (all when unset)."""
        ids = list(qrels)
        if not self.max_val_queries or len(ids) <= self.max_val_queries:
            return qrels
        g = torch.Generator().manual_seed(self.seed)
        keep = torch.randperm(len(ids), generator=g)[: self.max_val_queries].sort().values
        log.info("validating on %d of %d judged queries", len(keep), len(ids))
        return {ids[i]: qrels[ids[i]] for i in keep.tolist()}

    def _eval_split(self, stage: str, qrels, queries: TokenStore, query_index) -> EvalSplit:
        ids = list(qrels)
        rows = torch.tensor([query_index[q] for q in ids], dtype=torch.long)
        return EvalSplit(queries.select(rows), ids, {q: qrels[q] for q in ids}, self.doc_ids)
