"""Tokenizers: text -> a ``(N, W, T)`` LongTensor of sub-word ids (W words, T ids per word).

Id 0 is padding and 1 is unknown; real ids are ``2..vocab_size-1``. Words are left-aligned
(present words first, then all-zero pad words) and so are the ids inside a word, so a word is
present iff any of its ids is non-zero. Text is NFKC-normalised and lowercased first.

>>> tok = TrigramTokenizer(buckets=1000)
>>> tok.tokens("Good day")
[['#go', 'goo', 'ood', 'od#'], ['#da', 'day', 'ay#']]
>>> ids, n_truncated = tok.encode(["good day", "a"], max_words=8)
>>> tuple(ids.shape), n_truncated
((2, 2, 4), 0)
"""

from __future__ import annotations

import importlib
import re
import unicodedata
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from twotower.compat import current_target
from twotower.data.components.tokens import TokenStore
from twotower.errors import check, check_positive

PAD, UNK = 0, 1
_WORD = re.compile(r"\w+")


def normalize(text: str) -> str:
    """NFKC-normalise and lowercase ``text``."""
    return unicodedata.normalize("NFKC", text).lower()


class Tokenizer:
    """Base class: splits text into words and words into sub-word tokens, maps tokens to ids.

    Subclasses define :meth:`words` and :meth:`pieces`; vocabularies are built by :meth:`fit`
    (ids by descending frequency, then lexicographically, so fitting is deterministic).

    Args:
        min_count: tokens seen fewer times in the fitted texts map to unknown (1).
        max_vocab: keep at most this many real tokens (the most frequent); ``None`` keeps all.
    """

    def __init__(self, min_count: int = 1, max_vocab: int | None = None):
        check(isinstance(min_count, int) and min_count >= 1, "min_count", min_count, "must be >= 1")
        if max_vocab is not None:
            check_positive("max_vocab", max_vocab)
        self.min_count, self.max_vocab = min_count, max_vocab
        self._ids: dict[str, int] | None = None  # token -> id; None until fitted

    # -- splitting (override in subclasses) ---------------------------------------------------
    def words(self, text: str) -> list[str]:
        """The words of ``text`` after normalisation (``\\w+`` matches)."""
        return _WORD.findall(normalize(text))

    def pieces(self, word: str) -> list[str]:
        """The sub-word tokens of one (normalised) word."""
        return [word]

    def tokens(self, text: str) -> list[list[str]]:
        """``text`` as a list of words, each a list of sub-word strings (for inspection)."""
        return [self.pieces(w) for w in self.words(text)]

    # -- vocabulary ---------------------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        return self._ids is not None

    def fit(self, texts: Iterable[str]) -> Tokenizer:
        """Build the vocabulary from ``texts``; returns ``self``."""
        word_counts = Counter(w for text in texts for w in self.words(text))
        counts: Counter[str] = Counter()
        for word, n in word_counts.items():  # expand distinct words only: far fewer than tokens
            for piece in self.pieces(word):
                counts[piece] += n
        kept = [t for t, n in counts.items() if n >= self.min_count]
        kept.sort(key=lambda t: (-counts[t], t))  # deterministic: frequency, then alphabet
        self._set_vocab(kept[: self.max_vocab])
        return self

    @classmethod
    def from_state(cls, config: dict[str, Any], vocab: Any) -> Tokenizer:
        """A tokenizer built with ``config`` and given the saved ``vocab`` (``None``: unfitted)."""
        tokenizer = cls(**config)
        if vocab is not None:
            tokenizer._set_vocab(vocab)
        return tokenizer

    def _set_vocab(self, vocab: Sequence[str]) -> None:
        self._ids = {token: i for i, token in enumerate(vocab, start=2)}

    def _require_fitted(self) -> dict[str, int]:
        if self._ids is None:
            raise RuntimeError(f"{type(self).__name__} has no vocabulary: call fit(texts) first")
        return self._ids

    @property
    def vocab_size(self) -> int:
        """Number of ids, including padding (0) and unknown (1)."""
        return len(self._require_fitted()) + 2

    def token_ids(self, word: str) -> list[int]:
        """The ids of one word's tokens (unknown tokens -> 1)."""
        ids = self._require_fitted()
        return [ids.get(piece, UNK) for piece in self.pieces(word)]

    # -- encoding -----------------------------------------------------------------------------
    def encode(self, texts: Sequence[str], max_words: int) -> tuple[Tensor, int]:
        """Encode ``texts`` into one padded ``(N, W, T)`` long tensor (see :meth:`encode_store`).

        ``W = min(max_words, longest text)`` and ``T`` is the longest kept word's token count
        (both at least 1). Returns ``(ids, n_truncated)``.
        """
        store, n_truncated = self.encode_store(texts, max_words)
        return store.padded(), n_truncated

    def encode_store(
        self, texts: Sequence[str], max_words: int, max_word_tokens: int | None = None
    ) -> tuple[TokenStore, int]:
        """Encode ``texts`` into a ragged :class:`TokenStore`.

        Texts longer than ``max_words`` keep their first ``max_words`` words and words with more
        than ``max_word_tokens`` ids their first ones (a URL would otherwise widen every batch);
        the number of texts cut either way is returned so the caller can log it.
        """
        check_positive("max_words", max_words)
        if max_word_tokens is not None:
            check_positive("max_word_tokens", max_word_tokens)
        cache: dict[str, list[int]] = {}  # words repeat a lot: tokenise each distinct one once
        flat: list[int] = []  # every kept id, text by text, word by word
        word_lens: list[int] = []  # ids per kept word
        text_lens: list[int] = []  # kept words per text
        n_truncated = 0
        for text in texts:
            words = self.words(text)
            cut = len(words) > max_words
            words = words[:max_words]
            text_lens.append(len(words))
            for word in words:
                ids = cache.get(word)
                if ids is None:
                    ids = cache[word] = self.token_ids(word)
                if max_word_tokens is not None and len(ids) > max_word_tokens:
                    ids, cut = ids[:max_word_tokens], True
                flat.extend(ids)
                word_lens.append(len(ids))
            n_truncated += cut
        store = TokenStore(
            torch.tensor(flat, dtype=torch.int32),
            torch.tensor(word_lens, dtype=torch.int32),
            torch.tensor(text_lens, dtype=torch.int32),
        )
        return store, n_truncated

    # -- checkpointing ------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """The constructor arguments."""
        return {"min_count": self.min_count, "max_vocab": self.max_vocab}

    def state_dict(self) -> dict[str, Any]:
        """Plain Python data that rebuilds this tokenizer with :func:`tokenizer_from_state`."""
        ids = self._ids
        cls = type(self)
        return {
            "class": f"{cls.__module__}.{cls.__qualname__}",
            "config": self.config(),
            "vocab": None if ids is None else sorted(ids, key=ids.__getitem__),
        }


