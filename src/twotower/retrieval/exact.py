"""Exact top-k inner-product search in blocks: never the full ``(Q, D)`` score matrix.

Each ``(query_block, doc_block)`` block of scores is one matmul. Selecting the top k from it
with ``torch.topk`` would cost more than the matmul, so the search keeps a running k-th best
score per query (a threshold) and only looks closer at what beats it:

1. split the block's columns into groups of ``_GROUP`` (column ``j`` of group ``c`` is
   ``c + j * G``, so the group maxima are one vectorised ``amax`` over a strided view);
2. keep the groups whose maximum beats the threshold, then the scores in them that do;
3. merge those few candidates with the running top k.

The first block of each query block has no threshold yet: the k-th largest group maximum is a
lower bound of the k-th largest score, so it serves. After a few blocks almost nothing beats
the threshold, and the search runs at about the speed of the matmul.

>>> q, d = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.5, 0.0], [2.0, 0.0], [0.5, 0.0]])
>>> exact_search(q, d, k=2)
(tensor([[2.0000, 0.5000]]), tensor([[1, 0]]))
"""

from __future__ import annotations

import torch
from torch import Tensor

# Columns per group: small enough that a passing group brings few non-candidates along,
# large enough that the per-group masks and their nonzero() cost little next to the matmul.
_GROUP = 16
# Default block: 2048 x 16384 floats (128 MiB). Smaller blocks cost more Python per score;
# larger ones gain nothing once the matmul runs at full speed.
QUERY_BLOCK, DOC_BLOCK = 2048, 16384


def check_matrix(x: Tensor, name: str) -> None:
    """Raise ``ValueError`` unless ``x`` is a 2-D float tensor."""
    if not isinstance(x, Tensor) or x.dim() != 2:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a 2-D (n, d) tensor, got {shape}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a float tensor, got {x.dtype}")


