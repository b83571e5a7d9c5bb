"""Tiny RecBole atomic datasets for tests (import from any test: ``from tests.recdata import ...``).

``write_atomic(tmp_path)`` writes ``toy.inter`` (12 users u1..u12, 120 interactions over items
i1..i19, distinct timestamps, lines not in time order), ``toy.user`` (age, gender, occupation
tokens and a float ``height``, missing for u3) and ``toy.item`` (20 items: i20 has no
interaction; title and genre token_seq, year token, a float ``price``, genre missing for i5).
``recbole_datamodule(tmp_path, **options)`` builds the data module over it.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import NamedTuple

# Interactions per user: sizes from 2 (too few for leave-one-out) to 17, 120 in all.
USER_SIZES = (2, 3, 5, 8, 10, 10, 11, 12, 13, 14, 15, 17)
N_ITEMS = 20  # the last item is only in the .item file
GENRES = ("Action", "Comedy", "Drama", "Horror", "Romance")
WORDS = ("Star", "Night", "Blue", "River", "Dark", "City", "Love", "Lost")


class Interaction(NamedTuple):
    user: str
    item: str
    rating: float
    timestamp: int


def write_lines(path: str | Path, lines: list[str]) -> Path:
    """Write ``lines`` (a header first) as an atomic file; returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


def inter_lines(rows: list[Interaction]) -> list[str]:
    """An .inter file's lines for ``rows``."""
    header = "user_id:token\titem_id:token\trating:float\ttimestamp:float"
    return [header, *(f"{r.user}\t{r.item}\t{r.rating:g}\t{r.timestamp}" for r in rows)]


def toy_interactions(seed: int = 0) -> list[Interaction]:
    """The toy interactions in file order (shuffled, so time order is not file order)."""
    rng = random.Random(seed)
    times = rng.sample(range(1_000_000, 2_000_000), sum(USER_SIZES))  # distinct
    rows = []
    for u, size in enumerate(USER_SIZES, 1):
        for i in rng.sample(range(1, N_ITEMS), size):  # distinct items per user
            rows.append(Interaction(f"u{u}", f"i{i}", float(rng.randint(1, 5)), times.pop()))
    rng.shuffle(rows)
    return rows


def write_atomic(
    directory: str | Path,
    name: str = "toy",
    seed: int = 0,
    user_file: bool = True,
    item_file: bool = True,
    benchmark: bool = False,
) -> list[Interaction]:
    """Write the toy dataset into ``directory``; returns its interactions in file order.

    Args:
        directory: where ``{name}.inter`` (and ``.user`` / ``.item``) go.
        name: the files' stem.
        seed: draws the interactions (sizes and files' shape stay the same).
        user_file, item_file: also write ``{name}.user`` / ``{name}.item``.
        benchmark: also write ``{name}.{train,valid,test}.inter``: per user, the latest
            interaction is test and the one before it validation (users with 3 or more).
    """
    directory = Path(directory)
    rows = toy_interactions(seed)
    write_lines(directory / f"{name}.inter", inter_lines(rows))
    if user_file:
        lines = ["user_id:token\tage:token\tgender:token\toccupation:token\theight:float"]
        for u in range(1, len(USER_SIZES) + 1):
            height = "" if u == 3 else f"{150 + 3 * u}"
            job = ("student", "engineer", "artist")[u % 3]
            lines.append(f"u{u}\t{20 + u % 4 * 10}\t{'MF'[u % 2]}\t{job}\t{height}")
        write_lines(directory / f"{name}.user", lines)
    if item_file:
        lines = ["item_id:token\ttitle:token_seq\tyear:token\tgenre:token_seq\tprice:float"]
        for i in range(1, N_ITEMS + 1):
            title = f"{WORDS[i % len(WORDS)]} {WORDS[(3 * i) % len(WORDS)]} {i}"
            genre = (
                "" if i == 5 else " ".join(GENRES[j % len(GENRES)] for j in range(i, i + i % 3 + 1))
            )
            lines.append(f"i{i}\t{title}\t{1980 + i % 7}\t{genre}\t{i / 2:g}")
        write_lines(directory / f"{name}.item", lines)
    if benchmark:
        parts = benchmark_parts(rows)
        for k, suffix in enumerate(("train", "valid", "test")):
            part = [r for r, p in zip(rows, parts, strict=True) if p == k]
            write_lines(directory / f"{name}.{suffix}.inter", inter_lines(part))
    return rows


def benchmark_parts(rows: list[Interaction]) -> list[int]:
    """The part (0 train, 1 valid, 2 test) of each row in the toy benchmark files."""
    by_user: dict[str, list[int]] = {}
    for k, r in enumerate(rows):
        by_user.setdefault(r.user, []).append(k)
    parts = [0] * len(rows)
    for ks in by_user.values():
        if len(ks) >= 3:
            ks = sorted(ks, key=lambda k: rows[k].timestamp)
            parts[ks[-1]], parts[ks[-2]] = 2, 1
    return parts


def recbole_datamodule(directory: str | Path, tokenizer=None, **options):
    """A :class:`RecBoleDataModule` over ``{directory}/toy.*`` with small batches."""
    from twotower.data.components.tokenizers import TrigramTokenizer
    from twotower.data.recbole import RecBoleDataModule

    options = {"name": "toy", "batch_size": 16, "eval_batch_size": 16, **options}
    return RecBoleDataModule(tokenizer or TrigramTokenizer(), dir=str(directory), **options)