class CharNgramTokenizer(Tokenizer):
    """Each word becomes its letter n-grams, ``n_min <= n <= n_max``, with ``#`` boundaries.

    ``good`` with n from 3 to 4 -> ``#go goo ood od# #goo good ood#``. Longer n-grams carry
    stems and affixes that trigrams split up, so a word never seen in training still shares
    its larger pieces with the words it derives from (fastText's subword model). A word of
    at most ``n_min - 2`` letters is one token with its boundaries, ``#a#``.

    Args:
        n_min, n_max: the n-gram sizes kept (3 and 6 in fastText).
        buckets: if set, hash each n-gram to ``2 + crc32(ngram) % buckets`` (stable across
            runs and machines; no fit needed, ``min_count`` is ignored); ``None`` builds the
            vocabulary from data with :meth:`fit`.
        min_count: n-grams seen fewer times when fitting map to unknown (1).
        word_ids: also give each word a token of its own (``w:good``) beside its n-grams, so
            a frequent word gets its own embedding; ``min_count`` applies to it too.

    References:
        Bojanowski et al., "Enriching Word Vectors with Subword Information", TACL 2017.
    """

    def __init__(
        self,
        n_min: int = 3,
        n_max: int = 4,
        buckets: int | None = None,
        min_count: int = 1,
        word_ids: bool = False,
    ):
        super().__init__(min_count=min_count)
        check(isinstance(n_min, int) and n_min >= 1, "n_min", n_min, "must be >= 1")
        check(
            isinstance(n_max, int) and n_max >= n_min, "n_max", n_max, f"must be >= n_min ({n_min})"
        )
        if buckets is not None:
            check(
                isinstance(buckets, int) and buckets > 0, "buckets", buckets, "must be > 0 or null"
            )
        check(isinstance(word_ids, bool), "word_ids", word_ids, "must be true or false")
        self.n_min, self.n_max = n_min, n_max
        self.buckets, self.word_ids = buckets, word_ids

    def pieces(self, word: str) -> list[str]:
        w = f"#{word}#"
        if len(w) <= self.n_min:
            grams = [w]
        else:
            grams = [
                w[i : i + n]
                for n in range(self.n_min, min(self.n_max, len(w)) + 1)
                for i in range(len(w) - n + 1)
            ]
        # ':' never occurs in an n-gram of \w characters, so a word token cannot collide.
        return [*grams, f"w:{word}"] if self.word_ids else grams

    @property
    def is_fitted(self) -> bool:
        return self.buckets is not None or self._ids is not None

    def fit(self, texts: Iterable[str]) -> CharNgramTokenizer:
        return self if self.buckets is not None else super().fit(texts)  # hashing: nothing to fit

    @property
    def vocab_size(self) -> int:
        return self.buckets + 2 if self.buckets is not None else super().vocab_size

    def token_ids(self, word: str) -> list[int]:
        if self.buckets is None:
            return super().token_ids(word)
        return [2 + zlib.crc32(p.encode("utf-8")) % self.buckets for p in self.pieces(word)]

    def config(self) -> dict[str, Any]:
        return {
            "n_min": self.n_min,
            "n_max": self.n_max,
            "buckets": self.buckets,
            "min_count": self.min_count,
            "word_ids": self.word_ids,
        }