def check_queries(queries: Tensor, dim: int, k: int) -> None:
    """Raise ``ValueError`` unless ``queries`` is a float ``(Q, dim)`` tensor and ``k >= 1``."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k={k!r}: must be an int >= 1")
    check_matrix(queries, "queries")
    if queries.shape[1] != dim:
        raise ValueError(f"queries have d={queries.shape[1]} but the documents have d={dim}")


def exact_search(
    queries: Tensor,
    docs: Tensor,
    k: int,
    *,
    exclude: tuple[Tensor, Tensor] | None = None,
    query_block: int = QUERY_BLOCK,
    doc_block: int = DOC_BLOCK,
) -> tuple[Tensor, Tensor]:
    """The ``k`` documents with the largest inner product for each query, best first.

    Equal scores rank the lower document index first. Inputs must be finite.

    Args:
        queries: ``(Q, d)`` float.
        docs: ``(D, d)`` float, same dtype and device; ``D >= 1``.
        k: documents per query; ``k' = min(k, D)`` are returned.
        exclude: ``(rows, cols)`` long ``(P,)``: document ``cols[i]`` is never returned for
            query ``rows[i]`` (a user's training items). A query left with fewer than ``k'``
            documents gets index -1 and score -inf in the empty places.
        query_block, doc_block: the score block, ``query_block * doc_block`` floats (128 MiB
            by default); ``doc_block`` is raised to ``k'`` and to a multiple of 16.

    Returns:
        scores ``(Q, k')`` in the dtype of the inputs, indices ``(Q, k')`` long.
    """
    check_matrix(docs, "docs")
    check_queries(queries, docs.shape[1], k)
    if queries.dtype != docs.dtype or queries.device != docs.device:
        raise ValueError(
            f"queries ({queries.dtype}, {queries.device}) and docs ({docs.dtype}, "
            f"{docs.device}) must have the same dtype and device"
        )
    if len(docs) == 0:
        raise ValueError("docs is empty: nothing to search")
    for name, value in (("query_block", query_block), ("doc_block", doc_block)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r}: must be an int >= 1")
    k = min(k, len(docs))
    doc_block = _padded(max(doc_block, k))  # whole groups: only the last block needs padding
    scores = queries.new_empty(len(queries), k)
    indices = torch.empty(len(queries), k, dtype=torch.long, device=queries.device)
    pairs = None if exclude is None else _by_row(exclude, len(queries), len(docs))
    with torch.inference_mode():
        width = min(doc_block, _padded(len(docs)))
        buffer = queries.new_empty(min(query_block, len(queries)) * width)
        for start in range(0, len(queries), query_block):
            block = slice(start, start + query_block)
            masked = None
            if pairs is not None:
                rows, cols, ptr = pairs
                lo, hi = int(ptr[start]), int(ptr[min(start + query_block, len(queries))])
                masked = (rows[lo:hi] - start, cols[lo:hi])
            scores[block], indices[block] = _search_block(
                queries[block], docs, k, doc_block, buffer, masked
            )
    if pairs is not None:  # places only excluded (or padding) documents could fill
        indices[scores == float("-inf")] = -1
    return scores, indices


def _by_row(exclude: tuple[Tensor, Tensor], n_queries: int, n_docs: int):
    """Excluded pairs sorted by query, with each query's start offset ``(Q + 1,)``."""
    rows, cols = (t.long().flatten() for t in exclude)
    if len(rows) != len(cols):
        raise ValueError(f"exclude: {len(rows)} rows but {len(cols)} cols")
    if len(rows) and (rows.min() < 0 or rows.max() >= n_queries):
        raise ValueError(f"exclude: query rows must lie in [0, {n_queries})")
    if len(cols) and (cols.min() < 0 or cols.max() >= n_docs):
        raise ValueError(f"exclude: documents must lie in [0, {n_docs})")
    order = rows.argsort(stable=True)
    rows, cols = rows[order], cols[order]
    ptr = torch.searchsorted(rows, torch.arange(n_queries + 1))
    return rows, cols, ptr


def _padded(n: int) -> int:
    return -(-n // _GROUP) * _GROUP


def _search_block(
    q: Tensor,
    docs: Tensor,
    k: int,
    doc_block: int,
    buffer: Tensor,
    masked: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """Top-k of one query block over all documents, sorted (score desc, index asc).

    ``masked``: ``(rows, cols)`` of the block's excluded pairs, scored -inf.
    """
    qb = len(q)
    top_s, top_i = q.new_empty(qb, 0), torch.empty(qb, 0, dtype=torch.long, device=q.device)
    threshold = None  # (qb, 1): the running k-th best score
    for start in range(0, len(docs), doc_block):
        d = docs[start : start + doc_block]  # (n, d)
        n, width = len(d), _padded(len(d))
        if width > n:  # pad the last block with zero rows, scored -inf below
            d = torch.cat([d, d.new_zeros(width - n, d.shape[1])])
        s = torch.mm(q, d.T, out=buffer[: qb * width].view(qb, width))  # (qb, width)
        s[:, n:] = float("-inf")
        if masked is not None:
            here = (masked[1] >= start) & (masked[1] < start + n)
            s[masked[0][here], masked[1][here] - start] = float("-inf")
        groups = width // _GROUP
        s3 = s.view(qb, _GROUP, groups)  # s3[:, j, c] is column c + j * groups
        group_max = s3.amax(1)  # (qb, groups)
        first = threshold is None
        if first:
            # The k-th largest group maximum is <= the k-th largest score: a safe threshold.
            threshold = (
                group_max.topk(k, 1, sorted=False).values.amin(1, keepdim=True)
                if groups >= k
                else s[:, :n].amin(1, keepdim=True)
            )
            passed = group_max >= threshold  # (qb, groups)
        else:
            # Strict: a later document tying the k-th best loses to it (lower index first).
            passed = group_max > threshold
        rows, cols = passed.nonzero().unbind(1)  # (P,), (P,)
        if len(rows) == 0:
            continue
        values = s3[rows, :, cols]  # (P, _GROUP)
        keep = values >= threshold[rows] if first else values > threshold[rows]
        p, j = keep.nonzero().unbind(1)  # (C,), (C,)
        rows = rows[p]
        cand_s, cand_i = values[p, j], start + cols[p] + j * groups  # (C,), (C,)
        top_s, top_i = _merge(top_s, top_i, *_pad_rows(rows, cand_s, cand_i, qb), k)
        threshold = top_s.amin(1, keepdim=True)
    order = top_i.argsort(1)
    top_s, top_i = top_s.gather(1, order), top_i.gather(1, order)
    top_s, order = top_s.sort(dim=1, descending=True, stable=True)
    return top_s, top_i.gather(1, order)


def _pad_rows(rows: Tensor, s: Tensor, i: Tensor, qb: int) -> tuple[Tensor, Tensor]:
    """Scatter row-sorted candidates into ``(qb, m)`` padded with score -inf, index -1."""
    counts = torch.bincount(rows, minlength=qb)  # (qb,)
    width = int(counts.max())
    pos = torch.arange(len(rows), device=rows.device) - (counts.cumsum(0) - counts)[rows]
    out_s = s.new_full((qb, width), float("-inf"))
    out_i = torch.full((qb, width), -1, dtype=torch.long, device=rows.device)
    out_s[rows, pos], out_i[rows, pos] = s, i
    return out_s, out_i


def _merge(
    top_s: Tensor, top_i: Tensor, cand_s: Tensor, cand_i: Tensor, k: int
) -> tuple[Tensor, Tensor]:
    """Top-k of the running top-k and new candidates, ties to the lower index (unsorted)."""
    all_s, all_i = torch.cat([top_s, cand_s], 1), torch.cat([top_i, cand_i], 1)  # (qb, k + m)
    s, pos = all_s.topk(k, 1, sorted=False)  # (qb, k)
    i = all_i.gather(1, pos)
    # topk breaks ties arbitrarily; redo by (score desc, index asc) the rows where the k-th
    # best score has more holders than topk kept. Rare unless documents repeat.
    kth = s.amin(1, keepdim=True)
    tied = ((all_s == kth).sum(1) > (s == kth).sum(1)).nonzero().squeeze(1)
    if len(tied):
        order = all_i[tied].argsort(1)
        ts, ti = all_s[tied].gather(1, order), all_i[tied].gather(1, order)
        ts, order = ts.sort(dim=1, descending=True, stable=True)
        s[tied], i[tied] = ts[:, :k], ti.gather(1, order[:, :k])
    return s, i


def exact_search_bytes(
    num_queries: int,
    num_docs: int,
    dim: int,
    k: int,
    query_block: int = QUERY_BLOCK,
    doc_block: int = DOC_BLOCK,
) -> int:
    """Extra memory of :func:`exact_search` beyond its inputs, in bytes (float32).

    The score block, its group maxima and mask, the zero-padded last document block, and the
    running top-k with its merge buffers (about 3 copies of ``(query_block, 2k)``). The
    outputs, ``Q * k' * 12`` bytes, are counted too. Adversarial inputs (a corpus in
    increasing score order) can add up to another score block of candidates.
    """
    k = min(k, num_docs)
    qb = min(query_block, num_queries)
    db = min(_padded(max(doc_block, k)), _padded(num_docs))
    block = qb * db * 4 + qb * (db // _GROUP) * 5 + db * dim * 4
    top_k = 3 * qb * 2 * k * 12
    return block + top_k + num_queries * k * 12
