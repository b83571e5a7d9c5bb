"""Tokenizers: DSSM letter trigrams, hashing, vocabularies, the (N, W, T) layout, checkpoints."""

from __future__ import annotations

import pytest
import torch

from twotower.data.components.tokenizers import (
    UNK,
    CharNgramTokenizer,
    CharTokenizer,
    TrigramTokenizer,
    WordTokenizer,
    tokenizer_from_state,
)
from twotower.errors import ConfigError


def test_trigrams_of_a_word_follow_the_paper():
    tok = TrigramTokenizer(buckets=10)
    assert tok.tokens("good") == [["#go", "goo", "ood", "od#"]]
    assert tok.tokens("a") == [["#a#"]]
    assert tok.tokens("Good, DAY!") == [["#go", "goo", "ood", "od#"], ["#da", "day", "ay#"]]


def test_char_ngrams_of_several_sizes():
    tok = CharNgramTokenizer(n_min=3, n_max=4, buckets=10)
    assert tok.tokens("good") == [["#go", "goo", "ood", "od#", "#goo", "good", "ood#"]]
    assert tok.tokens("a") == [["#a#"]]  # shorter than n_min with its boundaries: one token
    assert tok.tokens("ab") == [["#ab", "ab#", "#ab#"]]  # n_max past the word: the whole word
    assert CharNgramTokenizer(n_min=3, n_max=3).pieces("good") == TrigramTokenizer().pieces("good")
    assert CharNgramTokenizer(3, 5, word_ids=True).pieces("ab")[-1] == "w:ab"
    with pytest.raises(ConfigError, match="n_max"):
        CharNgramTokenizer(n_min=4, n_max=3)
    with pytest.raises(ConfigError, match="n_min"):
        CharNgramTokenizer(n_min=0)


def test_char_ngram_vocabulary_survives_a_checkpoint():
    tok = CharNgramTokenizer(n_min=2, n_max=5, min_count=2).fit(["stem stems stemming", "stem"])
    again = tokenizer_from_state(tok.state_dict())
    assert isinstance(again, CharNgramTokenizer) and again.config() == tok.config()
    assert again.token_ids("stemmed") == tok.token_ids("stemmed")
    assert UNK in tok.token_ids("stemmed") and tok.token_ids("stem")[0] != UNK


def test_normalisation_is_nfkc_lowercase():
    assert WordTokenizer().words("ＧＯＯＤ Day") == ["good", "day"]  # full-width letters


def test_hashing_is_stable_and_in_range():
    tok = TrigramTokenizer(buckets=7)
    ids = tok.token_ids("hashing")
    # crc32 is fixed across runs and machines, unlike Python's salted hash().
    assert ids == [2, 5, 6, 4, 2, 4, 3]  # 2 + crc32(trigram) % 7, computed once and frozen
    assert ids == TrigramTokenizer(buckets=7).token_ids("hashing")
    x, _ = tok.encode(["some longer text with many words"] * 3, max_words=8)
    assert x.min() >= 0 and x.max() < tok.vocab_size == 9
    assert tok.is_fitted and tok.fit(["ignored"]) is tok


def test_vocabulary_is_ordered_by_frequency_then_alphabet():
    tok = WordTokenizer().fit(["b a c", "c b", "c"])
    assert tok.state_dict()["vocab"] == ["c", "b", "a"]
    again = WordTokenizer().fit(["c", "c b", "b a c"])  # same counts, other order
    assert again.state_dict() == tok.state_dict()
    assert tok.vocab_size == 5


def test_min_count_and_max_vocab():
    texts = ["x x x y y z"]
    assert WordTokenizer(min_count=2).fit(texts).state_dict()["vocab"] == ["x", "y"]
    assert WordTokenizer(max_vocab=1).fit(texts).vocab_size == 3
    with pytest.raises(ConfigError, match="min_count"):
        WordTokenizer(min_count=0)
    with pytest.raises(ConfigError, match="buckets"):
        TrigramTokenizer(buckets=0)


