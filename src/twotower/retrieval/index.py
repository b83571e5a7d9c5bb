"""Search indexes over document vectors: exact (torch) and faiss flat, HNSW and IVF.

Every index has the same interface: ``build(embeddings)``, ``search(queries, k)`` with the
contract of :func:`~twotower.retrieval.exact.exact_search` (inner product, ``(Q, k')`` scores
and long indices, ``k' = min(k, D)``, best first), ``save(directory)`` and
:func:`load_index`. An approximate index that finds fewer than ``k'`` documents for a query
pads its row with index -1 and score -inf; callers treat -1 as "no document".

Hydra builds one from ``conf/index/<kind>.yaml``. faiss is imported only by the faiss
indexes, so ``exact`` works without it; faiss uses as many threads as torch.

>>> index = ExactIndex().build(torch.eye(3))
>>> index.search(torch.tensor([[0.0, 2.0, 1.0]]), k=2)
(tensor([[2., 1.]]), tensor([[1, 2]]))
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import hydra.utils
import numpy as np
import torch
from torch import Tensor

from twotower.errors import check, check_positive
from twotower.retrieval.exact import (
    DOC_BLOCK,
    QUERY_BLOCK,
    check_matrix,
    check_queries,
    exact_search,
)

log = logging.getLogger(__name__)

# IVF k-means wants this many training vectors per list (faiss warns below 39).
MIN_DOCS_PER_LIST = 39


class Index(ABC):
    """Base class: the checks and ``index.json``; subclasses set ``kind`` and the hooks."""

    kind: str

    def __init__(self) -> None:
        self.num_docs, self.dim = 0, 0
        # Set by the export to tie the index to its towers and tokenizer; None: not recorded.
        self.fingerprint: str | None = None

    def params(self) -> dict[str, Any]:
        """Constructor arguments, written to ``index.json``."""
        return {}

    def build(self, embeddings: Tensor) -> Index:
        """Index ``(D, d)`` document vectors, row i is document i; returns ``self``."""
        check_matrix(embeddings, "embeddings")
        if len(embeddings) < 1:
            raise ValueError(f"{self.kind} index: embeddings is empty, need at least 1 document")
        self.num_docs, self.dim = embeddings.shape
        self._build(embeddings.detach().float().cpu().contiguous())
        return self

    def search(self, queries: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """Top-``k`` documents per query: scores ``(Q, k')`` float, indices ``(Q, k')`` long."""
        if self.num_docs == 0:
            raise RuntimeError(f"{self.kind} index is empty: call build() or load_index() first")
        check_queries(queries, self.dim, k)
        return self._search(queries.detach().float().cpu().contiguous(), min(k, self.num_docs))

    def save(self, directory: str | Path) -> Path:
        """Write ``index.json`` (kind, class, parameters, size, fingerprint) and the index data."""
        if self.num_docs == 0:
            raise RuntimeError(f"{self.kind} index is empty: nothing to save")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {
            "kind": self.kind,
            "_target_": f"{type(self).__module__}.{type(self).__qualname__}",
            "params": self.params(),
            "num_docs": self.num_docs,
            "dim": self.dim,
        }
        if self.fingerprint is not None:
            meta["fingerprint"] = self.fingerprint
        self._save(directory)
        (directory / "index.json").write_text(json.dumps(meta, indent=2) + "\n")
        return directory

    @abstractmethod
    def _build(self, embeddings: Tensor) -> None: ...

    @abstractmethod
    def _search(self, queries: Tensor, k: int) -> tuple[Tensor, Tensor]: ...

    @abstractmethod
    def _save(self, directory: Path) -> None: ...

    @abstractmethod
    def _load(self, directory: Path) -> None: ...


def load_index(directory: str | Path) -> Index:
    """Load an index written by :meth:`Index.save`; ``index.json`` names its class."""
    directory = Path(directory)
    meta_path = directory / "index.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{directory}: not a saved index (no index.json)")
    meta = json.loads(meta_path.read_text())
    cls = hydra.utils.get_class(meta["_target_"])
    if not (isinstance(cls, type) and issubclass(cls, Index)):
        raise ValueError(f"{meta_path}: _target_ {meta['_target_']} is not an Index")
    index = cls(**meta["params"])
    index.num_docs, index.dim = meta["num_docs"], meta["dim"]
    index.fingerprint = meta.get("fingerprint")
    index._load(directory)
    return index


def _check_counts(**values: Any) -> None:
    """Raise :class:`~twotower.errors.ConfigError` unless every value is an int > 0."""
    for key, value in values.items():
        check(isinstance(value, int) and not isinstance(value, bool), key, value, "must be an int")
        check_positive(key, value)


class ExactIndex(Index):
    """Exact search with :func:`exact_search`, in torch; no faiss needed.

    Saves its embeddings as ``embeddings.npy`` (float32): no pickle, and ``np.load`` can
    memory-map it.

    Args:
        query_block, doc_block: score block sizes of :func:`exact_search`.
    """

    kind = "exact"

    def __init__(self, query_block: int = QUERY_BLOCK, doc_block: int = DOC_BLOCK):
        super().__init__()
        _check_counts(query_block=query_block, doc_block=doc_block)
        self.query_block, self.doc_block = query_block, doc_block
        self.embeddings: Tensor | None = None

    def params(self) -> dict[str, Any]:
        return {"query_block": self.query_block, "doc_block": self.doc_block}

    def _build(self, embeddings: Tensor) -> None:
        self.embeddings = embeddings

    def _search(self, queries: Tensor, k: int) -> tuple[Tensor, Tensor]:
        return exact_search(
            queries, self.embeddings, k, query_block=self.query_block, doc_block=self.doc_block
        )

    def _save(self, directory: Path) -> None:
        np.save(directory / "embeddings.npy", self.embeddings.numpy())

    def _load(self, directory: Path) -> None:
        # copy-on-write memory map: pages are read as searched, the file is never written
        self.embeddings = torch.from_numpy(np.load(directory / "embeddings.npy", mmap_mode="c"))


class FaissIndex(Index):
    """Shared faiss plumbing: threads, float32 numpy, -1 padding; subclasses make the index."""

    def __init__(self) -> None:
        super().__init__()
        self.index: Any = None

    @abstractmethod
    def _make(self, faiss: Any, embeddings: np.ndarray) -> Any:
        """A new, empty faiss index for these embeddings."""

    def _configure(self) -> None:
        """Apply search-time parameters (also after loading)."""

    def _build(self, embeddings: Tensor) -> None:
        faiss = _faiss()
        x = embeddings.numpy()  # (D, d) float32, C-contiguous
        self.index = self._make(faiss, x)
        if not self.index.is_trained:
            self.index.train(x)
        self.index.add(x)
        self._configure()

    def _search(self, queries: Tensor, k: int) -> tuple[Tensor, Tensor]:
        _faiss()
        scores, indices = self.index.search(queries.numpy(), k)  # (Q, k), (Q, k)
        scores, indices = torch.from_numpy(scores), torch.from_numpy(indices)
        scores[indices < 0] = float("-inf")  # faiss found fewer than k: -1 means no document
        return scores, indices

    def _save(self, directory: Path) -> None:
        _faiss().write_index(self.index, str(directory / "index.faiss"))

    def _load(self, directory: Path) -> None:
        self.index = _faiss().read_index(str(directory / "index.faiss"))
        self._configure()


def _faiss() -> Any:
    """Import faiss and give it torch's thread count, so both compare on equal terms."""
    try:
        import faiss
    except ImportError as e:
        raise ImportError("this index needs faiss: pip install faiss-cpu") from e
    faiss.omp_set_num_threads(torch.get_num_threads())
    return faiss


