"""PairFileDataModule: pair, labelled or triple files (TSV, CSV, JSONL, Parquet).

The training file's columns decide the format (see :mod:`twotower.data.readers.pairs`);
``columns`` maps other column names onto them, for the three files alike. The corpus
ranked at evaluation is every distinct document text of the three files (positives and
negatives); a validation or test query's relevant documents are its positive rows.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from twotower.data.base import EvalSplit, RetrievalDataModule, rows_dataset, uniform_negatives
from twotower.data.beir import tokenizer_key
from twotower.data.components.batches import TextPairDataset
from twotower.data.components.cache import cached
from twotower.data.components.tokenizers import Tokenizer, tokenizer_from_state
from twotower.data.components.tokens import TokenStore
from twotower.data.readers.pairs import PairData, column_names, load_pairs
from twotower.errors import ConfigError, DataError, check, check_choice

log = logging.getLogger("twotower.data")
STAGES = ("train", "val", "test")


def _intern(texts: list[str], table: dict[str, int]) -> list[int]:
    """Each text's index in ``table``, adding new texts (identical texts share one index)."""
    return [table.setdefault(t, len(table)) for t in texts]


class PairFileDataModule(RetrievalDataModule):
    """Training, validation and test files of query/document rows.

    Args:
        tokenizer: fitted on the training queries and the corpus unless already fitted.
        train, val, test: the files; ``test`` may be ``None``: then there is no test split
            (:attr:`has_test` is false, ``eval_splits`` and ``datasets`` have no ``"test"``).
        on_error: ``raise`` or ``skip`` bad rows (skips are printed and logged).
        columns: the files' names of the columns where they differ, e.g. ``{query: question,
            doc: answer}`` (:func:`~twotower.data.readers.pairs.column_names`); ``None``: the
            names are ``query``, ``doc``, ...
        cache_dir: where prepared data is cached; ``None`` disables the cache.
        **kwargs: see :class:`~twotower.data.base.RetrievalDataModule`; ``format`` is not
            set here: the training file's columns decide it.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        *,
        train: str,
        val: str,
        test: str | None = None,
        on_error: str = "raise",
        columns: Mapping[str, Any] | None = None,
        cache_dir: str | None = ".cache/twotower",
        **kwargs: Any,
    ):
        if "format" in kwargs:  # accepting it would silently ignore it
            raise ConfigError(
                "format", kwargs["format"], "is not set for pair files: their columns decide it"
            )
        super().__init__(tokenizer, **kwargs)
        check(bool(train), "train", train, "must name the training file")
        check(bool(val), "val", val, "must name the validation file")
        check_choice("on_error", on_error, ("raise", "skip"))
        if isinstance(columns, DictConfig):
            columns = OmegaConf.to_container(columns)
        column_names(columns)  # a bad mapping fails here, before any file is read
        self.columns = dict(columns) if columns else None
        self.files = {"train": train, "val": val, "test": test}
        self.on_error, self.cache_dir = on_error, cache_dir
        self.skipped: dict[str, int] = {}
        self._format: str | None = None

    @property
    def has_test(self) -> bool:
        """Whether a test file is set; known before :meth:`setup`."""
        return bool(self.files["test"])

    @property
    def train_format(self) -> str:
        """Detected from the training file's columns (after :meth:`setup`)."""
        if self._format is None:
            raise RuntimeError("the format is known after setup()")
        return self._format

    def _paths(self) -> dict[str, Path]:
        paths = {s: Path(p) for s, p in self.files.items() if p}
        for path in paths.values():
            if not path.is_file():
                raise DataError(path, None, None, "no such file")
        return paths

    def _read(self, paths: dict[str, Path]) -> dict[str, Any]:
        files: dict[str, PairData] = {
            s: load_pairs(p, self.on_error, self.columns) for s, p in paths.items()
        }
        queries: dict[str, int] = {}
        docs: dict[str, int] = {}
        rows: dict[str, dict[str, Any]] = {}
        for stage, data in files.items():
            row = {"query": _intern(data.queries, queries), "doc": _intern(data.docs, docs)}
            if data.labels is not None:
                row["label"] = data.labels
            if data.negatives is not None:
                row["neg"] = [_intern(negs, docs) for negs in data.negatives]
            rows[stage] = row
        if len(docs) < 2:  # uniform_negatives draws each row's negatives from the others
            problem = (
                f"the corpus has {len(docs)} document(s): negatives need at least 2 "
                "(the corpus is every distinct document of the train, val and test files)"
            )
            raise DataError(paths["train"], None, None, problem)
        if not self.tokenizer.is_fitted:
            train_queries = sorted(set(files["train"].queries), key=queries.__getitem__)
            self.tokenizer.fit(train_queries + list(docs))
        return {
            "tokenizer": self.tokenizer.state_dict(),
            "format": files["train"].format,
            "rows": rows,
            "skipped": {k: v for data in files.values() for k, v in data.skipped.items()},
            "doc_texts": list(docs),
            "query_texts": list(queries),
            "queries": self.encode(list(queries), self.max_query_words, "queries").state_dict(),
            "corpus": self.encode(list(docs), self.max_doc_words, "documents").state_dict(),
        }

    def prepare(self) -> None:
        paths = self._paths()
        settings = {
            "tokenizer": tokenizer_key(self.tokenizer),
            "stages": sorted(paths),
            "max_query_words": self.max_query_words,
            "max_doc_words": self.max_doc_words,
            "max_word_tokens": self.max_word_tokens,
            "on_error": self.on_error,
            "columns": self.columns,
        }
        value = cached(self.cache_dir, "pairs", paths.values(), settings, lambda: self._read(paths))
        self.tokenizer = tokenizer_from_state(value["tokenizer"])
        self._format, self.skipped = value["format"], value["skipped"]
        queries, self.corpus = TokenStore(**value["queries"]), TokenStore(**value["corpus"])
        self.doc_ids = [f"d{i}" for i in range(len(self.corpus))]
        self.doc_texts, self.query_texts = value["doc_texts"], value["query_texts"]
        for stage, row in value["rows"].items():
            self.datasets[stage] = self._rows(stage, row, queries)
            if stage != "train":
                self.eval_splits[stage] = self._eval_split(row, queries)
        log.info(
            "pair files: %s rows %s, %d distinct queries, %d documents; %s vocab_size=%d",
            self._format,
            "/".join(str(len(self.datasets[s])) for s in self.datasets),
            len(queries),
            len(self.corpus),
            type(self.tokenizer).__name__,
            self.vocab_size,
        )

    def _rows(self, stage: str, row: dict[str, Any], queries: TokenStore):
        q, d = torch.tensor(row["query"]), torch.tensor(row["doc"])
        label = torch.tensor(row["label"]) if "label" in row else None
        if stage == "train" and label is not None:  # click-log rows as they are
            return TextPairDataset(queries, self.corpus, d, q, label=label)
        if label is not None:  # evaluation rows need a positive: keep the clicked ones
            q, d = q[label > 0], d[label > 0]
        if stage == "train" and "neg" in row:
            neg = torch.tensor(row["neg"])  # (N, K)
        else:
            seed = self.seed + STAGES.index(stage)
            neg = uniform_negatives(d, len(self.corpus), self.num_negatives, seed, query=q)
        fmt = self._format if stage == "train" else "presampled"
        return rows_dataset(queries, self.corpus, q, d, neg, fmt, self.labelled_negatives)

    def test_dataloader(self) -> list[DataLoader]:
        if not self.has_test:  # the base class's message would blame setup()
            problem = "no test file, so there is no test split: skip the test stage"
            raise ConfigError("data.test", self.files["test"], problem)
        return super().test_dataloader()

    def _eval_split(self, row: dict[str, Any], queries: TokenStore) -> EvalSplit:
        labels = row.get("label") or [1.0] * len(row["query"])
        judged: dict[int, dict[str, int]] = {}  # query index -> doc id -> grade
        for q, d, label in zip(row["query"], row["doc"], labels, strict=True):
            grades = judged.setdefault(q, {})
            grades[self.doc_ids[d]] = max(grades.get(self.doc_ids[d], 0), int(label > 0))
        rows = torch.tensor(list(judged), dtype=torch.long)
        qrels = {f"q{q}": grades for q, grades in judged.items()}
        return EvalSplit(queries.select(rows), list(qrels), qrels, self.doc_ids)
