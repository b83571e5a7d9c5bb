"""What the commands print: the run's progress and results, not the libraries' chatter.

Each line silenced here was checked to say nothing a twotower user can act on; a filter
matches its message exactly, so every other warning and note still shows. Lightning's notes
that a setting avoids are avoided in the config instead (``limit_*_batches: null`` prints
no "100% of the batches" note).
"""

from __future__ import annotations

import logging
import warnings

# Lightning's rank-zero notes, by the start of their message.
LIGHTNING_NOTES = (
    "GPU available: ",  # the accelerator is the config's choice (trainer=cpu|gpu)
    "TPU available: ",
    "HPU available: ",
    "💡 Tip: ",  # an advertisement for a hosted logger
    # Our RichModelSummary subclass replaces Lightning's default one, as intended.
    "Trainer already configured with model summary callbacks",
    # Printed twice (validate, then test); the run prints its best checkpoint once instead.
    "Restoring states from the checkpoint path at ",
    "Loaded model weights from the checkpoint at ",
)


class _DropNotes(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


def quiet_libraries() -> None:
    """Install the targeted filters (idempotent); called by every command before it runs."""
    rank_zero = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    if not any(isinstance(f, _DropNotes) for f in rank_zero.filters):
        rank_zero.addFilter(_DropNotes(LIGHTNING_NOTES))
    # faiss logs which CPU build it loads, and a ModuleNotFoundError for each build it tries
    # first: 8 lines per command that reads an index, none of them a problem.
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    # Lightning's own call to a torch API torch deprecated; nothing a user can change.
    warnings.filterwarnings(
        "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=Warning
    )
