"""RecBoleDataModule: users, items and interactions from RecBole atomic files.

Reads ``{dir}/{name}.inter`` (or the benchmark files ``{name}.{train,valid,test}.inter``) and
the optional ``{name}.user`` / ``{name}.item``; users are the queries and items the
documents, each given to its tower as a
:class:`~twotower.data.components.features.FeatureStore`. Evaluation follows RecBole's full
ranking: every item is ranked for each judged user, except the items the user interacted
with in training (and in validation, when testing).

    make data-ml100k && python -m twotower.train data=recbole
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor

from twotower.data.base import Catalogue, EvalSplit, RetrievalDataModule, check_int
from twotower.data.components.features import Feature, FeatureStore
from twotower.data.components.interactions import InteractionDataset
from twotower.data.components.splits import (
    PARTS,
    SPLITS,
    benchmark_files,
    cold_item_split,
    loo_split,
    random_split,
    temporal_split,
)
from twotower.data.components.tokenizers import Tokenizer
from twotower.data.components.tokens import TokenStore
from twotower.data.readers.atomic import AtomicTable, read_atomic
from twotower.errors import ConfigError, DataError, check, check_choice

log = logging.getLogger("twotower.data")

MISSING = ("error", "fill")
TEXT_TYPES = ("token", "token_seq")


class Interactions(NamedTuple):
    """Every kept interaction: ``(N,)`` tensors."""

    user: Tensor  # long, user index
    item: Tensor  # long, item index
    time: Tensor | None  # float64, the time field (None without one)
    part: Tensor  # long, 0 train, 1 validation, 2 test


class Side(NamedTuple):
    """One side (users or items) while it is being built."""

    what: str  # "user" / "item"
    field: str  # its id field
    ids: list[str]  # index -> id
    table: AtomicTable | None  # the .user / .item file
    row: Tensor  # (N,) long, each entity's row in the table, -1 if absent
    trained: Tensor  # (N,) bool, the entity has a training interaction


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class RecBoleDataModule(RetrievalDataModule):
    """Users (queries) and items (documents) with their features, from RecBole atomic files.

    Args:
        tokenizer: encodes ``text_fields`` (fitted on the training entities' texts unless
            already fitted); unused without them.
        dir: the directory of the atomic files.
        name: the files' stem: ``{name}.inter``, ``{name}.user``, ``{name}.item``.
        user_field, item_field: the id fields (type ``token``).
        time_field: the time field of ``.inter`` (type ``float``); ``None``: file order is time.
        split: ``random`` (RecBole's default), ``loo``, ``temporal`` or ``cold_items`` (see
            :mod:`twotower.data.components.splits`); ignored when benchmark files exist.
        ratios: train / validation / test shares of ``random`` and ``temporal``.
        split_seed: the seed of ``random`` (RecBole's 2020) and ``cold_items``.
        cold_share: the share of items held out by ``cold_items``.
        history: give users a ``history`` feature: their training items, most recent first.
        max_history: the most recent items kept in ``history``.
        text_fields: token / token_seq fields of ``.user`` / ``.item`` also encoded by the
            tokenizer as a ``<field>_text`` feature (a title as letter trigrams).
        missing: an id of ``.inter`` absent from ``.user`` / ``.item``: ``error``, or ``fill``
            (its features are missing; counted and logged).
        threshold: ``{field: minimum}``: keep the interactions with ``field >= minimum``.
        field_separator, seq_separator: RecBole's separators of fields and of sequence values.
        batch_size, eval_batch_size, shuffle_train, unique_in_batch, num_workers, seed,
            eval_rows: see
            :class:`~twotower.data.base.RetrievalDataModule`.

    After :meth:`setup`: ``users`` and ``corpus`` (the items) are feature stores, ``user_ids``
    and ``doc_ids`` the ids in index order, ``doc_texts`` a display text per item,
    ``interactions`` every kept interaction, ``datasets`` and ``eval_splits`` per split.
    """

    input_kind = "features"

    def __init__(
        self,
        tokenizer: Tokenizer,
        *,
        dir: str = "data/ml-100k",
        name: str = "ml-100k",
        user_field: str = "user_id",
        item_field: str = "item_id",
        time_field: str | None = "timestamp",
        split: str = "random",
        ratios: Sequence[float] = (0.8, 0.1, 0.1),
        split_seed: int = 2020,
        cold_share: float = 0.2,
        history: bool = True,
        max_history: int = 256,
        text_fields: Sequence[str] = (),
        missing: str = "error",
        threshold: Mapping[str, float] | None = None,
        field_separator: str = "\t",
        seq_separator: str = " ",
        batch_size: int = 1024,
        eval_batch_size: int = 1024,
        shuffle_train: bool = True,
        unique_in_batch: str | None = None,
        num_workers: int = 0,
        seed: int = 0,
        eval_rows: bool = True,
    ):
        super().__init__(
            tokenizer,
            format="pairs",
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            shuffle_train=shuffle_train,
            unique_in_batch=unique_in_batch,
            num_workers=num_workers,
            seed=seed,
            eval_rows=eval_rows,
        )
        strings = {
            "dir": dir,
            "name": name,
            "user_field": user_field,
            "item_field": item_field,
            "field_separator": field_separator,
            "seq_separator": seq_separator,
        }
        for key, value in strings.items():
            check(isinstance(value, str) and value != "", key, value, "must be a non-empty string")
        check(item_field != user_field, "item_field", item_field, "must differ from user_field")
        ok = time_field is None or (isinstance(time_field, str) and time_field != "")
        check(ok, "time_field", time_field, "must be a field name or null (file order)")
        check_choice("split", split, SPLITS)
        ok = isinstance(ratios, Sequence) and not isinstance(ratios, str) and len(ratios) == 3
        ok = ok and all(_is_number(r) and r > 0 for r in ratios)
        check(ok, "ratios", ratios, "must be 3 numbers > 0: train, validation, test")
        check(isinstance(split_seed, int), "split_seed", split_seed, "must be an integer")
        ok = _is_number(cold_share) and 0 < cold_share < 1
        check(ok, "cold_share", cold_share, "must be a number between 0 and 1 (exclusive)")
        check(isinstance(history, bool), "history", history, "must be true or false")
        check_int("max_history", max_history, 1)
        ok = isinstance(text_fields, Sequence) and not isinstance(text_fields, str)
        ok = ok and all(isinstance(f, str) and f for f in text_fields)
        check(ok, "text_fields", text_fields, "must be a list of field names")
        check_choice("missing", missing, MISSING)
        ok = threshold is None or (
            isinstance(threshold, Mapping)
            and all(isinstance(k, str) and _is_number(v) for k, v in threshold.items())
        )
        check(ok, "threshold", threshold, "must be null or {field: minimum}, e.g. {rating: 4}")
        self.dir, self.name = Path(dir), name
        self.user_field, self.item_field, self.time_field = user_field, item_field, time_field
        self.split, self.ratios, self.split_seed = split, [float(r) for r in ratios], split_seed
        self.cold_share, self.history, self.max_history = cold_share, history, max_history
        self.text_fields, self.missing = list(text_fields), missing
        self.threshold = dict(threshold or {})
        self.field_separator, self.seq_separator = field_separator, seq_separator
        self.users: FeatureStore | None = None
        self.corpus: FeatureStore | None = None
        self.user_ids: list[str] = []
        self.interactions: Interactions | None = None
        self.benchmark = False  # the split came from RecBole's benchmark files

    @property
    def vocab_size(self) -> int:
        """The tokenizer's size once fitted (only ``text_fields`` use it), else 0."""
        return self.tokenizer.vocab_size if self.tokenizer.is_fitted else 0

    def tower_inputs(self, side: str) -> dict[str, Any]:
        """``{"features": [Feature, ...]}``: the schema the ``side`` tower is built for."""
        check_choice("side", side, ("query", "doc"))
        store = self.users if side == "query" else self.corpus
        if store is None:
            raise RuntimeError("no features yet: call setup() first")
        return {"features": store.features}

    def catalogue(self) -> Catalogue:
        """The items with their training counts, and the training (user, item) pairs."""
        self._require("train")
        rows = self.datasets["train"]
        users = torch.arange(len(self.users))  # the user id is the user's row
        return Catalogue(self.corpus, rows.user, rows.item, self.users, users)

    # -- reading -----------------------------------------------------------------------------
    def _read(self, path: Path) -> AtomicTable:
        return read_atomic(path, self.field_separator, self.seq_separator)

    def _inter_tables(self) -> tuple[list[AtomicTable], bool]:
        """The interaction files, and whether they are RecBole's benchmark files."""
        paths = benchmark_files(self.dir, self.name)
        if paths is not None:
            names = ", ".join(p.name for p in paths)
            log.info("split: RecBole benchmark files %s (data.split is ignored)", names)
            return [self._read(p) for p in paths], True
        path = self.dir / f"{self.name}.inter"
        if not path.is_file():
            hint = "run `make data-ml100k`, or set " if self.name == "ml-100k" else "set "
            problem = f"no such file: {hint}data.dir and data.name ({{dir}}/{{name}}.inter)"
            raise DataError(path, None, None, problem)
        return [self._read(path)], False

    def _check_inter(self, table: AtomicTable) -> tuple[list[str], list[str], Tensor | None]:
        """Users, items and times of ``table``; every row must have a user and an item."""
        for name in (self.user_field, self.item_field):
            table.require(name, ("token",), "set data.user_field / data.item_field")
            empty = next((r for r, v in enumerate(table[name]) if not v.strip()), None)
            if empty is not None:
                raise table.error(empty, name, "missing value: every interaction needs one")
        time = None
        if self.time_field is not None:
            table.require(self.time_field, ("float",), "set data.time_field (null: file order)")
            time = table[self.time_field]
            bad = torch.isnan(time).nonzero()
            if len(bad):
                problem = "missing value: the time field orders the interactions"
                raise table.error(int(bad[0]), self.time_field, problem)
        return table[self.user_field], table[self.item_field], time

    def _kept(self, table: AtomicTable) -> Tensor:
        """``(N,)`` bool: the rows meeting ``threshold``."""
        keep = torch.ones(len(table), dtype=torch.bool)
        for name, minimum in self.threshold.items():
            table.require(name, ("float",), "data.threshold filters on it")
            keep &= table[name] >= minimum  # NaN (missing) fails
        return keep

    def _side_table(self, what: str, field: str) -> AtomicTable | None:
        """The optional ``.user`` / ``.item`` file, its ids unique and present."""
        path = self.dir / f"{self.name}.{what}"
        if not path.is_file():
            return None
        table = self._read(path)
        table.require(field, ("token",), f"it identifies the {what}s")
        first: dict[str, int] = {}
        for row, value in enumerate(table[field]):
            if not value.strip():
                raise table.error(row, field, f"missing value: every {what} needs an id")
            if first.setdefault(value, row) != row:
                line = int(table.lines[first[value]])
                raise table.error(row, field, f"duplicate id {value!r} (first on line {line})")
        clash = {"history"} | {f"{f}_text" for f in self.text_fields}
        for name in table.types:
            if name in clash and name != field:
                raise table.error(None, name, "clashes with a feature the data module adds")
        return table

    def _check_text_fields(self, tables: list[AtomicTable | None]) -> None:
        """Each of ``text_fields`` must be a token / token_seq field of .user / .item, not an id."""
        tables = [t for t in tables if t is not None]
        ids = (self.user_field, self.item_field)
        options = sorted(
            {n for t in tables for n, k in t.types.items() if k in TEXT_TYPES and n not in ids}
        )
        for name in self.text_fields:
            if name not in options:
                expected = "must name token or token_seq fields of .user / .item: "
                raise ConfigError("text_fields", name, expected + (", ".join(options) or "none"))

    def _check_missing(
        self, what: str, table: AtomicTable, side: AtomicTable | None, ids: list[str], keep
    ) -> None:
        """Ids of kept interactions absent from the side file: an error, or counted."""
        if side is None:
            return
        field = self.user_field if what == "user" else self.item_field
        known = set(side[field])
        absent = [r for r, v in enumerate(ids) if v not in known and keep[r]]
        if not absent:
            return
        first = absent[0]
        if self.missing == "error":
            problem = (
                f"{what} {ids[first]!r} is not in {side.path.name} "
                "(data.missing=fill gives it missing features)"
            )
            raise table.error(first, field, problem)
        distinct = len({ids[r] for r in absent})
        log.warning(
            "%d interactions of %d %ss of %s are not in %s (first: %r on line %d); "
            "their features are missing (data.missing=fill)",
            len(absent),
            distinct,
            what,
            table.path.name,
            side.path.name,
            ids[first],
            int(table.lines[first]),
        )

    # -- preparing ---------------------------------------------------------------------------
    def prepare(self) -> None:
        """Read, split, build both feature stores, the rows and the judged users."""
        tables, self.benchmark = self._inter_tables()
        user_table = self._side_table("user", self.user_field)
        item_table = self._side_table("item", self.item_field)
        self._check_text_fields([user_table, item_table])
        users, items, time, file_part = self._read_interactions(tables, user_table, item_table)
        side_users = user_table[self.user_field] if user_table is not None else []
        side_items = item_table[self.item_field] if item_table is not None else []
        self.user_ids = list(dict.fromkeys(users + side_users))  # first appearance
        self.doc_ids = list(dict.fromkeys(items + side_items))
        user_index = {u: k for k, u in enumerate(self.user_ids)}
        item_index = {d: k for k, d in enumerate(self.doc_ids)}
        user = torch.tensor([user_index[u] for u in users], dtype=torch.long)  # (N,)
        item = torch.tensor([item_index[d] for d in items], dtype=torch.long)  # (N,)
        part = file_part if self.benchmark else self._split(user, item, time)  # (N,)
        for k, name in enumerate(PARTS):
            if not bool((part == k).any()):
                path = tables[k if self.benchmark else 0].path
                raise DataError(path, None, None, f"the split leaves no {name} interactions")
        self.interactions = Interactions(user, item, time, part)
        self._build_stores(user_table, item_table)
        for k, name in enumerate(PARTS):
            rows = part == k
            self.datasets[name] = InteractionDataset(
                self.users, self.corpus, user[rows], item[rows]
            )
            if k:
                self.eval_splits[name] = self._eval_split(k)
        self._log_summary()

    def _read_interactions(
        self,
        tables: list[AtomicTable],
        user_table: AtomicTable | None,
        item_table: AtomicTable | None,
    ) -> tuple[list[str], list[str], Tensor | None, Tensor]:
        """The kept interactions' users, items, times and file (0, 1, 2 for benchmark files)."""
        users: list[str] = []
        items: list[str] = []
        times: list[Tensor] = []
        files: list[Tensor] = []
        for k, table in enumerate(tables):
            u, i, t = self._check_inter(table)
            keep = self._kept(table)
            self._check_missing("user", table, user_table, u, keep)
            self._check_missing("item", table, item_table, i, keep)
            rows = keep.nonzero().flatten().tolist()
            users += [u[r] for r in rows]
            items += [i[r] for r in rows]
            if t is not None:
                times.append(t[keep])
            files.append(torch.full((len(rows),), k))
        if self.threshold:
            rule = ", ".join(f"{k} >= {v:g}" for k, v in self.threshold.items())
            n_read = sum(len(t) for t in tables)
            log.info("threshold %s: kept %d of %d interactions", rule, len(users), n_read)
        return users, items, torch.cat(times) if times else None, torch.cat(files)

    def _build_stores(self, user_table: AtomicTable | None, item_table: AtomicTable | None):
        """``users``, ``corpus`` (the items) and ``doc_texts``."""
        user, item, time, part = self.interactions
        train = part == 0
        user_side = _side("user", self.user_field, self.user_ids, user_table, user[train])
        item_side = _side("item", self.item_field, self.doc_ids, item_table, item[train])
        user_texts, item_texts = self._texts(user_side), self._texts(item_side)
        self._fit_tokenizer([(user_texts, user_side.trained), (item_texts, item_side.trained)])
        user_features, user_tensors = self._features(user_side, user_texts)
        if self.history:
            train_time = None if time is None else time[train]
            feature, tensor = self._history(user[train], item[train], train_time)
            user_features.append(feature)
            user_tensors[feature.name] = tensor
        self.users = FeatureStore(user_features, user_tensors)
        self.corpus = FeatureStore(*self._features(item_side, item_texts))
        self.doc_texts = _display_texts(item_side, item_texts)

    def _split(self, user: Tensor, item: Tensor, time: Tensor | None) -> Tensor:
        if self.split == "random":
            return random_split(user, self.ratios, self.split_seed)
        if self.split == "cold_items":
            return cold_item_split(item, self.cold_share, self.split_seed)
        if time is None:
            log.info("split=%s orders by file position (data.time_field is null)", self.split)
            time = torch.arange(len(user), dtype=torch.float64)
        if self.split == "temporal":
            return temporal_split(time, self.ratios)
        part, short = loo_split(user, time)
        if short:
            log.info("split=loo: %d users with fewer than 3 interactions kept in training", short)
        return part

    # -- features ----------------------------------------------------------------------------
    def _texts(self, side: Side) -> dict[str, list[str]]:
        """``{field: a text per entity}`` for the ``text_fields`` of this side's file."""
        texts = {}
        types = side.table.types if side.table is not None else {}
        for name in self.text_fields:
            if types.get(name) in TEXT_TYPES:
                values = side.table[name]
                if types[name] == "token_seq":
                    values = [" ".join(v) for v in values]
                texts[name] = [values[r] if r >= 0 else "" for r in side.row.tolist()]
        return texts

    def _fit_tokenizer(self, sides: list[tuple[dict[str, list[str]], Tensor]]) -> None:
        """Fit on the texts of entities with a training interaction, unless already fitted."""
        if self.tokenizer.is_fitted or not any(texts for texts, _ in sides):
            return
        trained = [
            text
            for texts, seen in sides
            for column in texts.values()
            for text, keep in zip(column, seen.tolist(), strict=True)
            if keep
        ]
        self.tokenizer.fit(trained)

    def _features(self, side: Side, texts: dict[str, list[str]]) -> tuple[list[Feature], dict]:
        """The id feature, one feature per column of the side file, and the text features."""
        n = len(side.ids)
        features = [Feature(side.field, "id", n + 1)]
        tensors: dict[str, Tensor | TokenStore] = {side.field: torch.arange(1, n + 1)}
        if side.table is not None:
            for name, kind in side.table.types.items():
                if name != side.field:
                    feature, tensor = _column_feature(side, name, kind)
                    features.append(feature)
                    tensors[name] = tensor
        for name, column in texts.items():
            store = self.encode(column, self.max_doc_words, f"{side.what} {name}")
            features.append(Feature(f"{name}_text", "text", self.tokenizer.vocab_size))
            tensors[f"{name}_text"] = store
        return features, tensors

    def _history(self, user: Tensor, item: Tensor, time: Tensor | None) -> tuple[Feature, Tensor]:
        """Each user's training items (index + 1), most recent first: ``(users, H)``.

        Args:
            user, item, time: ``(P,)`` the training interactions (``time=None``: file order).
        """
        order = torch.arange(len(user)).flip(0)  # later lines first: the latest among ties
        if time is not None:
            order = order[torch.sort(time[order], descending=True, stable=True).indices]
        order = order[torch.sort(user[order], stable=True).indices]  # (P,) by user, recent first
        grouped = user[order]
        sizes = torch.bincount(grouped, minlength=len(self.user_ids))  # (users,)
        rank = torch.arange(len(order)) - (sizes.cumsum(0) - sizes)[grouped]
        width = max(1, min(self.max_history, int(sizes.max())))
        keep = rank < width
        history = torch.zeros(len(self.user_ids), width, dtype=torch.long)  # (users, H)
        history[grouped[keep], rank[keep]] = item[order][keep] + 1
        feature = Feature("history", "history", len(self.doc_ids) + 1, width=width)
        return feature, history

    # -- evaluation --------------------------------------------------------------------------
    def _eval_split(self, k: int) -> EvalSplit:
        """The users with an interaction in part ``k``; earlier parts' items are excluded."""
        user, item, _, part = self.interactions
        n_items = len(self.doc_ids)
        here = part == k
        judged = torch.unique(user[here])  # (Q,) sorted
        query_row = torch.full((len(self.user_ids),), -1, dtype=torch.long)
        query_row[judged] = torch.arange(len(judged))
        qrels: dict[str, dict[str, int]] = {}
        for u, i in zip(user[here].tolist(), item[here].tolist(), strict=True):
            qrels.setdefault(self.user_ids[u], {})[self.doc_ids[i]] = 1
        seen = (part < k) & (query_row[user] >= 0)  # RecBole masks train (+ valid) items
        pairs = torch.unique(query_row[user[seen]] * n_items + item[seen])  # (E,) deduplicated
        candidates = None
        if self.split == "cold_items" and not self.benchmark:
            candidates = torch.zeros(n_items, dtype=torch.bool)
            candidates[item[here]] = True
        return EvalSplit(
            queries=self.users.select(judged),
            query_ids=[self.user_ids[u] for u in judged.tolist()],
            qrels=qrels,
            doc_ids=self.doc_ids,
            exclude=(pairs // n_items, pairs % n_items),
            candidates=candidates,
        )

    def _log_summary(self) -> None:
        part = self.interactions.part
        counts = "/".join(str(int((part == k).sum())) for k in range(len(PARTS)))
        log.info(
            "RecBole %s: %d users, %d items; interactions train/val/test %s (%s); "
            "user features %s; item features %s",
            self.name,
            len(self.user_ids),
            len(self.doc_ids),
            counts,
            "benchmark files" if self.benchmark else f"split={self.split}",
            ", ".join(f"{f.name}:{f.kind}" for f in self.users.features),
            ", ".join(f"{f.name}:{f.kind}" for f in self.corpus.features),
        )


def _side(
    what: str, field: str, ids: list[str], table: AtomicTable | None, trained: Tensor
) -> Side:
    """A :class:`Side` of entities ``ids``; ``trained`` ``(P,)`` indexes those in training."""
    row = {v: r for r, v in enumerate(table[field])} if table is not None else {}
    rows = torch.tensor([row.get(i, -1) for i in ids], dtype=torch.long)
    seen = torch.zeros(len(ids), dtype=torch.bool)
    seen[trained] = True
    return Side(what, field, ids, table, rows, seen)


def _pad(sequences: list[list], fill: float, dtype: torch.dtype) -> Tensor:
    """``(R, L)`` left-aligned ``sequences``, ``fill`` after each (``L`` >= 1)."""
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    width = max(1, int(lengths.max()) if len(lengths) else 0)
    padded = torch.full((len(sequences), width), fill, dtype=dtype)
    flat = torch.tensor([v for s in sequences for v in s], dtype=dtype)
    row = torch.repeat_interleave(torch.arange(len(sequences)), lengths)
    col = torch.arange(len(flat)) - torch.repeat_interleave(lengths.cumsum(0) - lengths, lengths)
    padded[row, col] = flat
    return padded


def _gather(column: Tensor, row: Tensor, fill: float) -> Tensor:
    """Rows ``row`` of ``column``; ``fill`` where ``row`` is -1 (the entity is not in the file)."""
    pad = torch.full((1, *column.shape[1:]), fill, dtype=column.dtype)
    return torch.cat([pad, column])[row + 1]


def _column_feature(side: Side, name: str, kind: str) -> tuple[Feature, Tensor]:
    """One column of a ``.user`` / ``.item`` file as a feature of every entity."""
    values = side.table[name]
    if kind == "float":
        tensor = _gather(values.float(), side.row, math.nan)  # (N,)
        return Feature(name, kind, train_values=_finite(tensor[side.trained])), tensor
    if kind == "float_seq":
        tensor = _gather(_pad(values, math.nan, torch.float), side.row, math.nan)  # (N, L)
        train_values = _finite(tensor[side.trained])
        return Feature(name, kind, width=tensor.shape[1], train_values=train_values), tensor
    sequences = values if kind == "token_seq" else [[v] if v else [] for v in values]
    vocab = ("", *sorted({t for seq in sequences for t in seq}))
    ids = {t: k for k, t in enumerate(vocab)}
    padded = _pad([[ids[t] for t in seq] for seq in sequences], 0, torch.long)
    tensor = _gather(padded, side.row, 0)  # (N, L)
    if kind == "token":
        return Feature(name, kind, len(vocab), vocab=vocab), tensor[:, 0]  # (N,)
    return Feature(name, kind, len(vocab), width=tensor.shape[1], vocab=vocab), tensor


def _finite(values: Tensor) -> Tensor:
    values = values.flatten()
    return values[torch.isfinite(values)]


def _display_texts(side: Side, texts: dict[str, list[str]]) -> list[str]:
    """A text per item: its first text field, else its first token_seq field, else its id."""
    column = next(iter(texts.values()), None)
    if column is None and side.table is not None:
        name = next((n for n, k in side.table.types.items() if k == "token_seq"), None)
        if name is not None:
            values = side.table[name]
            column = [" ".join(values[r]) if r >= 0 else "" for r in side.row.tolist()]
    if column is None:
        return list(side.ids)
    return [text or i for text, i in zip(column, side.ids, strict=True)]
