"""What every loss shares: ``(scores, labels, mask) -> scalar`` and the rows it can learn from."""

from __future__ import annotations

from typing import ClassVar

from torch import nn

from twotower.errors import ConfigError
from twotower.formats import COLUMNS


class Loss(nn.Module):
    """Base of every loss: ``forward(scores, labels, mask)`` of shape ``(B, C)`` -> scalar.

    A loss never sees a model or a tower: only the candidates' scores, labels and validity.
    ``needs_negatives_per_row`` says whether it compares a relevant and a non-relevant
    candidate of the same row (pairwise, listwise) or scores each candidate alone (pointwise).
    """

    needs_negatives_per_row: ClassVar[bool] = True

    def check(self, data_format: str) -> None:
        """Raise :class:`~twotower.errors.ConfigError` (key relative to the loss) if the
        training rows of ``data_format`` cannot feed this loss."""
        if self.needs_negatives_per_row and data_format == "labelled":
            raise ConfigError(
                "_target_",
                f"{type(self).__module__}.{type(self).__qualname__}",
                "ranks a relevant against a non-relevant candidate of the same query, but the "
                f"data are {COLUMNS['labelled']}, one candidate per row; use loss=pointwise "
                "or presampled data",
            )
