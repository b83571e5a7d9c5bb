"""Full-corpus evaluation: rank every document for every judged query, then score the ranking.

:func:`evaluate` ranks given vectors; :class:`CorpusEvaluator` encodes them with a model,
in Lightning's validation and test loops (batches from every process) or over whole stores
(``twotower.evaluate``, ``twotower.export``), and ranks them with :func:`evaluate`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from pytorch_lightning.utilities import move_data_to_device, rank_zero_warn
from torch import Tensor

from twotower.errors import TrainingDiverged
from twotower.retrieval.exact import exact_search
from twotower.retrieval.ranking import (
    DEFAULT_METRICS,
    Qrels,
    max_k,
    parse_metrics,
    ranking_metrics,
)


@dataclass
class Ranking:
    """The top-k of each query and its metrics.

    Shapes:
        scores, indices: ``(Q, k)``, row i for query i of the evaluated split, best first;
        index -1 marks "no document" (an approximate index found fewer than k).
    """

    scores: Tensor
    indices: Tensor
    metrics: dict[str, float]
    per_query: dict[str, Tensor]


def evaluate(
    queries: Tensor,
    docs: Tensor,
    qrels: Qrels,
    metrics: list[str],
    depth: int = 100,
    index=None,
    query_present: Tensor | None = None,
    doc_present: Tensor | None = None,
    exclude: tuple[Tensor, Tensor] | None = None,
    candidates: Tensor | None = None,
) -> Ranking:
    """Rank ``docs`` for ``queries`` by inner product and score with ``qrels``.

    Args:
        queries: ``(Q, d)`` query vectors, already prepared for inner product (normalised for
            cosine), row i for the split's query i.
        docs: ``(D, d)`` document vectors, prepared the same way.
        qrels: the split's judgments over these query and document indices.
        metrics: metric names such as ``ndcg@10`` (see :mod:`twotower.retrieval.ranking`).
        depth: documents kept per query (the run file's depth); at least the metrics' k.
        index: a built index (:mod:`twotower.retrieval.index`) over ``docs``; ``None`` searches
            exactly.
        query_present, doc_present: ``(Q,)`` / ``(D,)`` bool masks of the rows that were
            encoded (a run limited to some validation batches): other documents are never
            retrieved and other queries are left out of the averages.
        exclude: ``(query rows, doc indices)`` pairs never retrieved (RecBole's full ranking
            masks each user's training items); needs exact search.
        candidates: ``(D,)`` bool, the only documents ranked (cold-start items).
    """
    k = max(depth, max_k(metrics))
    keep = doc_present
    if candidates is not None:
        keep = candidates if keep is None else keep & candidates
    doc_rows = None
    if keep is not None and not bool(keep.all()):
        doc_rows = keep.nonzero().squeeze(1)
        if exclude is not None:  # renumber the excluded documents among the kept ones
            new = torch.full((len(docs),), -1, dtype=torch.long)
            new[doc_rows] = torch.arange(len(doc_rows))
            rows, cols = exclude[0], new[exclude[1]]
            exclude = (rows[cols >= 0], cols[cols >= 0])
        docs = docs[doc_rows]
    if index is not None and exclude is not None:
        raise ValueError("an approximate index cannot exclude documents: search exactly")
    if index is not None and doc_rows is None:
        scores, indices = index.search(queries, k)
    else:
        scores, indices = exact_search(queries, docs, k, exclude=exclude)
    if doc_rows is not None:
        indices = torch.where(indices >= 0, doc_rows[indices.clamp(min=0)], indices)
    _, per_query = ranking_metrics(indices[qrels.query_rows], qrels, metrics, per_query=True)
    weight = torch.ones(len(qrels.query_rows))
    if query_present is not None:
        weight = query_present[qrels.query_rows].float()
    total = weight.sum().clamp(min=1)
    means = {name: float((v.float() * weight).sum() / total) for name, v in per_query.items()}
    return Ranking(scores, indices, means, per_query)


class Encoders(Protocol):
    """What the evaluator needs of a model: its two towers and its similarity."""

    device: torch.device
    similarity: Any

    def encode_queries(self, inputs: Any) -> Tensor: ...

    def encode_documents(self, inputs: Any) -> Tensor: ...


class CorpusEvaluator:
    """Encodes a split's judged queries and the whole corpus, ranks, and scores the ranking.

    In Lightning's loops the datamodule's second and third validation / test loaders give
    batches of judged queries (``{"index", "query"}``) and of corpus documents
    (``{"index", "doc"}``): :meth:`collect` encodes each, and :meth:`rank_epoch` gathers them
    from every process and ranks once per epoch. Vectors are prepared for inner product
    (normalised for cosine) by the model's similarity.

    Args:
        metrics: full-corpus metric names (``ndcg@10`` ...); a bad name fails here.
        depth: documents kept per query (the run file's depth).
    """

    def __init__(self, metrics: tuple[str, ...] | list[str] = DEFAULT_METRICS, depth: int = 100):
        parse_metrics(metrics)
        self.metrics, self.depth = list(metrics), depth
        self._encoded: dict[str, list[tuple[Tensor, Tensor]]] = {"query": [], "doc": []}
        self.rankings: dict[str, Ranking] = {}  # the last ranking of each stage

    @staticmethod
    def takes(batch: dict[str, Any]) -> bool:
        """Whether ``batch`` holds judged queries or corpus documents, not (query, doc) rows."""
        return "doc" not in batch or "query" not in batch

    def collect(self, model: Encoders, batch: dict[str, Any]) -> None:
        """Encode one batch of judged queries or of corpus documents and keep the vectors."""
        side = "query" if "doc" not in batch else "doc"
        encode = model.encode_queries if side == "query" else model.encode_documents
        vectors = model.similarity.prepare(encode(batch[side]))  # (B, D)
        self._encoded[side].append((batch["index"], vectors))

    @torch.inference_mode()
    def encode(
        self,
        model: Encoders,
        store: Any,
        side: str,
        batch_size: int = 1024,
        to_file: str | Path | None = None,
        by_length: bool = False,
    ) -> Tensor:
        """Search-ready float32 vectors ``(N, D)``, on the CPU, of every row of ``store`` (a
        token or feature store); ``side`` is ``query`` or ``doc``.

        With ``to_file``, each batch is written into that ``.npy`` file as it is encoded and the
        result is a tensor memory-mapped from it: the vectors never need to fit in memory, and
        exact search reads them block by block. ``by_length`` encodes the texts shortest first
        (batches pad to similar lengths: a transformer's cost grows with the padded length);
        the vectors stay in the store's order.
        """
        encode = {"query": model.encode_queries, "doc": model.encode_documents}[side]
        order = None
        if by_length and hasattr(store, "text_len"):
            order = torch.argsort(store.text_len.long(), stable=True)
        out: list[Tensor] = []
        disk = None
        for start in range(0, len(store), batch_size):
            rows = torch.arange(start, min(start + batch_size, len(store)))
            if order is not None:
                rows = order[rows]
            inputs = move_data_to_device(store.batch(rows), model.device)
            vectors = model.similarity.prepare(encode(inputs)).float().cpu()
            if to_file is None:
                out.append(vectors)
                continue
            if disk is None:
                shape = (len(store), vectors.shape[1])
                disk = np.lib.format.open_memmap(to_file, mode="w+", dtype=np.float32, shape=shape)
            disk[rows.numpy()] = vectors.numpy()
        if disk is not None:
            disk.flush()
            return torch.from_numpy(disk)
        if not out:
            return torch.zeros(0, 0)
        vectors = torch.cat(out)
        if order is not None:
            vectors[order] = vectors.clone()
        return vectors

    def rank(
        self,
        split: Any,
        queries: Tensor,
        docs: Tensor,
        query_present: Tensor | None = None,
        doc_present: Tensor | None = None,
        index: Any = None,
    ) -> Ranking:
        """Rank ``docs`` ``(D, d)`` for ``split``'s judged ``queries`` ``(Q, d)`` and score it,
        leaving out what the split excludes (a user's training items) and keeping only its
        candidates (cold-start items)."""
        return evaluate(
            queries,
            docs,
            split.judged,
            self.metrics,
            depth=self.depth,
            index=index,
            query_present=query_present,
            doc_present=doc_present,
            exclude=split.exclude,
            candidates=split.candidates,
        )

    def rank_epoch(self, stage: str, split: Any, n_docs: int, all_gather=None) -> Ranking | None:
        """Rank what :meth:`collect` kept this epoch (``None`` if it kept no document: a
        sanity check), gathered with ``all_gather`` under DDP; kept in ``rankings[stage]``."""
        if not self._encoded["doc"]:
            self.reset()
            return None
        queries, q_present = self._gathered("query", len(split.query_ids), all_gather)
        docs, d_present = self._gathered("doc", n_docs, all_gather)
        for side, vectors in (("query", queries), ("document", docs)):
            if not torch.isfinite(vectors).all():
                raise TrainingDiverged(f"{stage}: the {side} tower gives non-finite vectors")
        if not (q_present.all() and d_present.all()):
            rank_zero_warn(
                f"{stage}: ranked {int(d_present.sum())}/{len(d_present)} documents for "
                f"{int(q_present.sum())}/{len(q_present)} queries (limit_{stage}_batches?): "
                "the full-corpus metrics cover only those"
            )
        self.rankings[stage] = self.rank(split, queries, docs, q_present, d_present)
        return self.rankings[stage]

    def reset(self) -> None:
        """Drop the vectors collected so far."""
        self._encoded = {"query": [], "doc": []}

    def _gathered(self, side: str, n: int, all_gather) -> tuple[Tensor, Tensor]:
        """The ``(n, D)`` vectors collected this epoch (from every process) and a present mask."""
        parts, self._encoded[side] = self._encoded[side], []
        index = torch.cat([i for i, _ in parts])
        vectors = torch.cat([v for _, v in parts]).float()
        if all_gather is not None:  # samplers pad to equal shards: shapes agree
            index = all_gather(index).flatten()
            vectors = all_gather(vectors).flatten(0, -2)
        out = vectors.new_zeros(n, vectors.shape[-1])
        out[index] = vectors
        present = torch.zeros(n, dtype=torch.bool, device=out.device)
        present[index] = True
        return out.cpu(), present.cpu()
