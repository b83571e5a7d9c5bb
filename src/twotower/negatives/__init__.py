"""Candidate builders: each query's scored candidates, their labels and a validity mask.

One strategy per file, each an ``nn.Module`` called as ``negatives(q, d, batch, similarity,
encode) -> Candidates`` ``(B, C)``; :mod:`twotower.negatives.base` has the shared parts and
the masking rule, :mod:`twotower.negatives.frequency` the item-frequency estimators of the
logQ correction.
"""

from twotower.negatives.base import (
    NO_QUERY,
    Candidates,
    Encoder,
    History,
    Negatives,
    gather_positives,
    score_in_batch,
    score_pool,
    score_shared,
)
from twotower.negatives.frequency import CountedFrequency, StreamingFrequency
from twotower.negatives.in_batch import InBatchNegatives
from twotower.negatives.presampled import PresampledNegatives
from twotower.negatives.sampled import SampledNegatives
from twotower.negatives.uniform import UniformNegatives
from twotower.negatives.xbm import CrossBatchMemory

__all__ = [
    "NO_QUERY",
    "Candidates",
    "CountedFrequency",
    "CrossBatchMemory",
    "Encoder",
    "History",
    "InBatchNegatives",
    "Negatives",
    "PresampledNegatives",
    "SampledNegatives",
    "StreamingFrequency",
    "UniformNegatives",
    "gather_positives",
    "score_in_batch",
    "score_pool",
    "score_shared",
]
