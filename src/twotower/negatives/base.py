"""What every candidate builder shares: the Candidates triple, the base class and the helpers.

Every strategy returns :class:`Candidates` ``(scores, labels, mask)`` of shape ``(B, C)``,
the input of every loss. A candidate that is the same document as the query's positive
(same ``doc_id``), or the document of another row's positive with the same ``query_id``, is
masked in every column where it appears: it is never scored as a negative (the seeds'
rotation sampler makes that mistake). The strategies that bind the training data
(:class:`History`) also mask, or redraw, any training positive of the row's query, in every
column where it appears.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from pytorch_lightning.utilities import move_data_to_device
from torch import Tensor, nn

from twotower.distributed import gather
from twotower.errors import ConfigError
from twotower.formats import COLUMNS, described
from twotower.similarity import Similarity

if TYPE_CHECKING:
    from twotower.data.base import Catalogue
    from twotower.losses.base import Loss

Encoder = Callable[[Any], Tensor]  # a tower input (tensor or dict of tensors) -> (B, D)
NO_QUERY = -1  # query id of candidates that are nobody's positive


class Candidates(NamedTuple):
    scores: Tensor  # (B, C) gamma-scaled similarities, minus the logQ correction if any
    labels: Tensor  # (B, C) relevance, > 0 relevant
    mask: Tensor  # (B, C) True = a valid candidate
    # The candidates' document indices, shared (C,) or per row (B, C), -1 for a padding
    # slot; what a teacher scores them by (distillation). None: not known.
    doc_ids: Tensor | None = None
    # (B, C) the gamma-scaled similarities before the logQ correction, which corrects the
    # sampling of the pool and is no part of what a teacher scores. None: ``scores``.
    raw_scores: Tensor | None = None

    @property
    def uncorrected(self) -> Tensor:
        """``(B, C)`` the scores without the logQ correction: what distillation compares."""
        return self.scores if self.raw_scores is None else self.raw_scores


class Negatives(nn.Module):
    """Base of every strategy: ``forward(q, d, batch, similarity, encode) -> Candidates``.

    A module, so that the LightningModule registers it: ``.training`` follows train / eval
    and buffers (a streaming frequency estimate) are saved in checkpoints.

    Args (of ``forward``):
        q, d: ``(B, D)`` query and positive-document vectors.
        batch: the rows, with ``query_id`` and ``doc_id`` ``(B,)`` long.
        similarity: gamma-scaled cosine or dot.
        encode: the document tower, for documents that are not in ``d``.
    """

    formats: tuple[str, ...] = ("pairs", "presampled")  # training row formats it accepts
    catalogue: Catalogue | None = None  # the training data's documents, after bind()

    def check(self, loss: Loss, data_format: str, batch_size: int) -> None:
        """Raise :class:`~twotower.errors.ConfigError` (key relative to the strategy) if it
        cannot train ``loss`` on rows of ``data_format`` in batches of ``batch_size``."""
        if data_format not in self.formats:
            raise ConfigError(
                "_target_",
                f"{type(self).__module__}.{type(self).__qualname__}",
                f"needs training rows of format {described(self.formats)}, but the data are "
                f"{COLUMNS[data_format]}",
            )

    def bind(self, catalogue: Catalogue) -> None:
        """Take what the strategy needs from the training data (called once, after setup).

        Keeps the catalogue (the documents to draw from) and binds the strategy's parts
        (frequency estimator, history), its direct submodules.
        """
        self.catalogue = catalogue
        for part in self.children():
            if hasattr(part, "bind"):
                part.bind(catalogue)


def score_shared(
    q: Tensor,
    batch: dict[str, Tensor],
    docs: Tensor,
    doc_ids: Tensor,
    owner_ids: Tensor,
    pos_col: Tensor,
    similarity: Similarity,
) -> Candidates:
    """Score every query against one shared candidate set with one matmul.

    Args:
        q: ``(B, D)`` query vectors.
        batch: holds ``doc_id`` and ``query_id`` ``(B,)`` of the queries' positives.
        docs: ``(N, D)`` candidate vectors; ``doc_ids`` their document ids ``(N,)``;
            ``owner_ids`` the query id each candidate is the positive of, or ``NO_QUERY``.
        pos_col: ``(B,)`` column of each query's own positive.
    """
    scores = similarity(q, docs)  # (B, N)
    rows = torch.arange(q.shape[0], device=q.device)
    labels = torch.zeros_like(scores)
    labels[rows, pos_col] = 1.0
    # The masked entries are few: found as index pairs by sorting, not as (B, N) comparisons
    # (with a 16k-vector memory those took most of the step).
    same_doc = equal_pairs(batch["doc_id"], doc_ids)  # the row's positive document
    # A positive of the same query is masked wherever its document appears (another query's
    # positive, a shared negative), not only in its owner's column.
    owned_rows, owned_cols = equal_pairs(batch["query_id"], owner_ids)
    at, cols = equal_pairs(doc_ids[owned_cols], doc_ids)
    mask = torch.ones_like(scores, dtype=torch.bool)
    mask[same_doc] = False
    mask[owned_rows[at], cols] = False
    mask[rows, pos_col] = True
    return Candidates(scores, labels, mask, doc_ids)


def equal_pairs(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Every ``(i, j)`` with ``a[i] == b[j]``, as two index tensors (``a`` ``(B,)``, ``b``
    ``(N,)``); costs a sort of ``b`` and the matches, never ``B x N``.

    >>> equal_pairs(torch.tensor([5, 7, 9]), torch.tensor([7, 5, 7]))
    (tensor([0, 1, 1]), tensor([1, 0, 2]))
    """
    ordered, perm = torch.sort(b, stable=True)
    lo = torch.searchsorted(ordered, a)
    counts = torch.searchsorted(ordered, a, right=True) - lo  # (B,)
    i = torch.repeat_interleave(torch.arange(len(a), device=a.device), counts)
    first = torch.repeat_interleave(lo - (torch.cumsum(counts, 0) - counts), counts)
    j = perm[first + torch.arange(len(i), device=a.device)]
    return i, j


