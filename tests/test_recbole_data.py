"""RecBole atomic files, the splits and RecBoleDataModule (toy data from tests/recdata.py)."""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import pytest
import torch

from tests.recdata import (
    USER_SIZES,
    Interaction,
    benchmark_parts,
    inter_lines,
    recbole_datamodule,
    toy_interactions,
    write_atomic,
    write_lines,
)
from twotower.data.components.splits import (
    benchmark_files,
    cold_item_split,
    loo_split,
    random_split,
    split_counts,
    temporal_split,
)
from twotower.data.components.tokens import TokenStore
from twotower.data.readers.atomic import read_atomic
from twotower.errors import ConfigError, DataError

ML100K = Path(__file__).resolve().parents[1] / "data" / "ml-100k"
INTER = "user_id:token\titem_id:token\trating:float\ttimestamp:float"


# -- atomic files ----------------------------------------------------------------------------
def test_read_atomic_types_missing_values_and_line_numbers(tmp_path):
    path = tmp_path / "t.item"
    header = "item_id:token\ttitle:token_seq\tprice:float\tscores:float_seq"
    text = f"\ufeff{header}\r\ni1\tBlue  Night\t2.5\t1 2.5\r\n\r\ni2\t\t\t\n"
    path.write_text(text, encoding="utf-8")
    table = read_atomic(path)
    assert table.types == {
        "item_id": "token",
        "title": "token_seq",
        "price": "float",
        "scores": "float_seq",
    }
    assert table["item_id"] == ["i1", "i2"]
    assert table["title"] == [["Blue", "Night"], []]  # empty pieces dropped; empty = missing
    assert table["price"][0] == 2.5 and math.isnan(table["price"][1])
    assert table["scores"] == [[1.0, 2.5], []]
    assert table.lines.tolist() == [2, 4]  # the blank line 3 is skipped, not renumbered


def test_read_atomic_separators(tmp_path):
    path = write_lines(tmp_path / "t.inter", ["u:token,tags:token_seq", "a,x|y"])
    table = read_atomic(path, field_separator=",", seq_separator="|")
    assert table["tags"] == [["x", "y"]]


@pytest.mark.parametrize(
    "content, where, problem",
    [
        ("user_id:tokn\titem_id:token\n1\t2\n", ":1: field 'user_id': ", "unknown type 'tokn'"),
        ("user_id\titem_id:token\n1\t2\n", ":1: field 'user_id': ", "no type: write user_id:token"),
        ("a:token\tb:float\ta:float\n", ":1: field 'a': ", "duplicate field name"),
        (f"{INTER}\n1\t2\t3\t4\n5\t6\t7\n", ":3: field 'timestamp': ", "wrong number of fields"),
        (f"{INTER}\n1\t2\t3\t4\t5\n", ":2: field 'timestamp': ", "wrong number of fields"),
        (f"{INTER}\n1\t2\t3\t4\n1\t2\tgood\t4\n", ":3: field 'rating': ", "not a number: 'good'"),
        ("a:token\tv:float_seq\nx\t1 y\n", ":2: field 'v': ", "not a number: 'y' (in '1 y')"),
        # One field: a row with two was once cut to its first, silently.
        ("item_id:token\ni1\ni2\tx\n", ":3: field 'item_id': ", "wrong number of fields"),
        # A name with a control character is escaped, so the message stays one line.
        ("x\x85y:token\nx\ty\n", ":2: field 'x\\x85y': ", "wrong number of fields"),
        ("user_id:token\ritem_id:token\r1\t2\r", ":1: field 'user_id': ", "unknown type 'token\\r"),
    ],
)
def test_read_atomic_bad_input_names_file_line_and_field(tmp_path, content, where, problem):
    path = tmp_path / "bad.inter"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_atomic(path)
    assert str(err.value).startswith(f"{path}{where}{problem}")


def test_read_atomic_unknown_type_lists_the_valid_ones(tmp_path):
    path = write_lines(tmp_path / "t.inter", ["a:int"])
    with pytest.raises(DataError, match="expected token, token_seq, float, float_seq"):
        read_atomic(path)


