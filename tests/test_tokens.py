"""TokenStore: ragged storage, padded per batch, equal to the padded encoding."""

import pytest
import torch

from twotower.data.components import tokens
from twotower.data.components.tokenizers import TrigramTokenizer
from twotower.data.components.tokens import TokenStore

TEXTS = ["good day", "a", "", "internationalisation of everything", "x y z w"]


@pytest.mark.parametrize("limit", [0, tokens.PADDED_LIMIT], ids=["ragged", "padded copy"])
def test_batches_equal_the_padded_encoding(monkeypatch, limit):
    monkeypatch.setattr(tokens, "PADDED_LIMIT", limit)
    tok = TrigramTokenizer(buckets=997)
    store, _ = tok.encode_store(TEXTS, max_words=8)
    assert (store._padded is None) == (limit == 0)
    padded = store.padded()  # (N, W, T)
    rows = torch.tensor([3, 0, 2])
    batch = store.batch(rows)
    w, t = batch.shape[1:]
    assert torch.equal(batch, padded[rows, :w, :t])
    assert not padded[rows, w:].any() and not padded[rows, :, t:].any()  # trimmed, not cut
    assert store.batch(torch.tensor([2])).shape == (1, 1, 1)  # an empty text still has a slot


def test_select_and_from_padded_round_trip():
    store = TokenStore.from_lists([[[5, 6], [7]], [[8]], [], [[9, 10, 11]]])
    again = TokenStore.from_padded(store.padded())
    assert torch.equal(again.padded(), store.padded())
    picked = store.select(torch.tensor([3, 0]))
    assert picked.padded().tolist() == [[[9, 10, 11], [0, 0, 0]], [[5, 6, 0], [7, 0, 0]]]
    assert store.ids.dtype == torch.int32  # half the memory of int64 ids


def test_long_words_are_cut_and_counted():
    tok = TrigramTokenizer(buckets=997)
    store, n_cut = tok.encode_store(["supercalifragilistic ok", "ok"], 8, max_word_tokens=4)
    assert n_cut == 1 and store.padded().shape[-1] == 4
    assert store.batch(torch.tensor([1])).shape == (1, 1, 2)  # "#ok", "ok#": trimmed per batch