class TrigramTokenizer(CharNgramTokenizer):
    """DSSM word hashing: each word becomes its letter trigrams with ``#`` boundaries.

    ``good`` -> ``#go goo ood od#``; a one-letter word ``a`` -> ``#a#``.

    Args:
        buckets: if set, hash each trigram to ``2 + crc32(trigram) % buckets`` (stable across
            runs and machines; no fit needed, ``min_count`` is ignored); ``None`` builds the
            vocabulary from data with :meth:`fit`.
        min_count: trigrams seen fewer times when fitting map to unknown (1).
        word_ids: also give each word a token of its own (``w:good``) beside its trigrams, so
            a frequent word gets its own embedding; ``min_count`` applies to it too.

    References:
        Huang et al., "Learning Deep Structured Semantic Models for Web Search using
        Clickthrough Data", CIKM 2013.
    """

    def __init__(self, buckets: int | None = None, min_count: int = 1, word_ids: bool = False):
        super().__init__(3, 3, buckets=buckets, min_count=min_count, word_ids=word_ids)

    def config(self) -> dict[str, Any]:
        return {"buckets": self.buckets, "min_count": self.min_count, "word_ids": self.word_ids}


class WordTokenizer(Tokenizer):
    """One id per word (``T = 1``); a word-unigram vocabulary.

    Args:
        min_count: words seen fewer times when fitting map to unknown (1).
        max_vocab: keep at most this many words (the most frequent), plus pad and unknown.
    """


class CharTokenizer(Tokenizer):
    """Every non-whitespace character is a word with one id (``T = 1``): for Chinese, where
    letter trigrams are useless and no word segmenter is at hand.

    Args:
        min_count: characters seen fewer times when fitting map to unknown (1).
    """

    def __init__(self, min_count: int = 1):
        super().__init__(min_count=min_count)

    def words(self, text: str) -> list[str]:
        return [c for c in normalize(text) if not c.isspace()]

    def config(self) -> dict[str, Any]:
        return {"min_count": self.min_count}


class JiebaTokenizer(Tokenizer):
    """Chinese words segmented by ``jieba`` (``T = 1``), other scripts as ``\\w+`` words.

    Needs the ``zh`` extra: ``pip install 'twotower[zh]'``.

    Args:
        min_count: words seen fewer times when fitting map to unknown (1).
        max_vocab: keep at most this many words (the most frequent).
    """

    def __init__(self, min_count: int = 1, max_vocab: int | None = None):
        super().__init__(min_count=min_count, max_vocab=max_vocab)
        try:
            import jieba
        except ImportError:
            raise ImportError("tokenizer=jieba needs jieba: pip install 'twotower[zh]'") from None
        jieba.setLogLevel(60)  # silence its start-up banner
        self._cut = jieba.lcut

    def words(self, text: str) -> list[str]:
        return [w for w in self._cut(normalize(text)) if _WORD.fullmatch(w)]


def tokenizer_from_state(state: dict[str, Any]) -> Tokenizer:
    """Rebuild a tokenizer saved with :meth:`Tokenizer.state_dict` (e.g. from a checkpoint)."""
    module, _, name = current_target(state["class"]).rpartition(".")
    return getattr(importlib.import_module(module), name).from_state(
        state["config"], state["vocab"]
    )