class FlatIndex(FaissIndex):
    """faiss ``IndexFlatIP``: exact inner-product search (the speed reference)."""

    kind = "flat"

    def _make(self, faiss: Any, embeddings: np.ndarray) -> Any:
        return faiss.IndexFlatIP(embeddings.shape[1])


class HNSWIndex(FaissIndex):
    """faiss ``IndexHNSWFlat`` with inner product: a navigable small-world graph, no training.

    Args:
        m: neighbours per node; more gives better recall and more memory.
        ef_construction: candidate list while building; more gives a better graph.
        ef_search: candidate list while searching; more gives better recall, slower.
            faiss searches with at least ``k``.

    References:
        Malkov and Yashunin, Efficient and robust approximate nearest neighbor search using
        Hierarchical Navigable Small World graphs, TPAMI 2018.
    """

    kind = "hnsw"

    def __init__(self, m: int = 32, ef_construction: int = 200, ef_search: int = 128):
        super().__init__()
        for key, value in (
            ("m", m),
            ("ef_construction", ef_construction),
            ("ef_search", ef_search),
        ):
            check(isinstance(value, int), key, value, "must be an int")
            check_positive(key, value)
        self.m, self.ef_construction, self.ef_search = m, ef_construction, ef_search

    def params(self) -> dict[str, Any]:
        return {"m": self.m, "ef_construction": self.ef_construction, "ef_search": self.ef_search}

    def _make(self, faiss: Any, embeddings: np.ndarray) -> Any:
        index = faiss.IndexHNSWFlat(embeddings.shape[1], self.m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = self.ef_construction
        return index

    def _configure(self) -> None:
        self.index.hnsw.efSearch = self.ef_search


class IVFIndex(FaissIndex):
    """faiss ``IndexIVFFlat`` with inner product: k-means lists, search the nearest few.

    Trained on the documents themselves. For a small corpus ``nlist`` is lowered to
    ``D // 39`` (at least 1) so that k-means has enough vectors per list; a log line says so.

    Args:
        nlist: inverted lists (k-means centroids); about ``4 * sqrt(D)`` is usual.
        nprobe: lists searched per query; more gives better recall, slower.
    """

    kind = "ivf"

    def __init__(self, nlist: int = 1024, nprobe: int = 16):
        super().__init__()
        _check_counts(nlist=nlist, nprobe=nprobe)
        self.nlist, self.nprobe = nlist, nprobe

    def params(self) -> dict[str, Any]:
        return {"nlist": self.nlist, "nprobe": self.nprobe}

    def _make(self, faiss: Any, embeddings: np.ndarray) -> Any:
        num_docs, dim = embeddings.shape
        nlist = min(self.nlist, max(1, num_docs // MIN_DOCS_PER_LIST))
        if nlist < self.nlist:
            log.info(
                "ivf index: nlist %d lowered to %d for %d documents (k-means wants >= %d per list)",
                self.nlist,
                nlist,
                num_docs,
                MIN_DOCS_PER_LIST,
            )
        quantizer = faiss.IndexFlatIP(dim)
        return faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)

    def _configure(self) -> None:
        self.index.nprobe = min(self.nprobe, self.index.nlist)


def recall_of_exact(approx_indices: Tensor, exact_indices: Tensor, k: int) -> float:
    """Mean over queries of ``|approx top-k ∩ exact top-k| / k``: an ANN index's recall.

    Index -1 (no document) never counts. The denominator is the number of exact results in
    the first ``k`` (``k`` itself unless the corpus has fewer documents).

    >>> recall_of_exact(torch.tensor([[0, 5], [1, -1]]), torch.tensor([[0, 1], [1, 2]]), k=2)
    0.5
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k={k!r}: must be an int >= 1")
    if approx_indices.dim() != 2 or approx_indices.shape[0] != exact_indices.shape[0]:
        raise ValueError(
            f"approx_indices {tuple(approx_indices.shape)} and exact_indices "
            f"{tuple(exact_indices.shape)} must be (Q, k) with the same Q"
        )
    approx, exact = approx_indices[:, :k].long(), exact_indices[:, :k].long()  # (Q, <=k)
    if approx.numel() == 0 or exact.numel() == 0:
        return 0.0
    # One key per (query, document) pair makes the per-row intersection one isin().
    stride = int(max(approx.max(), exact.max())) + 2
    rows = torch.arange(len(exact))[:, None] * stride  # (Q, 1)
    found = torch.isin(approx + 1 + rows, exact + 1 + rows) & (approx >= 0)  # (Q, <=k)
    total = (exact >= 0).sum(1).clamp(min=1)  # (Q,)
    return float((found.sum(1) / total).mean())