def test_read_atomic_not_utf8_names_line_column_and_field(tmp_path):
    path = tmp_path / "bad.inter"
    path.write_bytes(f"{INTER}\n1\t2\t3\t4\n1\tx\xff\t3\t4\n".encode("latin-1"))
    with pytest.raises(DataError) as err:
        read_atomic(path)
    assert str(err.value) == f"{path}:3: field 'item_id': not UTF-8 (byte 0xff at column 4)"


@pytest.mark.parametrize("content", [b"", b"\n\n"])
def test_read_atomic_empty_or_missing_file(tmp_path, content):
    path = tmp_path / "empty.inter"
    path.write_bytes(content)
    with pytest.raises(DataError, match=f"^{re.escape(str(path))}: empty file"):
        read_atomic(path)
    with pytest.raises(DataError, match="no such file"):
        read_atomic(tmp_path / "absent.inter")


# -- splits ----------------------------------------------------------------------------------
def test_split_counts_follow_recbole_rule():
    assert split_counts(10, [0.8, 0.1, 0.1]) == [8, 1, 1]
    assert split_counts(3, [0.8, 0.1, 0.1]) == [1, 1, 1]
    assert split_counts(2, [0.8, 0.1, 0.1]) == [1, 0, 1]  # the first keeps one: stop
    assert split_counts(15, [8, 1, 1]) == [13, 1, 1]  # 1.5 rounds down; only < 1 rounds up
    assert all(sum(split_counts(n, [0.7, 0.2, 0.1])) == n for n in range(50))


def test_random_split_is_recbole_shuffle_then_per_user_counts():
    ids: dict[str, int] = {}
    user = torch.tensor([ids.setdefault(r.user, len(ids)) for r in toy_interactions()])
    part = random_split(user, [0.8, 0.1, 0.1], seed=2020)
    for u in user.unique():
        mine = user == u
        counts = torch.bincount(part[mine], minlength=3).tolist()
        assert counts == split_counts(int(mine.sum()), [0.8, 0.1, 0.1])
    # Within a user, the shuffled order runs train, then validation, then test.
    perm = torch.randperm(len(user), generator=torch.Generator().manual_seed(2020))
    for u in user.unique():
        in_order = part[perm][user[perm] == u]
        assert torch.equal(in_order, in_order.sort().values)
    assert torch.equal(part, random_split(user, [0.8, 0.1, 0.1], seed=2020))
    assert not torch.equal(part, random_split(user, [0.8, 0.1, 0.1], seed=1))


def test_loo_split_takes_latest_as_test_then_validation():
    user = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 2])
    time = torch.tensor([5.0, 1.0, 9.0, 3.0, 1.0, 2.0, 7.0, 7.0, 1.0], dtype=torch.float64)
    part, short = loo_split(user, time)
    # user 0: 9 test, 5 validation; user 1 has 2 interactions: all train; user 2: a tie at 7,
    # the later line is the latest.
    assert part.tolist() == [1, 0, 2, 0, 0, 0, 1, 2, 0]
    assert short == 1
    assert loo_split(user, None)[0].tolist() == [0, 0, 1, 2, 0, 0, 0, 1, 2]  # file order


def test_temporal_split_orders_all_interactions_by_time():
    time = torch.tensor([4.0, 2.0, 9.0, 2.0, 7.0, 1.0, 8.0, 3.0, 6.0, 5.0], dtype=torch.float64)
    part = temporal_split(time, [0.8, 0.1, 0.1])
    assert torch.bincount(part).tolist() == split_counts(10, [0.8, 0.1, 0.1])
    assert time[part == 0].max() <= time[part == 1].min() <= time[part == 2].min()
    assert part.tolist() == [0, 0, 2, 0, 0, 0, 1, 0, 0, 0]


def test_cold_item_split_holds_out_whole_items():
    item = torch.tensor([r % 17 for r in range(200)]) + 3  # 17 items, none with index < 3
    part = cold_item_split(item, share=0.25, seed=7)
    val, test, train = (set(item[part == k].tolist()) for k in (1, 2, 0))
    assert len(val) == 2 and len(test) == 2  # round(0.25 * 17) = 4, half each
    assert not (val | test) & train and not val & test
    assert torch.equal(part, cold_item_split(item, share=0.25, seed=7))


