"""A pretrained model's own tokenizer, producing the token tensors every tower takes.

Each sub-word of the model's tokenizer (special tokens included) is one "word" of one id
(``T = 1``): ``(N, L, 1)`` with ``L`` the sequence length. Ids are the model's plus one, so
that 0 stays padding here whatever the model's pad id; :mod:`twotower.towers.transformer`
undoes the shift. The whole tokenizer (its ``tokenizer.json``) is kept in the state, so a
checkpoint or an export encodes queries without the model directory.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

from twotower.data.components.tokenizers import Tokenizer
from twotower.data.components.tokens import TokenStore
from twotower.errors import ConfigError, check_positive
from twotower.hf import model_dir, require


class HFTokenizer(Tokenizer):
    """The tokenizer of a Hugging Face model (its ``tokenizer.json``, via ``tokenizers``).

    Args:
        model: the model directory or the package that ships it (see :mod:`twotower.hf`).
        max_length: ids per text, special tokens included; a text keeps its first ones
            (the data's ``max_query_words`` / ``max_doc_words`` cap it further).
        vocab: a saved ``tokenizer.json`` text (a checkpoint's); ``None`` reads the model's.
    """

    # A transformer's cost grows with the padded length: evaluation encodes texts by length.
    encode_by_length = True

    def __init__(self, model: str, max_length: int = 128, vocab: str | None = None):
        super().__init__()
        check_positive("max_length", max_length)
        self.model, self.max_length = str(model), max_length
        self._backend = None
        if vocab is not None:  # a checkpoint's tokenizer.json: the model files are not needed
            self._set_vocab(vocab)
        else:  # a wrong model fails now, named by its config key, not while reading data
            self.backend()

    @classmethod
    def from_state(cls, config: dict[str, Any], vocab: Any) -> HFTokenizer:
        return cls(**config, vocab=vocab)

    def _set_vocab(self, vocab: str) -> None:  # the tokenizer.json text of a saved state
        tokenizers = require("tokenizers")
        self._backend = tokenizers.Tokenizer.from_str(vocab)
        self._backend.no_truncation()  # truncation is per call (encode_store)
        self._backend.no_padding()

    def backend(self):
        """The ``tokenizers.Tokenizer``."""
        if self._backend is None:
            path = model_dir(self.model) / "tokenizer.json"
            if not path.is_file():
                raise ConfigError("model", self.model, f"has no fast tokenizer file {path}")
            self._set_vocab(path.read_text(encoding="utf-8"))
        return self._backend

    @property
    def is_fitted(self) -> bool:
        return True  # the vocabulary is the model's

    def fit(self, texts: Iterable[str]) -> HFTokenizer:
        return self

    @property
    def vocab_size(self) -> int:
        return self.backend().get_vocab_size(with_added_tokens=True) + 1

    def tokens(self, text: str) -> list[list[str]]:
        return [[t] for t in self.backend().encode(text).tokens]

    def words(self, text: str) -> list[str]:
        return self.backend().encode(text).tokens

    def encode_store(
        self, texts: Sequence[str], max_words: int, max_word_tokens: int | None = None
    ) -> tuple[TokenStore, int]:
        """Encode ``texts``, each cut to ``min(max_words, max_length)`` ids (special tokens kept);
        returns the store and the number of texts cut."""
        check_positive("max_words", max_words)
        limit = min(max_words, self.max_length)
        backend = self.backend()
        backend.enable_truncation(limit)
        try:
            encodings = backend.encode_batch(list(texts))
        finally:
            backend.no_truncation()
        lengths = [len(e.ids) for e in encodings]
        flat = torch.tensor([i + 1 for e in encodings for i in e.ids], dtype=torch.int32)
        n_truncated = sum(1 for e in encodings if e.overflowing)
        store = TokenStore(
            flat, torch.ones(len(flat), dtype=torch.int32), torch.tensor(lengths, dtype=torch.int32)
        )
        return store, n_truncated

    def config(self) -> dict[str, Any]:
        return {"model": self.model, "max_length": self.max_length}

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["vocab"] = self.backend().to_str()
        return state