def gather_positives(
    d: Tensor, batch: dict[str, Tensor], global_batch: bool = True
) -> tuple[Tensor, Tensor, Tensor, int]:
    """The batch's positives as candidates: ``(docs, doc_ids, owner_ids, offset)``.

    Under DDP (``global_batch``) every process's documents are gathered with their gradient;
    ``offset`` is the column of this process's first row.
    """
    if not global_batch:
        return d, batch["doc_id"], batch["query_id"], 0
    docs, offset = gather(d)  # (W*B, D)
    doc_ids, _ = gather(batch["doc_id"])  # (W*B,)
    owner_ids, _ = gather(batch["query_id"])  # (W*B,)
    return docs, doc_ids, owner_ids, offset


def score_in_batch(
    q: Tensor, d: Tensor, batch: dict, similarity: Similarity, global_batch: bool = True
) -> Candidates:
    """Every document of the batch (of the global batch under DDP) is a candidate."""
    docs, doc_ids, owner_ids, offset = gather_positives(d, batch, global_batch)
    pos_col = offset + torch.arange(q.shape[0], device=q.device)
    return score_shared(q, batch, docs, doc_ids, owner_ids, pos_col, similarity)


def unbound(strategy: str, what: str) -> RuntimeError:
    """The error of a strategy used before :meth:`Negatives.bind`."""
    return RuntimeError(
        f"{strategy} needs {what} of the training data: call bind(datamodule.catalogue()) "
        "after the data are set up, before the first step"
    )


