"""TwoTowerRetriever: search an exported model directory from Python, no training code needed::

    retriever = TwoTowerRetriever.load("exports/gcide")
    retriever.search(["a domestic animal that barks"], k=3)[0]
    # [Hit(rank=1, doc_id='w041234', score=0.83, text='dog'), ...]

An export directory (written by :mod:`twotower.export`) holds::

    manifest.json         what was exported, from which checkpoint, with which settings
    model.pt              query tower, document tower and similarity: class path, arguments, weights
    tokenizer.json        the tokenizer and its vocabulary
    doc_embeddings.pt     (D, d) float32 document vectors, prepared for inner product
    docs.jsonl            {"_id", "text"} per document, in embedding order
    index/                the search index (see twotower.retrieval.index)
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from twotower.data.tokenizers import Tokenizer, tokenizer_from_state
from twotower.retrieval.index import load_index


class Hit(NamedTuple):
    rank: int
    doc_id: str
    score: float
    text: str


def module_spec(module: nn.Module, target: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """A module as plain data: its class path, constructor arguments and weights."""
    return {"target": target, "kwargs": kwargs, "state_dict": module.state_dict()}


def module_from_spec(spec: dict[str, Any]) -> nn.Module:
    """Rebuild a module written by :func:`module_spec` (in eval mode)."""
    path, _, name = spec["target"].rpartition(".")
    module = getattr(importlib.import_module(path), name)(**spec["kwargs"])
    module.load_state_dict(spec["state_dict"])
    return module.eval()


class TwoTowerRetriever:
    """Encodes queries with the exported query tower and searches the exported index.

    Args:
        query_tower: maps ``(B, W, T)`` tokens to ``(B, d)``.
        similarity: its ``prepare`` makes vectors ready for inner product.
        tokenizer: the tokenizer the model was trained with.
        index: a built index over the document vectors.
        doc_ids, doc_texts: the documents, in index order.
        max_query_words, max_word_tokens: truncation, as in training.
    """

    def __init__(
        self,
        query_tower: nn.Module,
        similarity: nn.Module,
        tokenizer: Tokenizer,
        index: Any,
        doc_ids: list[str],
        doc_texts: list[str],
        max_query_words: int = 32,
        max_word_tokens: int = 32,
    ):
        self.query_tower, self.similarity, self.tokenizer = query_tower, similarity, tokenizer
        self.index, self.doc_ids, self.doc_texts = index, doc_ids, doc_texts
        self.max_query_words, self.max_word_tokens = max_query_words, max_word_tokens

    @classmethod
    def load(cls, directory: str | Path) -> TwoTowerRetriever:
        """Load an export directory."""
        directory = Path(directory)
        if not (directory / "manifest.json").is_file():
            raise FileNotFoundError(f"{directory}: not a twotower export (no manifest.json)")
        manifest = json.loads((directory / "manifest.json").read_text())
        model = torch.load(directory / "model.pt", map_location="cpu", weights_only=True)
        tokenizer = tokenizer_from_state(json.loads((directory / "tokenizer.json").read_text()))
        doc_ids, doc_texts = [], []
        with open(directory / "docs.jsonl", encoding="utf-8") as f:
            for line in f:
                doc = json.loads(line)
                doc_ids.append(doc["_id"])
                doc_texts.append(doc["text"])
        return cls(
            module_from_spec(model["query_tower"]),
            module_from_spec(model["similarity"]),
            tokenizer,
            load_index(directory / "index"),
            doc_ids,
            doc_texts,
            manifest["max_query_words"],
            manifest["max_word_tokens"],
        )

    @torch.inference_mode()
    def encode(self, queries: list[str]) -> Tensor:
        """Search-ready query vectors ``(Q, d)``."""
        store, _ = self.tokenizer.encode_store(queries, self.max_query_words, self.max_word_tokens)
        tokens = store.padded()  # (Q, W, T)
        return self.similarity.prepare(self.query_tower(tokens)).float()

    def search(self, queries: list[str] | str, k: int = 10) -> list[list[Hit]]:
        """The top-``k`` documents of each query, best first."""
        if isinstance(queries, str):
            queries = [queries]
        scores, indices = self.index.search(self.encode(queries), k)  # (Q, k), (Q, k)
        results = []
        for row_i, row_s in zip(indices.tolist(), scores.tolist(), strict=True):
            ranked = enumerate(zip(row_i, row_s, strict=True), start=1)
            hits = [Hit(r, self.doc_ids[i], s, self.doc_texts[i]) for r, (i, s) in ranked if i >= 0]
            results.append(hits)  # index -1: the index found fewer than k documents
        return results
