"""Features of users or items: typed columns of N entities, batched by indexing.

A :class:`FeatureStore` is to the feature towers what a :class:`TokenStore` is to the text
towers: row ``i`` is entity ``i`` (user ``i`` or item ``i`` of the data module), and
``store.batch(rows)`` gives the tower's input, a dict ``{feature name: tensor}``.

Tensor layout per :attr:`Feature.kind` (``N`` entities; ids ``0`` mean missing / padding)::

    id         (N,) long        the entity's own index + 1 (an ID embedding's row)
    token      (N,) long        1..cardinality-1, 0 = missing or unknown value
    token_seq  (N, L) long      a bag of tokens (genres, title words), left-aligned, 0-padded
    float      (N,) float       NaN = missing
    float_seq  (N, L) float     NaN-padded
    text       TokenStore       letter-trigram (or other tokenizer) ids: batches (B, W, T) long
    history    (N, H) long      the user's training items (item index + 1), most recent first,
                                0-padded; a training row hides its own target item

>>> import torch
>>> store = FeatureStore(
...     [Feature("id", "id", 3), Feature("age", "float", train_values=torch.tensor([20., 40.]))],
...     {"id": torch.tensor([1, 2]), "age": torch.tensor([20.0, float("nan")])},
... )
>>> store.batch(torch.tensor([1]))
{'id': tensor([2]), 'age': tensor([nan])}
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from torch import Tensor

from twotower.data.components.tokens import TokenStore

KINDS = ("id", "token", "token_seq", "float", "float_seq", "text", "history")
ID_KINDS = ("id", "token", "token_seq", "text", "history")  # integer ids < cardinality


@dataclass(frozen=True)
class Feature:
    """What a tower needs to know about one feature to build its encoder.

    Args:
        name: the field's name (``age``, ``genre`` ...), the key of the batch dict.
        kind: one of :data:`KINDS`.
        cardinality: for id kinds, the number of ids including 0 (padding / missing).
        width: for ``token_seq``, ``float_seq`` and ``history``, the padded length ``L``/``H``
            of the store's tensor (every batch has it).
        train_values: for float kinds, the finite values of the entities seen in training
            (flattened), from which towers take their statistics (mean, std, quantiles).
        vocab: for ``token`` / ``token_seq``, the value of each id (``vocab[0]`` is "").
    """

    name: str
    kind: str
    cardinality: int = 0
    width: int = 0
    train_values: Tensor | None = field(default=None, repr=False, compare=False)
    vocab: tuple[str, ...] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"feature {self.name!r}: kind {self.kind!r} is not one of {KINDS}")
        if self.kind in ID_KINDS and self.cardinality < 1:
            raise ValueError(f"feature {self.name!r} ({self.kind}) needs a cardinality >= 1")


class FeatureStore:
    """The features of ``N`` entities; ``batch(rows)`` is a tower's input.

    Args:
        features: the schema, one :class:`Feature` per column.
        tensors: ``{name: tensor or TokenStore}`` with ``N`` rows each (layout above).
    """

    def __init__(self, features: Sequence[Feature], tensors: dict[str, Tensor | TokenStore]):
        self.features = list(features)
        names = [f.name for f in self.features]
        if sorted(names) != sorted(tensors) or len(set(names)) != len(names):
            raise ValueError(f"features {names} and tensors {sorted(tensors)} disagree")
        self.tensors = {f.name: tensors[f.name] for f in self.features}
        sizes = {len(t) for t in self.tensors.values()}
        if len(sizes) > 1:
            raise ValueError(f"feature columns have different numbers of rows: {sizes}")
        self.size = sizes.pop() if sizes else 0

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)

    def batch(self, rows: Tensor) -> dict[str, Tensor]:
        """The features of entities ``rows`` ``(B,)``: ``{name: (B, ...)}``."""
        return {
            name: t.batch(rows).long() if isinstance(t, TokenStore) else t[rows]
            for name, t in self.tensors.items()
        }

    def select(self, rows: Tensor) -> FeatureStore:
        """A store of entities ``rows`` only (same schema)."""
        picked = {
            name: t.select(rows) if isinstance(t, TokenStore) else t[rows]
            for name, t in self.tensors.items()
        }
        return FeatureStore(self.features, picked)