class History(nn.Module):
    """Which (query, document) pairs are training positives: a user's consumed items.

    The pairs are kept as sorted keys ``query_id * n_docs + doc_id`` and looked up with
    ``searchsorted``, so a ``(B, C)`` test costs ``B * C * log P`` and no Python loop; when
    queries x documents is at most ``DENSE_LIMIT`` a bool table over the keys answers with
    one lookup (uniform negatives test every draw, several rounds a step). Both are rebuilt
    from the data by :meth:`bind`, hence not saved in checkpoints.

    Example:
        >>> import torch
        >>> from twotower.data.base import Catalogue
        >>> h = History()
        >>> h.bind(Catalogue(range(3), torch.tensor([0, 0, 1]), torch.tensor([0, 2, 1])))
        >>> h(torch.tensor([0, 1]), torch.tensor([0, 1, 2]))
        tensor([[ True, False,  True],
                [False,  True, False]])
    """

    DENSE_LIMIT = 2**26  # (queries x documents) up to this: a bool table, one lookup a test

    def __init__(self):
        super().__init__()
        self.register_buffer("keys", torch.empty(0, dtype=torch.long), persistent=False)
        self.register_buffer("table", torch.empty(0, dtype=torch.bool), persistent=False)
        self.n_docs = 0

    def bind(self, catalogue: Catalogue) -> None:
        self.n_docs = len(catalogue.docs)
        keys = catalogue.positive_query.long() * self.n_docs + catalogue.positive_doc.long()
        self.keys = torch.unique(keys).to(self.keys.device)  # sorted
        size = int(self.keys[-1]) + 1 if len(self.keys) else 0
        table = torch.zeros(size if size <= self.DENSE_LIMIT else 0, dtype=torch.bool)
        if len(table):  # MovieLens: 943 x 1,682 = 1.6 MB
            table[self.keys.cpu()] = True
        self.table = table.to(self.keys.device)

    def forward(self, query_id: Tensor, doc_ids: Tensor) -> Tensor:
        """``(B, C)`` True where ``doc_ids`` (``(C,)`` shared or ``(B, C)``) is in the
        history of the row's ``query_id`` ``(B,)``."""
        if not self.n_docs:
            raise unbound("masking the query's training positives", "the (query, doc) pairs")
        if not len(self.keys):
            return torch.zeros(
                len(query_id), doc_ids.shape[-1], dtype=torch.bool, device=doc_ids.device
            )
        if doc_ids.dim() == 1 and not len(self.table):
            return self._shared(query_id, doc_ids)
        keys = query_id[:, None] * self.n_docs + doc_ids  # (B, C)
        if len(self.table):  # keys past the table (queries without training positives): False
            inside = (keys >= 0) & (keys < len(self.table))
            return self.table[keys.clamp(0, len(self.table) - 1)] & inside
        at = torch.searchsorted(self.keys, keys).clamp(max=len(self.keys) - 1)  # (B, C)
        return self.keys[at] == keys

    def _shared(self, query_id: Tensor, doc_ids: Tensor) -> Tensor:
        """:meth:`forward` for columns shared by every row: from each row's few positives.

        A query's keys are one run of the sorted keys, so each row's positives are found by
        two binary searches and each positive's columns by two more in the sorted columns:
        ``B * P * log C`` work instead of ``B * C * log(keys)`` (2,048 rows x 14,336 mined
        columns: 29M binary searches a step otherwise).
        """
        n = self.n_docs
        lo = torch.searchsorted(self.keys, query_id * n)  # (B,) each row's run of keys
        hi = torch.searchsorted(self.keys, (query_id + 1) * n)
        rows, at = _expand(lo, hi)  # (P,) every (row, key) pair
        positives = self.keys[at] - query_id[rows] * n  # (P,) the rows' positive documents
        sorted_ids, order = doc_ids.sort()
        first = torch.searchsorted(sorted_ids, positives)
        last = torch.searchsorted(sorted_ids, positives, right=True)
        pairs, column = _expand(first, last)  # (M,) every (positive, matching column) pair
        mask = torch.zeros(len(query_id), len(doc_ids), dtype=torch.bool, device=doc_ids.device)
        mask[rows[pairs], order[column]] = True  # (B, C)
        return mask