def test_benchmark_files_all_or_none(tmp_path):
    assert benchmark_files(tmp_path, "toy") is None
    write_atomic(tmp_path, benchmark=True)
    assert [p.name for p in benchmark_files(tmp_path, "toy")] == [
        "toy.train.inter",
        "toy.valid.inter",
        "toy.test.inter",
    ]
    (tmp_path / "toy.valid.inter").unlink()
    with pytest.raises(
        DataError, match=f"^{re.escape(str(tmp_path / 'toy.valid.inter'))}: missing"
    ):
        benchmark_files(tmp_path, "toy")


# -- the data module -------------------------------------------------------------------------
@pytest.fixture
def toy(tmp_path):
    """The toy dataset's interactions (files in tmp_path)."""
    return write_atomic(tmp_path)


def test_feature_stores_have_the_documented_layout(tmp_path, toy):
    dm = recbole_datamodule(tmp_path)
    dm.setup()
    n_users, n_items = len(USER_SIZES), 20
    assert len(dm.user_ids) == n_users and len(dm.doc_ids) == n_items  # i20: .item only
    assert dm.doc_ids[-1] == "i20"
    kinds = {f.name: f.kind for f in dm.users.features}
    assert kinds == {
        "user_id": "id",
        "age": "token",
        "gender": "token",
        "occupation": "token",
        "height": "float",
        "history": "history",
    }
    assert [f.kind for f in dm.corpus.features] == [
        "id",
        "token_seq",
        "token",
        "token_seq",
        "float",
    ]
    u, c = dm.users.tensors, dm.corpus.tensors
    assert u["user_id"].tolist() == list(range(1, n_users + 1))
    assert dm.users["user_id"].cardinality == n_users + 1
    assert u["gender"].shape == (n_users,) and dm.users["gender"].vocab == ("", "F", "M")
    assert math.isnan(u["height"][dm.user_ids.index("u3")])
    assert c["title"].shape == (n_items, 3) and dm.corpus["title"].width == 3
    assert c["genre"][dm.doc_ids.index("i5")].tolist() == [0, 0, 0]  # missing: all padding
    assert dm.corpus["genre"].width == 3 and dm.corpus["genre"].cardinality == 6
    history = dm.users["history"]
    train_sizes = torch.bincount(dm.datasets["train"].user, minlength=n_users)
    assert history.cardinality == n_items + 1 and history.width == int(train_sizes.max())
    assert u["history"].shape == (n_users, history.width)
    assert ((u["history"] > 0).sum(1) == train_sizes).all()
    assert dm.tower_inputs("query") == {"features": dm.users.features}
    assert dm.tower_inputs("doc") == {"features": dm.corpus.features}
    assert dm.vocab_size == 0 and dm.input_kind == "features"


def test_doc_texts_are_titles(tmp_path, toy):
    dm = recbole_datamodule(tmp_path)
    dm.setup()
    assert dm.doc_texts[dm.doc_ids.index("i20")] == "Dark Dark 20"


def test_random_split_sizes_and_disjoint_rows(tmp_path, toy):
    dm = recbole_datamodule(tmp_path)
    dm.setup()
    sizes = [sum(split_counts(n, [0.8, 0.1, 0.1])[k] for n in USER_SIZES) for k in range(3)]
    assert [len(dm.datasets[s]) for s in ("train", "val", "test")] == sizes
    user, item, _, part = dm.interactions
    assert len(user) == len(toy) and torch.bincount(part).tolist() == sizes


def test_loo_split_through_the_data_module(tmp_path, toy, caplog):
    with caplog.at_level(logging.INFO, logger="twotower.data"):
        dm = recbole_datamodule(tmp_path, split="loo")
        dm.setup()
    assert "1 users with fewer than 3 interactions kept in training" in caplog.text
    test = dm.datasets["test"]
    for u, i in zip(test.user.tolist(), test.item.tolist(), strict=True):
        mine = [r for r in toy if r.user == dm.user_ids[u]]
        assert max(mine, key=lambda r: r.timestamp).item == dm.doc_ids[i]


