"""How often each item is a training positive: the sampling probability of the logQ correction.

Both estimators give ``log_prob(ids)``, the log-probability that one training positive (one
in-batch candidate) is item ``ids``, and take ``update(ids)`` with the item ids of each
global training batch (the strategy calls it only in training mode).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from twotower.errors import check, check_choice
from twotower.negatives.base import unbound

if TYPE_CHECKING:
    from twotower.data.base import Catalogue


class CountedFrequency(nn.Module):
    """``p_j = c_j / sum(c)``: item ``j``'s share of the training positives (exact, needs bind).

    An item that is never a training positive counts as seen once, so its correction stays
    finite; only validation batches can hold one. The probabilities come from the data at
    :meth:`bind` and are not saved in checkpoints.

    Example:
        >>> import torch
        >>> from twotower.data.base import Catalogue
        >>> f = CountedFrequency()
        >>> f.bind(Catalogue(range(3), torch.zeros(4), torch.tensor([0, 0, 0, 1])))  # 3, 1, 0
        >>> f.log_prob(torch.tensor([0, 1, 2])).exp()
        tensor([0.7500, 0.2500, 0.2500])
    """

    def __init__(self):
        super().__init__()
        self.register_buffer("log_p", torch.empty(0), persistent=False)

    def bind(self, catalogue: Catalogue) -> None:
        counts = catalogue.doc_counts.double()
        log_p = (counts.clamp(min=1) / counts.sum().clamp(min=1)).log()  # (N,)
        self.log_p = log_p.float().to(self.log_p.device)

    def update(self, ids: Tensor) -> None:
        """Nothing to do: the counts are fixed."""

    def log_prob(self, ids: Tensor) -> Tensor:
        if not len(self.log_p):
            raise unbound("logq=counted", "the item counts")
        return self.log_p[ids]


class StreamingFrequency(nn.Module):
    """The hashed streaming estimator of Yi et al. (Algorithm 2), no pass over the data.

    For each training step ``t`` and each item ``y`` of the global batch, with ``h`` its
    bucket: ``B[h] <- (1 - alpha) B[h] + alpha (t - A[h])``, then ``A[h] <- t``. ``B``
    tracks the steps between occurrences, so ``1 / B`` estimates occurrences per step
    (the probability of appearing in a step, while that is small). ``log_prob`` divides
    it by the mean number of items per step.

    Repeats: the paper's loop gives an item seen ``m`` times in a step one gap ``t - A``
    and ``m - 1`` gaps of 0, which pull ``B`` below the mean gap and over-estimate the rate
    (x2.2 for an item seen 28 times in every batch at ``alpha = 0.05``: exactly the popular
    items that the correction is for). Here the ``m``
    occurrences are spread evenly over the step (one gap ``t - A - 1 + 1/m``, then gaps of
    ``1/m``), which keeps the mean gap and equals the paper's update when ``m = 1``.

    Item ids are dense indices, so the hash is ``id % buckets``: no collisions when
    ``buckets`` >= the number of items; with fewer, items that share a bucket add up
    their rates and each is over-estimated (never under-estimated).

    A bucket's first gap is the time since the start, taken as ``B`` as it is instead of
    blended with an arbitrary initial value, so the estimate is usable from the first steps.
    A bucket never seen counts as seen once in ``t + 1`` steps. The arrays and the step
    counter are buffers: a checkpoint resumes the estimate.

    Args:
        buckets: hash slots (``H`` in the paper); 4 bytes + 8 bytes each.
        alpha: learning rate of the moving average of gaps, in (0, 1]; smaller is smoother
            and slower to follow a drifting distribution.

    References:
        Yi et al., Sampling-Bias-Corrected Neural Modeling for Large Corpus Item
        Recommendations, RecSys 2019, section 5 (Algorithm 2).

    Example:
        >>> import torch
        >>> f = StreamingFrequency(buckets=8, alpha=0.5)
        >>> for ids in ([0, 1], [0, 2], [0, 1]):
        ...     f.update(torch.tensor(ids))
        >>> f.rate(torch.tensor([0, 1, 2, 3]))  # B = 1, 1.5, 2; 3 is unseen: 1 / (3 + 1)
        tensor([1.0000, 0.6667, 0.5000, 0.2500])
    """

    def __init__(self, buckets: int = 2**20, alpha: float = 0.05):
        super().__init__()
        ok = isinstance(buckets, int) and not isinstance(buckets, bool) and buckets >= 1
        check(ok, "buckets", buckets, "must be an integer >= 1")
        ok = isinstance(alpha, int | float) and not isinstance(alpha, bool) and 0 < alpha <= 1
        check(ok, "alpha", alpha, "must be in (0, 1]")
        self.buckets, self.alpha = buckets, float(alpha)
        self.register_buffer("last", torch.zeros(buckets, dtype=torch.long))  # A; 0 = never
        self.register_buffer("gap", torch.zeros(buckets))  # B
        self.register_buffer("step", torch.zeros((), dtype=torch.long))  # t
        self.register_buffer("seen", torch.zeros((), dtype=torch.long))  # items over all steps

    def bind(self, catalogue: Catalogue) -> None:
        """Nothing to take: the estimate comes from the batches."""

    @torch.no_grad()
    def update(self, ids: Tensor) -> None:
        """One training step with the global batch's item ids (any shape)."""
        bucket, m = torch.unique(ids.flatten() % self.buckets, return_counts=True)  # (U,)
        self.step += 1
        last = self.last[bucket]  # (U,)
        m = m.to(self.gap.dtype)
        keep = 1.0 - self.alpha
        # The step's m occurrences, spread evenly over it: one gap t - A - 1 + 1/m, then
        # m - 1 gaps of 1/m; the m EMA updates in closed form.
        first = (self.step - last).to(m.dtype) - 1 + 1 / m  # (U,)
        after_first = torch.where(last == 0, first, keep * self.gap[bucket] + self.alpha * first)
        decay = keep ** (m - 1)  # (U,)
        self.gap[bucket] = decay * after_first + (1 - decay) / m
        self.last[bucket] = self.step
        self.seen += ids.numel()

    def rate(self, ids: Tensor) -> Tensor:
        """Estimated occurrences per step of items ``ids`` (``1 / B``)."""
        bucket = ids % self.buckets
        seen = self.last[bucket] > 0
        unseen = (self.step + 1).to(self.gap.dtype)
        return 1.0 / torch.where(seen, self.gap[bucket], unseen)

    def log_prob(self, ids: Tensor) -> Tensor:
        per_step = (self.seen.to(self.gap.dtype) / self.step.clamp(min=1)).clamp(min=1)
        return (self.rate(ids) / per_step).log()


def item_frequency(
    logq: str | None, buckets: int, alpha: float
) -> CountedFrequency | StreamingFrequency | None:
    """The estimator a strategy's ``logq`` option names (``None``: no correction)."""
    check_choice("logq", logq, (None, "counted", "streaming"))
    if logq == "counted":
        return CountedFrequency()
    return StreamingFrequency(buckets, alpha) if logq == "streaming" else None