def test_unknown_tokens_map_to_one_and_fit_is_required():
    tok = WordTokenizer().fit(["known words"])
    x, _ = tok.encode(["known unseen"], max_words=4)
    assert x[0, :, 0].tolist() == [tok.token_ids("known")[0], UNK]
    with pytest.raises(RuntimeError, match="fit"):
        TrigramTokenizer().encode(["text"], max_words=4)


def test_char_tokenizer_splits_chinese_into_characters():
    tok = CharTokenizer().fit(["深度 语义匹配", "深度学习"])
    assert tok.tokens("深度 语义匹配") == [["深"], ["度"], ["语"], ["义"], ["匹"], ["配"]]
    x, _ = tok.encode(["深度 语义匹配", "深x"], max_words=10)
    assert x.shape == (2, 6, 1)
    assert x[0, :2, 0].tolist() == [tok.token_ids("深")[0], tok.token_ids("度")[0]]
    assert x[1, :, 0].tolist()[1:] == [UNK, 0, 0, 0, 0]


def test_encode_shape_padding_and_left_alignment():
    tok = TrigramTokenizer().fit(["good day to you a"])
    x, n_truncated = tok.encode(["good day", "a", ""], max_words=8)
    assert x.dtype == torch.long and x.shape == (3, 2, 4)  # W = longest text, T = "good"
    assert n_truncated == 0
    assert (x[0, 0] != 0).all() and x[0, 1].tolist()[-1] == 0  # "day": 3 ids, then pad
    assert (x[1, 0, 0] != 0) and (x[1, 0, 1:] == 0).all() and (x[1, 1] == 0).all()
    assert (x[2] == 0).all()
    present = (x != 0).any(-1)  # (N, W): present words come first
    assert (present[:, :-1] | ~present[:, 1:]).all()


def test_truncation_keeps_first_words_and_counts_texts():
    tok = WordTokenizer().fit(["a b c d e"])
    x, n_truncated = tok.encode(["a b c d e", "a b", "a b c", "a b c d"], max_words=3)
    assert n_truncated == 2
    assert x.shape == (4, 3, 1)
    assert x[0, :, 0].tolist() == [tok.token_ids(w)[0] for w in "abc"]


def test_encoding_matches_tokens():
    tok = TrigramTokenizer().fit(["the quick brown fox"])
    x, _ = tok.encode(["quick fox"], max_words=4)
    expected = [[tok.token_ids(w)] for w in ("quick", "fox")]
    assert x[0, 0, :5].tolist() == expected[0][0]
    assert x[0, 1, :3].tolist() == expected[1][0]


@pytest.mark.parametrize(
    "tok",
    [TrigramTokenizer(), TrigramTokenizer(buckets=50), WordTokenizer(max_vocab=3), CharTokenizer()],
    ids=["trigram", "hashed", "word", "char"],
)
def test_state_round_trip_encodes_identically(tok):
    texts = ["good morning", "good evening, moon", "深度 语义"]
    tok.fit(texts)
    state = tok.state_dict()
    restored = tokenizer_from_state(state)
    assert type(restored) is type(tok) and restored.state_dict() == state
    new = ["morning moon unseen", "语义"]
    assert torch.equal(restored.encode(new, 4)[0], tok.encode(new, 4)[0])


def test_trigram_word_ids_add_one_token_per_word():
    tok = TrigramTokenizer(word_ids=True, min_count=2).fit(["good day good", "day"])
    assert tok.tokens("good") == [["#go", "goo", "ood", "od#", "w:good"]]
    ids = tok.encode(["good day", "goods"], max_words=4)[0]
    assert ids[0, 0, 4] > 1 and ids[0, 1, 3] > 1  # w:good, w:day are in the vocabulary
    assert ids[1, 0, -1] == 1  # w:goods was never seen: unknown, its trigrams still count
    assert tokenizer_from_state(tok.state_dict()).tokens("day") == tok.tokens("day")
