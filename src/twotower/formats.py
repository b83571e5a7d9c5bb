"""The training-row formats a datamodule gives and the parts that consume them accept.

- ``pairs``: (query, doc), a relevant pair per row; negatives come from the strategy.
- ``presampled``: (query, doc, neg_1..neg_K), the data name each row's negatives.
- ``labelled``: (label, query, doc), one candidate per row, relevant or not.
"""

from __future__ import annotations

FORMATS = ("pairs", "presampled", "labelled")

# What a row of each format holds, for messages that say which format a part needs.
COLUMNS = {
    "pairs": "pairs (query, doc)",
    "presampled": "presampled (query, doc, neg_1..neg_K)",
    "labelled": "labelled (label, query, doc)",
}


def described(formats: tuple[str, ...]) -> str:
    """``formats`` as a message names them: ``pairs (query, doc) or presampled (...)``."""
    return " or ".join(COLUMNS[f] for f in formats)