def _expand(start: Tensor, stop: Tensor) -> tuple[Tensor, Tensor]:
    """``(owner, index)`` for every index of every range ``start[i]:stop[i]``, in order."""
    counts = (stop - start).clamp(min=0)
    owner = torch.repeat_interleave(torch.arange(len(start), device=start.device), counts)
    skip = torch.cumsum(counts, 0) - counts  # pairs before each range
    index = start[owner] + torch.arange(len(owner), device=start.device) - skip[owner]
    return owner, index


def score_pool(
    q: Tensor,
    batch: dict[str, Tensor],
    docs: Tensor,
    doc_ids: Tensor,
    owner_ids: Tensor,
    pos_col: Tensor,
    similarity: Similarity,
    log_q: Tensor | None = None,
    history: History | None = None,
    mask_duplicates: bool = True,
) -> Candidates:
    """:func:`score_shared`, then the logQ correction and the masking of histories.

    Args:
        log_q: ``(N,)`` log of each candidate's expected count in the pool, subtracted from
            its score in every row (the row's positive included; the scores before it are
            kept as ``raw_scores``); ``None``: no correction.
        history: masks, in each row, the other training positives of the row's query.
        mask_duplicates: ``False`` keeps other copies of the row's positive (and the other
            positives of its query) as negatives: the blog code's defect, for ablations only.
    """
    shared = score_shared(q, batch, docs, doc_ids, owner_ids, pos_col, similarity)
    scores, mask, raw = shared.scores, shared.mask, None
    if not mask_duplicates:
        mask = torch.ones_like(mask)
    if log_q is not None:
        raw, scores = scores, scores - log_q.to(scores.dtype)  # (B, N)
    if history is not None:
        known = history(batch["query_id"], doc_ids)  # (B, N)
        known[torch.arange(q.shape[0], device=q.device), pos_col] = False
        mask = mask & ~known
    return Candidates(scores, shared.labels, mask, doc_ids, raw)


def catalogue_vectors(
    catalogue: Catalogue, ids: Tensor, encode: Encoder, device
) -> tuple[Tensor, Tensor]:
    """The vectors ``(U, D)`` of the distinct catalogue documents among ``ids`` (on the CPU)
    and each id's row among them (``ids``' shape): ``vectors[inverse]`` are the ids' vectors.

    Each distinct document is encoded once: 1,024 rows x 64 uniform draws from 1,682 items
    would otherwise gather and encode 65,536 feature rows per step.
    """
    unique, inverse = torch.unique(ids, return_inverse=True)
    vectors = encode(move_data_to_device(catalogue.docs.batch(unique), device))
    return vectors, inverse.to(vectors.device)


def sample_hard(table: Tensor, k: int, how: str) -> Tensor:
    """``(B, k)`` of each row's hard negatives ``table`` ``(B, W)`` (-1 padded, best first):
    the first ``k`` (``top``) or ``k`` distinct ones at random (``random``, torch's global
    RNG); -1 where a row has fewer."""
    if how == "top" or table.shape[1] <= k:
        out = table[:, :k]
    else:
        keys = torch.rand(table.shape, device=table.device)
        keys[table < 0] = 2.0  # pads sort last
        out = table.gather(1, keys.topk(k, dim=1, largest=False).indices)
    if out.shape[1] < k:
        out = torch.cat([out, out.new_full((len(out), k - out.shape[1]), -1)], 1)
    return out


def resize_from_state(module: nn.Module, state_dict: dict, prefix: str, names) -> None:
    """Give buffers ``names`` of ``module`` the shapes they have in ``state_dict``: buffers
    whose size the data set (a queue, a mined table) then load from a checkpoint."""
    for name in names:
        saved = state_dict.get(prefix + name)
        if saved is not None:
            current = getattr(module, name)
            setattr(module, name, torch.empty_like(saved, device=current.device))