def test_history_is_most_recent_first_and_truncated(tmp_path, toy):
    dm = recbole_datamodule(tmp_path, max_history=3)
    dm.setup()
    train = dm.datasets["train"]
    times = {(r.user, r.item): r.timestamp for r in toy}
    u = dm.user_ids.index("u12")
    mine = [dm.doc_ids[i] for i in train.item[train.user == u].tolist()]
    latest = sorted(mine, key=lambda d: -times[("u12", d)])[:3]
    assert dm.users["history"].width == 3
    assert [dm.doc_ids[i - 1] for i in dm.users.tensors["history"][u].tolist()] == latest


def test_training_batch_hides_the_target_in_history(tmp_path, toy):
    dm = recbole_datamodule(tmp_path)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    history, target = batch["query"]["history"], batch["doc_id"] + 1  # (B, H), (B,)
    stored = dm.users.tensors["history"][batch["query_id"]]
    assert (stored == target[:, None]).any(1).all()  # every target is in its user's history
    assert not (history == target[:, None]).any()  # ... but not in the batch
    assert torch.equal(history, stored.masked_fill(stored == target[:, None], 0))
    assert set(batch) == {"query", "query_id", "index", "doc", "doc_id"}
    assert torch.equal(batch["doc"]["item_id"], batch["doc_id"] + 1)


def test_eval_loaders_give_feature_batches(tmp_path, toy):
    dm = recbole_datamodule(tmp_path)
    dm.setup()
    rows, queries, items = (next(iter(loader)) for loader in dm.val_dataloader())
    assert set(rows["query"]) == {f.name for f in dm.users.features}
    assert queries["query"]["user_id"].shape == queries["index"].shape
    assert items["doc"]["item_id"].tolist() == list(range(1, 17))


def _pairs(exclude: tuple[torch.Tensor, torch.Tensor]) -> list[tuple[int, int]]:
    return sorted(zip(exclude[0].tolist(), exclude[1].tolist(), strict=True))


def test_exclude_masks_training_then_validation_items(tmp_path):
    rows = [  # user a: i1 < i2 < i3 < i4 in time; user b: i2 < i3 < i1
        Interaction("a", "i1", 5, 1),
        Interaction("b", "i2", 5, 1),
        Interaction("a", "i2", 5, 2),
        Interaction("a", "i3", 5, 3),
        Interaction("b", "i3", 5, 2),
        Interaction("a", "i4", 5, 4),
        Interaction("b", "i1", 5, 3),
    ]
    write_lines(tmp_path / "toy.inter", inter_lines(rows))
    dm = recbole_datamodule(tmp_path, split="loo")
    dm.setup()
    assert dm.user_ids == ["a", "b"] and dm.doc_ids == ["i1", "i2", "i3", "i4"]
    val, test = dm.eval_splits["val"], dm.eval_splits["test"]
    assert val.qrels == {"a": {"i3": 1}, "b": {"i3": 1}}
    assert test.qrels == {"a": {"i4": 1}, "b": {"i1": 1}}
    assert val.query_ids == ["a", "b"] and len(val.queries) == 2
    assert _pairs(val.exclude) == [(0, 0), (0, 1), (1, 1)]  # a: i1, i2; b: i2
    assert _pairs(test.exclude) == [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2)]  # + validation
    assert val.candidates is None and test.candidates is None


def test_cold_items_rank_only_their_held_out_items(tmp_path, toy):
    dm = recbole_datamodule(tmp_path, split="cold_items", cold_share=0.25)
    dm.setup()
    train_items = set(dm.datasets["train"].item.tolist())
    for name in ("val", "test"):
        held_out = set(dm.datasets[name].item.tolist())
        candidates = dm.eval_splits[name].candidates
        assert candidates.dtype == torch.bool and candidates.shape == (20,)
        assert set(candidates.nonzero().flatten().tolist()) == held_out
        assert not held_out & train_items
    assert len(set(dm.datasets["val"].item.tolist())) == 2  # round(0.25 * 19 items) = 5
    assert len(set(dm.datasets["test"].item.tolist())) == 3


