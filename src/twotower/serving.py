"""TwoTowerRetriever: search an exported model directory from Python, no training code needed::

    retriever = TwoTowerRetriever.load("exports/gcide")
    retriever.search(["a domestic animal that barks"], k=3)[0]
    # [Hit(rank=1, doc_id='w041234', score=0.83, text='dog'), ...]

An export directory (written by :mod:`twotower.export`) holds::

    manifest.json         what was exported, from which checkpoint, with which settings
    model.pt              query tower, document tower and similarity: class path, arguments, weights
    tokenizer.json        the tokenizer and its vocabulary
    doc_embeddings.pt     {"embeddings": (D, d) float32 document vectors, prepared for inner
                          product, "fingerprint"}
    docs.jsonl            {"_id", "text"} per document, in embedding order
    index/                the search index (see twotower.retrieval.index)

The manifest, ``index/index.json`` and ``doc_embeddings.pt`` carry the :func:`fingerprint` of
the towers and tokenizer; loading refuses an index or embeddings whose fingerprint differs
(copied from another export), and warns for an export written before fingerprints.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from twotower.data.components.tokenizers import UNK, Tokenizer, tokenizer_from_state
from twotower.errors import DataError
from twotower.retrieval.index import load_index

TOWERS = ("query_tower", "doc_tower")  # the parts of model.pt the fingerprint covers


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


def fingerprint(
    state_dicts: Mapping[str, Mapping[str, Tensor]], tokenizer_state: dict[str, Any]
) -> str:
    """sha256 (hex) of the towers' weights and the tokenizer: what makes an export's vectors.

    Covers each tower's name and each tensor's key, dtype, shape and bytes, in sorted order
    (so not the order a state dict was built in), then the tokenizer state as sorted JSON.

    Args:
        state_dicts: tower name -> its ``state_dict()`` (``query_tower``, ``doc_tower``).
        tokenizer_state: :meth:`Tokenizer.state_dict`.
    """
    h = hashlib.sha256()
    for name in sorted(state_dicts):
        for key in sorted(state_dicts[name]):
            t = state_dicts[name][key].detach().cpu().contiguous()
            h.update(f"{name}.{key}:{t.dtype}:{tuple(t.shape)}\n".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    h.update(json.dumps(tokenizer_state, sort_keys=True).encode())
    return h.hexdigest()


def check_fingerprint(path: Path, found: str | None, source: Path, expected: str) -> None:
    """Raise :class:`DataError` if ``path``'s fingerprint is not ``source``'s; warn if absent."""
    if found is None:
        warnings.warn(
            f"{path}: no fingerprint (an export from before twotower recorded them): "
            f"cannot check that it belongs to {source}",
            stacklevel=3,
        )
    elif found != expected:
        raise DataError(
            path,
            None,
            None,
            f"fingerprints differ: {found[:12]} here, {expected[:12]} in {source}: they come "
            "from different exports (a copied index or embeddings?); export again",
        )


def _export_fingerprint(directory: Path, model: dict[str, Any], tokenizer_state: dict) -> str:
    """The fingerprint of ``model.pt`` and ``tokenizer.json``, checked against the manifest."""
    found = fingerprint({name: model[name]["state_dict"] for name in TOWERS}, tokenizer_state)
    manifest = json.loads((directory / "manifest.json").read_text())
    if "fingerprint" in manifest:
        source = f"{directory / 'model.pt'} and {directory / 'tokenizer.json'}"
        check_fingerprint(directory / "manifest.json", manifest["fingerprint"], source, found)
    return found


def load_doc_embeddings(directory: str | Path) -> Tensor:
    """An export's ``(D, d)`` document vectors, checked against its towers and tokenizer."""
    directory = Path(directory)
    path = directory / "doc_embeddings.pt"
    saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True)  # paged as read
    old = isinstance(saved, Tensor)  # before fingerprints: a bare tensor
    embeddings, found = (saved, None) if old else (saved["embeddings"], saved["fingerprint"])
    model = torch.load(directory / "model.pt", map_location="cpu", weights_only=True)
    tokenizer_state = json.loads((directory / "tokenizer.json").read_text())
    expected = _export_fingerprint(directory, model, tokenizer_state)
    check_fingerprint(path, found, directory / "model.pt", expected)
    return embeddings


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
        tokenizer_state = json.loads((directory / "tokenizer.json").read_text())
        expected = _export_fingerprint(directory, model, tokenizer_state)
        index = load_index(directory / "index")
        meta = directory / "index" / "index.json"
        check_fingerprint(meta, index.fingerprint, directory / "model.pt", expected)
        doc_ids, doc_texts = [], []
        with open(directory / "docs.jsonl", encoding="utf-8") as f:
            for line in f:
                doc = json.loads(line)
                doc_ids.append(doc["_id"])
                doc_texts.append(doc["text"])
        return cls(
            module_from_spec(model["query_tower"]),
            module_from_spec(model["similarity"]),
            tokenizer_from_state(tokenizer_state),
            index,
            doc_ids,
            doc_texts,
            manifest["max_query_words"],
            manifest["max_word_tokens"],
        )

    def encode(self, queries: list[str]) -> Tensor:
        """Search-ready query vectors ``(Q, d)``; warns for a query with no known token."""
        return self._encode(queries, stacklevel=3)

    def _encode(self, queries: list[str], stacklevel: int) -> Tensor:
        """:meth:`encode`, its warnings attributed ``stacklevel`` frames up (the user's call)."""
        store, _ = self.tokenizer.encode_store(queries, self.max_query_words, self.max_word_tokens)
        tokens = store.padded()  # (Q, W, T)
        known = (tokens > UNK).flatten(1).any(1)  # (Q,): any id that is neither pad nor unknown
        for i in (~known).nonzero().flatten().tolist():
            # Its vector is the towers' answer to nothing: the same arbitrary documents.
            warnings.warn(
                f"query {queries[i]!r}: no token in the vocabulary (every token is unknown); "
                "its results are arbitrary",
                stacklevel=stacklevel,
            )
        with torch.inference_mode():
            return self.similarity.prepare(self.query_tower(tokens)).float()  # (Q, d)

    def search(self, queries: list[str] | str, k: int = 10) -> list[list[Hit]]:
        """The top-``k`` documents of each query, best first."""
        if isinstance(queries, str):
            queries = [queries]
        vectors = self._encode(queries, stacklevel=3)  # (Q, d)
        scores, indices = self.index.search(vectors, k)  # (Q, k), (Q, k)
        results = []
        for row_i, row_s in zip(indices.tolist(), scores.tolist(), strict=True):
            ranked = enumerate(zip(row_i, row_s, strict=True), start=1)
            hits = [Hit(r, self.doc_ids[i], s, self.doc_texts[i]) for r, (i, s) in ranked if i >= 0]
            results.append(hits)  # index -1: the index found fewer than k documents
        return results
