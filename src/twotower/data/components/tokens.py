"""TokenStore: the token ids of many texts, stored ragged, padded per batch.

A padded ``(N, W, T)`` tensor of a real corpus is mostly zeros (one long definition or one long
word widens every row), so texts are stored as a flat id list with word and text lengths, and
only the rows of a batch are padded, to that batch's longest text and word.

>>> store = TokenStore.from_lists([[[5, 6], [7]], [[8]]])
>>> store.batch(torch.tensor([1, 0])).tolist()
[[[8, 0], [0, 0]], [[5, 6], [7, 0]]]
"""

from __future__ import annotations

import torch
from torch import Tensor


def _starts(lengths: Tensor) -> Tensor:
    """Start offset of each segment of ``lengths`` in the flat layout (int64)."""
    return lengths.long().cumsum(0) - lengths.long()


def _ranges(starts: Tensor, lengths: Tensor) -> Tensor:
    """Concatenation of ``arange(s, s + n)`` for each ``(s, n)``: flat positions, vectorised."""
    total = int(lengths.sum())
    offsets = torch.repeat_interleave(starts - _starts(lengths), lengths, output_size=total)
    return torch.arange(total) + offsets


PADDED_LIMIT = 256 * 2**20  # bytes: smaller stores also keep a padded copy (faster batches)


class TokenStore:
    """Ragged token ids of ``N`` texts (id 0 never stored: it is padding).

    When the padded ``(N, W, T)`` int32 form fits in ``PADDED_LIMIT`` bytes it is built once
    and batches are plain indexing (about 3x faster); larger stores pad per batch.

    Args:
        ids: ``(total ids,)`` every id, text by text, word by word (int32 keeps memory low).
        word_len: ``(total words,)`` ids per word.
        text_len: ``(N,)`` words per text.
    """

    def __init__(self, ids: Tensor, word_len: Tensor, text_len: Tensor):
        self.ids = ids.to(torch.int32)
        self.word_len = word_len.to(torch.int32)
        self.text_len = text_len.to(torch.int32)
        self.word_start = _starts(self.word_len)  # (total words,)
        self.text_start = _starts(self.text_len)  # (N,)
        # Longest word per text, so a batch knows its T without touching the ids.
        word_text = torch.repeat_interleave(torch.arange(len(self.text_len)), self.text_len.long())
        self.text_width = torch.zeros(len(self.text_len), dtype=torch.int32)
        if len(word_text):
            self.text_width.scatter_reduce_(0, word_text, self.word_len, "amax")
        self._padded: Tensor | None = None
        n, w, t = len(self.text_len), self._max(self.text_len), self._max(self.text_width)
        if n * w * t * 4 <= PADDED_LIMIT:
            self._padded = self._pad(torch.arange(n)).to(torch.int32)

    @staticmethod
    def _max(x: Tensor) -> int:
        return max(int(x.max()) if len(x) else 0, 1)

    @classmethod
    def from_lists(cls, texts: list[list[list[int]]]) -> TokenStore:
        """From nested lists: texts of words of ids."""
        flat = [i for text in texts for word in text for i in word]
        word_len = [len(word) for text in texts for word in text]
        return cls(
            torch.tensor(flat, dtype=torch.int32),
            torch.tensor(word_len, dtype=torch.int32),
            torch.tensor([len(t) for t in texts], dtype=torch.int32),
        )

    @classmethod
    def from_padded(cls, tokens: Tensor) -> TokenStore:
        """From a left-aligned ``(N, W, T)`` id tensor (0 = padding)."""
        present = tokens != 0
        word_len = present.sum(-1)  # (N, W)
        words = word_len > 0
        return cls(tokens[present], word_len[words], words.sum(-1))

    def __len__(self) -> int:
        return len(self.text_len)

    def state_dict(self) -> dict[str, Tensor]:
        return {"ids": self.ids, "word_len": self.word_len, "text_len": self.text_len}

    def words(self, rows: Tensor | None = None) -> Tensor:
        """Words per text ``(N,)`` (or per row of ``rows``)."""
        return self.text_len if rows is None else self.text_len[rows]

    def batch(self, rows: Tensor) -> Tensor:
        """Padded ``(B, W, T)`` long ids of texts ``rows``: W and T are the batch's longest."""
        rows = rows.long()
        if self._padded is None:
            return self._pad(rows)
        w, t = self._max(self.text_len[rows]), self._max(self.text_width[rows])
        return self._padded[rows, :w, :t].long()

    def _pad(self, rows: Tensor) -> Tensor:
        """Pad texts ``rows`` from the ragged layout."""
        text_len = self.text_len[rows].long()  # (B,)
        w, t = self._max(text_len), self._max(self.text_width[rows])
        out = torch.zeros(len(rows), w, t, dtype=torch.long)
        words = _ranges(self.text_start[rows], text_len)  # (words,) positions in word_len
        if not len(words):
            return out
        word_len = self.word_len[words].long()  # (words,)
        ids = self.ids[_ranges(self.word_start[words], word_len)].long()  # (ids,)
        # Where each id goes: its batch row, its word within the row, its slot within the word.
        word_row = torch.repeat_interleave(torch.arange(len(rows)), text_len)
        word_pos = torch.arange(len(words)) - torch.repeat_interleave(_starts(text_len), text_len)
        id_word = torch.repeat_interleave(torch.arange(len(words)), word_len)
        id_pos = torch.arange(len(ids)) - torch.repeat_interleave(_starts(word_len), word_len)
        out[word_row[id_word], word_pos[id_word], id_pos] = ids
        return out

    def select(self, rows: Tensor) -> TokenStore:
        """A new store of texts ``rows`` (in that order)."""
        rows = rows.long()
        text_len = self.text_len[rows].long()
        words = _ranges(self.text_start[rows], text_len)
        word_len = self.word_len[words].long()
        return TokenStore(self.ids[_ranges(self.word_start[words], word_len)], word_len, text_len)

    def padded(self) -> Tensor:
        """All texts as one ``(N, W, T)`` long tensor."""
        return self._pad(torch.arange(len(self)))