def test_train_values_come_only_from_training_entities(tmp_path, toy):
    dm = recbole_datamodule(tmp_path, split="cold_items", cold_share=0.25)
    dm.setup()
    trained = sorted(set(dm.datasets["train"].item.tolist()))
    price = dm.corpus.tensors["price"]
    assert len(trained) < 19  # cold items and i20 have no training interaction
    assert sorted(dm.corpus["price"].train_values.tolist()) == sorted(price[trained].tolist())
    heights = dm.users["height"].train_values
    assert len(heights) == len(USER_SIZES) - 1  # u3's height is missing


def test_catalogue_counts_training_interactions(tmp_path, toy):
    dm = recbole_datamodule(tmp_path)
    dm.setup()
    cat = dm.catalogue()
    train = dm.datasets["train"]
    assert cat.doc_counts.dtype == torch.float64 and cat.doc_counts.shape == (20,)
    assert cat.doc_counts.sum() == len(train) and cat.doc_counts[-1] == 0  # i20
    assert torch.equal(cat.positive_query, train.user) and cat.docs is dm.corpus


def test_benchmark_files_are_the_split(tmp_path, caplog):
    rows = write_atomic(tmp_path, benchmark=True)
    with caplog.at_level(logging.INFO, logger="twotower.data"):
        dm = recbole_datamodule(tmp_path, split="temporal")
        dm.setup()
    assert "RecBole benchmark files toy.train.inter, toy.valid.inter, toy.test.inter" in caplog.text
    parts = benchmark_parts(rows)
    for k, name in enumerate(("train", "val", "test")):
        expected = sorted((r.user, r.item) for r, p in zip(rows, parts, strict=True) if p == k)
        d = dm.datasets[name]
        got = sorted((dm.user_ids[u], dm.doc_ids[i]) for u, i in zip(d.user, d.item, strict=True))
        assert got == expected


def test_missing_ids_error_or_fill(tmp_path, toy, caplog):
    rows = [*toy, Interaction("u99", "i1", 4, 5), Interaction("u99", "i2", 4, 6)]
    write_lines(tmp_path / "toy.inter", inter_lines(rows))
    with pytest.raises(DataError) as err:
        recbole_datamodule(tmp_path).setup()
    line = len(toy) + 2
    assert str(err.value).startswith(
        f"{tmp_path / 'toy.inter'}:{line}: field 'user_id': user 'u99'"
    )
    with caplog.at_level(logging.WARNING, logger="twotower.data"):
        dm = recbole_datamodule(tmp_path, missing="fill")
        dm.setup()
    assert (
        f"2 interactions of 1 users of toy.inter are not in toy.user (first: 'u99' on line {line})"
        in caplog.text
    )
    u = dm.user_ids.index("u99")
    assert dm.users.tensors["gender"][u] == 0 and math.isnan(dm.users.tensors["height"][u])


def test_threshold_keeps_high_ratings(tmp_path, toy, caplog):
    with caplog.at_level(logging.INFO, logger="twotower.data"):
        dm = recbole_datamodule(tmp_path, threshold={"rating": 4})
        dm.setup()
    kept = sum(r.rating >= 4 for r in toy)
    assert len(dm.interactions.user) == kept
    assert f"threshold rating >= 4: kept {kept} of {len(toy)} interactions" in caplog.text


def test_text_fields_fit_the_tokenizer_on_training_items(tmp_path, toy):
    dm = recbole_datamodule(tmp_path, split="cold_items", cold_share=0.25, text_fields=["title"])
    dm.setup()
    feature = dm.corpus["title_text"]
    assert feature.kind == "text" and feature.cardinality == dm.tokenizer.vocab_size
    assert isinstance(dm.corpus.tensors["title_text"], TokenStore)
    assert dm.corpus.batch(torch.tensor([0, 1]))["title_text"].shape[:2] == (2, 3)
    # "20" is only in the title of i20, which has no training interaction: unknown (id 1)
    assert dm.tokenizer.token_ids("20") == [1, 1]  # #20, 20#
    assert dm.vocab_size == dm.tokenizer.vocab_size


