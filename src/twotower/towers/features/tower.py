"""Feature tower: a user's or an item's features -> one encoder each -> concatenation -> network."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import pairwise
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from twotower.data.components.features import Feature
from twotower.errors import ConfigError, check, check_choice
from twotower.towers.base import (
    check_activation,
    check_dropout,
    check_flag,
    check_size,
    dense,
    is_int,
    maybe_normalize,
)
from twotower.towers.features.bag import POOLINGS, BagEncoder
from twotower.towers.features.categorical import EmbeddingEncoder, OneHotEncoder
from twotower.towers.features.dcn import CrossNetwork
from twotower.towers.features.numeric import (
    BucketEncoder,
    FloatEncoder,
    FloatSeqEncoder,
    finite,
)
from twotower.towers.features.text import TextEncoder

FLOAT_TRANSFORMS = ("standardize", "log1p", "bucketize")
NETWORKS = ("mlp", "dcn", "none")


class FeatureTower(nn.Module):
    """Encode each selected feature, concatenate, run a network -> ``(B, output_dim)``.

    The ID embedding (the feature of kind ``id``) is one feature among others: with it alone
    and ``network=none`` the tower is a matrix-factorisation factor; without it
    (``use_id=false``) the tower encodes entities it never saw in training (cold start).
    Every option is checked when the tower is built.

    Args:
        features: The schema of the side's features (given by the data module).
        output_dim: Size of the output vector.
        normalize: L2-normalise the output.
        use_id: Include the entity's ID embedding.
        id_dim: Size of the ID embedding and of the history's item embeddings.
        include: Names of the non-id features to use; ``None`` for all of them.
        exclude: Names of non-id features to leave out.
        embedding_dim: Size of token, token_seq, bucket and float_seq encodings: an integer,
            or ``auto`` for ``min(max_embedding_dim, round(6 * cardinality ** 0.25))`` (a
            float_seq counts its width, a bucketised float its buckets + 1).
        max_embedding_dim: The cap of ``auto``.
        dims: Per-feature sizes, ``{name: size}``, overriding ``embedding_dim`` (and
            ``one_hot_max``: a feature named here is embedded).
        one_hot_max: Token features with a cardinality up to this are one-hot vectors.
        float_transform: ``standardize`` (value and missing flag), ``log1p`` (log1p, then
            standardize; training values must be >= 0) or ``bucketize`` (embedding of the
            quantile bucket) for float features.
        float_transforms: Per-feature transforms, ``{name: transform}``.
        buckets: Number of quantile buckets of ``bucketize``.
        history_pooling: ``mean``, ``sum`` or ``max`` of the history's item embeddings.
        text_hidden: Hidden and output size of the DSSM tower that encodes a text feature.
        network: ``mlp`` (``hidden_sizes`` layers, then a linear output layer), ``dcn`` (a
            DCN-v2 cross network, then the same) or ``none`` (the concatenation is the
            output; its size must equal ``output_dim``).
        hidden_sizes: Hidden layer sizes; empty for a single linear layer.
        activation: ``relu``, ``tanh`` or ``gelu`` after every hidden layer.
        dropout: Dropout on the input of every dense layer after the first.
        cross_layers: Number of DCN-v2 cross layers.
        cross_rank: Rank of the cross layers' matrices; ``None`` for full rank.

    Shapes:
        batch ``{name: tensor}`` laid out as in :mod:`twotower.data.components.features` ->
        ``(B, output_dim)``.

    References:
        Covington et al. 2016, "Deep Neural Networks for YouTube Recommendations", RecSys.
        Wang et al. 2021, "DCN V2: Improved Deep & Cross Network and Practical Lessons for
        Web-scale Learning to Rank Systems", WWW.

    Example:
        >>> ages = torch.tensor([20.0, 30.0, 40.0])
        >>> features = [Feature("user_id", "id", 4), Feature("age", "float", train_values=ages)]
        >>> tower = FeatureTower(features, output_dim=8, hidden_sizes=[16])
        >>> batch = {"user_id": torch.tensor([1, 3]), "age": torch.tensor([25.0, float("nan")])}
        >>> tower(batch).shape
        torch.Size([2, 8])
    """

    input_kind = "features"

    def __init__(
        self,
        features: Sequence[Feature],
        *,
        output_dim: int = 64,
        normalize: bool = True,
        use_id: bool = True,
        id_dim: int = 64,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
        embedding_dim: int | str = 16,
        max_embedding_dim: int = 64,
        dims: Mapping[str, int] | None = None,
        one_hot_max: int = 0,
        float_transform: str = "standardize",
        float_transforms: Mapping[str, str] | None = None,
        buckets: int = 10,
        history_pooling: str = "mean",
        text_hidden: int = 64,
        network: str = "mlp",
        hidden_sizes: Sequence[int] = (256,),
        activation: str = "relu",
        dropout: float = 0.0,
        cross_layers: int = 2,
        cross_rank: int | None = None,
    ):
        super().__init__()
        # hydra.utils.instantiate turns the Feature dataclasses passed to it into DictConfigs.
        features = [OmegaConf.to_object(f) if isinstance(f, DictConfig) else f for f in features]
        check_size("output_dim", output_dim)
        check_flag("normalize", normalize)
        check_flag("use_id", use_id)
        check_size("id_dim", id_dim)
        auto = embedding_dim == "auto"
        ok = auto or (is_int(embedding_dim) and embedding_dim >= 1)
        check(ok, "embedding_dim", embedding_dim, "must be an integer >= 1 or auto")
        check_size("max_embedding_dim", max_embedding_dim)
        check_size("one_hot_max", one_hot_max, minimum=0)
        check_choice("float_transform", float_transform, FLOAT_TRANSFORMS)
        check_size("buckets", buckets, minimum=2)
        check_choice("history_pooling", history_pooling, POOLINGS)
        check_size("text_hidden", text_hidden)
        check_choice("network", network, NETWORKS)
        ok = isinstance(hidden_sizes, Sequence) and not isinstance(hidden_sizes, str)
        ok = ok and all(is_int(h) and h > 0 for h in hidden_sizes)
        check(ok, "hidden_sizes", hidden_sizes, "must be a list of positive integers (or [])")
        check_activation("activation", activation)
        check_dropout("dropout", dropout)
        check_size("cross_layers", cross_layers)
        if cross_rank is not None:
            check_size("cross_rank", cross_rank)

        transforms = {f.name: float_transform for f in features if f.kind == "float"}
        for name, transform in check_mapping(
            "float_transforms", float_transforms, list(transforms)
        ):
            check_choice(f"float_transforms.{name}", transform, FLOAT_TRANSFORMS)
            transforms[name] = transform
        sized = [
            f.name
            for f in features
            if f.kind in ("token", "token_seq", "float_seq")
            or (f.kind == "float" and transforms[f.name] == "bucketize")
        ]
        dims = dict(check_mapping("dims", dims, sized))
        for name, dim in dims.items():
            check_size(f"dims.{name}", dim)
        selected = select(features, use_id, include, exclude)
        for f in selected:
            values = finite(f.train_values)
            if f.kind == "float" and transforms[f.name] == "log1p" and values.numel():
                low = values.min().item()
                per_feature = f.name in (float_transforms or {})
                check(
                    low >= 0,
                    f"float_transforms.{f.name}" if per_feature else "float_transform",
                    "log1p",
                    f"feature {f.name!r} has negative training values (min {low:g}); "
                    "use standardize or bucketize for it",
                )

        def size(f: Feature, cardinality: int) -> int:
            if f.name in dims:
                return dims[f.name]
            if auto:  # the TensorFlow feature-column rule of thumb
                return min(max_embedding_dim, max(1, round(6 * cardinality**0.25)))
            return embedding_dim

        def encoder(f: Feature) -> nn.Module:
            if f.kind == "id":
                return EmbeddingEncoder(f.cardinality, id_dim)
            if f.kind == "token":
                if f.cardinality <= one_hot_max and f.name not in dims:
                    return OneHotEncoder(f.cardinality)
                return EmbeddingEncoder(f.cardinality, size(f, f.cardinality))
            if f.kind == "token_seq":
                return BagEncoder(f.cardinality, size(f, f.cardinality), "mean")
            if f.kind == "history":
                return BagEncoder(f.cardinality, id_dim, history_pooling)
            if f.kind == "text":
                return TextEncoder(f.cardinality, text_hidden)
            if f.kind == "float_seq":
                return FloatSeqEncoder(f.train_values, f.width, size(f, f.width))
            if transforms[f.name] == "bucketize":
                return BucketEncoder(f.train_values, buckets, size(f, buckets + 1))
            return FloatEncoder(f.train_values, log=transforms[f.name] == "log1p")

        self.names = [f.name for f in selected]
        self.encoders = nn.ModuleList(encoder(f) for f in selected)
        self.output_dim, self.normalize = output_dim, normalize
        input_dim = sum(e.output_dim for e in self.encoders)

        if network == "none":
            named = zip(self.names, self.encoders, strict=True)
            parts = ", ".join(f"{name} {e.output_dim}" for name, e in named)
            check(
                input_dim == output_dim,
                "output_dim",
                output_dim,
                f"must equal the size of the concatenated features with network=none: "
                f"{input_dim} ({parts})",
            )
            self.network = nn.Identity()
            return
        sizes = [input_dim, *hidden_sizes]
        self.network = nn.Sequential(
            *([CrossNetwork(input_dim, cross_layers, cross_rank)] if network == "dcn" else []),
            *(
                dense(i, o, activation, dropout if k else 0.0)
                for k, (i, o) in enumerate(pairwise(sizes))
            ),
            dense(sizes[-1], output_dim, None, dropout if hidden_sizes else 0.0),
        )

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        named = zip(self.names, self.encoders, strict=True)
        parts = [encoder(batch[name]) for name, encoder in named]
        x = torch.cat(parts, dim=-1)  # (B, sum of the encoders' output_dim)
        return maybe_normalize(self.network(x), self.normalize)  # (B, output_dim)


def check_mapping(key: str, value: Any, allowed: Sequence[str]) -> list[tuple[str, Any]]:
    """The items of ``value`` (a mapping or None); ConfigError unless every key is allowed."""
    if value is None:
        return []
    check(isinstance(value, Mapping), key, value, "must be a mapping {feature name: value}")
    for name in value:
        check(
            name in allowed,
            key,
            dict(value),
            f"{name!r} is not one of the features it applies to: {', '.join(allowed) or 'none'}",
        )
    return list(value.items())


def check_names(key: str, value: Any, features: Sequence[Feature]) -> list[str]:
    """``value`` as a list; ConfigError unless it is a list of names of non-id features."""
    ok = isinstance(value, Sequence) and not isinstance(value, str)
    ok = ok and all(isinstance(v, str) for v in value)
    check(ok, key, value, "must be a list of feature names")
    value = list(value)
    available = [f.name for f in features if f.kind != "id"]
    ids = [f.name for f in features if f.kind == "id"]
    for name in value:
        if name in ids:
            raise ConfigError(key, value, f"{name!r} is the id feature, chosen by use_id")
        check(
            name in available,
            key,
            value,
            f"unknown feature {name!r}; available: {', '.join(available) or 'none'}",
        )
    return value


def select(features: Sequence[Feature], use_id: bool, include: Any, exclude: Any) -> list[Feature]:
    """The features the tower encodes, in the schema's order."""
    exclude = check_names("exclude", exclude, features)
    names = None if include is None else check_names("include", include, features)
    names_all = ", ".join(f.name for f in features) or "none"
    check(
        not use_id or any(f.kind == "id" for f in features),
        "use_id",
        use_id,
        f"no feature of kind id among {names_all}; set use_id: false",
    )
    selected = [
        f
        for f in features
        if (f.kind == "id" and use_id)
        or (f.kind != "id" and (names is None or f.name in names) and f.name not in exclude)
    ]
    check(
        bool(selected),
        "include",
        names,
        f"selects no feature (use_id={use_id}, exclude={exclude}); available: {names_all}",
    )
    return selected