def test_ml100k_file_is_missing(tmp_path):
    with pytest.raises(DataError, match="make data-ml100k"):
        recbole_datamodule(tmp_path, name="ml-100k").setup()


@pytest.mark.parametrize(
    "lines, name, where",
    [
        (
            ["user_id:token\tgender:token", "u1\tF", "u1\tM"],
            "user",
            ":3: field 'user_id': duplicate id 'u1' (first on line 2)",
        ),
        (
            ["uid:token\tgender:token", "u1\tF"],
            "user",
            ":1: field 'user_id': missing from the header",
        ),
        (["user_id:token\thistory:token", "u1\tx"], "user", ":1: field 'history': clashes"),
        (["item_id:float", "1"], "item", ":1: field 'item_id': is float, expected token"),
    ],
)
def test_bad_side_files(tmp_path, toy, lines, name, where):
    path = write_lines(tmp_path / f"toy.{name}", lines)
    with pytest.raises(DataError) as err:
        recbole_datamodule(tmp_path, missing="fill").setup()
    assert str(err.value).startswith(f"{path}{where}")


def test_bad_inter_rows(tmp_path):
    path = write_lines(tmp_path / "toy.inter", [INTER, "u1\ti1\t3\t5", "u1\ti2\t3\t"])
    with pytest.raises(
        DataError, match=f"^{re.escape(str(path))}:3: field 'timestamp': missing value"
    ):
        recbole_datamodule(tmp_path).setup()
    write_lines(path, [INTER, "u1\t\t3\t5"])
    with pytest.raises(
        DataError, match=f"^{re.escape(str(path))}:2: field 'item_id': missing value"
    ):
        recbole_datamodule(tmp_path).setup()


@pytest.mark.parametrize(
    "options, key",
    [
        ({"split": "user"}, "split"),
        ({"ratios": [0.8, 0.2]}, "ratios"),
        ({"ratios": [0.8, 0.2, 0]}, "ratios"),
        ({"cold_share": 1.0}, "cold_share"),
        ({"missing": "skip"}, "missing"),
        ({"threshold": 4}, "threshold"),
        ({"max_history": 0}, "max_history"),
        ({"history": "yes"}, "history"),
        ({"text_fields": "title"}, "text_fields"),
        ({"time_field": ""}, "time_field"),
        ({"item_field": "user_id"}, "item_field"),
    ],
)
def test_bad_options_raise_config_errors(tmp_path, options, key):
    with pytest.raises(ConfigError) as err:
        recbole_datamodule(tmp_path, **options)
    assert err.value.key == key


def test_unknown_text_field_lists_the_options(tmp_path, toy):
    with pytest.raises(ConfigError, match="age, gender, genre, occupation, title, year"):
        recbole_datamodule(tmp_path, text_fields=["plot"]).setup()


@pytest.mark.skipif(not (ML100K / "ml-100k.inter").exists(), reason="run make data-ml100k")
def test_ml100k_random_split_matches_recbole():
    dm = recbole_datamodule(ML100K, name="ml-100k")
    dm.setup()
    assert len(dm.user_ids) == 943 and len(dm.doc_ids) == 1682
    sizes = [len(dm.datasets[s]) for s in ("train", "val", "test")]
    assert sizes == [80_808, 9_596, 9_596]


def test_ml100k_download_never_overwrites(tmp_path):
    from prepare.ml100k import NAMES, fetch

    for name in NAMES:
        (tmp_path / name).write_text("mine")
    assert fetch(tmp_path) == []  # all there: nothing downloaded, nothing touched
    (tmp_path / NAMES[-1]).unlink()
    with pytest.raises(FileExistsError, match="never overwritten"):
        fetch(tmp_path)
    assert (tmp_path / NAMES[0]).read_text() == "mine"
