"""data.unique_in_batch: batches in which no document (or query) repeats, every row kept."""

import pytest
import torch

from tests.recdata import write_atomic
from tests.test_recommendation import rec_cfg
from twotower.build import instantiate
from twotower.data.components.unique import DuplicateFreeSampler, duplicate_free_batches, padded
from twotower.errors import ConfigError
from twotower.train import train


def test_greedy_batches_by_hand():
    keys = [torch.tensor([7, 7, 8, 8, 9])]
    batches = duplicate_free_batches(keys, torch.arange(5), size=2)
    # Row 1 repeats row 0's key: it waits, ahead of the rows not yet taken.
    assert batches == [[0, 2], [1, 3], [4]]
    # A key with more rows than batches leaves short batches at the end, no row dropped.
    batches = duplicate_free_batches([torch.tensor([1, 1, 1, 2])], torch.arange(4), size=2)
    assert batches == [[0, 3], [1], [2]]


def datamodule(cfg):
    dm = instantiate(cfg.data, "data", tokenizer=instantiate(cfg.tokenizer, "tokenizer"))
    dm.setup("fit")
    return dm


@pytest.mark.parametrize("unique", ["doc", "query", "both"])
def test_every_batch_is_duplicate_free_and_every_row_is_used(make_cfg, unique):
    dm = datamodule(make_cfg(f"data.unique_in_batch={unique}", "data.queries_per_doc=4"))
    rows = dm.datasets["train"]
    for batch in dm.train_dataloader():
        if unique in ("doc", "both"):
            assert len(set(batch["doc_id"].tolist())) == len(batch["doc_id"])
        if unique in ("query", "both"):
            assert len(set(batch["query_id"].tolist())) == len(batch["query_id"])
    sampler = dm.train_dataloader().sampler
    assert isinstance(sampler, DuplicateFreeSampler) and sampler.short_batches == 0
    assert sorted(i for b in sampler for i in b) == list(range(len(rows)))  # each row once


def test_without_the_option_batches_do_repeat_documents(make_cfg):
    # The check above can fail: with 4 queries per document, random batches repeat some.
    dm = datamodule(make_cfg("data.queries_per_doc=4"))
    repeats = sum(len(b["doc_id"]) - len(set(b["doc_id"].tolist())) for b in dm.train_dataloader())
    assert repeats > 0


@pytest.mark.parametrize(
    "replicas, sizes",
    [
        (2, ("data.num_docs=121", "data.queries_per_doc=3")),
        (3, ("data.num_docs=125", "data.queries_per_doc=4")),
    ],
    ids=["2 processes, 291 rows", "3 processes, 400 rows"],
)
def test_ddp_shares_make_a_duplicate_free_global_batch(make_cfg, replicas, sizes):
    # The last global batch (291 % 16 = 3 rows, 400 % 24 = 16 rows) does not split evenly.
    rows = datamodule(make_cfg(*sizes)).datasets["train"]
    shares = [
        DuplicateFreeSampler(rows, "doc", 8, num_replicas=replicas, rank=r, seed=1)
        for r in range(replicas)
    ]
    assert len({len(share) for share in shares}) == 1  # every process steps as often
    stepped = 0
    for parts in zip(*shares, strict=True):
        assert len({len(part) for part in parts}) == 1  # every process steps with as many rows
        docs = rows.doc_id[torch.tensor([i for part in parts for i in part])].tolist()
        assert len(set(docs)) == len(docs)  # the gathered global batch
        stepped += len(docs)
    assert stepped > len(rows)  # a global batch was padded: the uneven case is tested
    assert {i for share in shares for b in share for i in b} == set(range(len(rows)))


def test_an_uneven_global_batch_is_padded_with_rows_whose_keys_it_lacks():
    keys = [[1, 1, 1, 2]]  # row 3 is the only row of another key than 1
    assert padded([1], keys, [0, 1, 2, 3], 2) == [1, 3]
    assert padded([1, 3], keys, [0, 1, 2, 3], 2) == [1, 3]  # even already
    assert padded([0], [[1, 1, 1]], [0, 1, 2], 2) == []  # nothing to pad with: cut


def test_a_new_order_each_epoch_from_the_seed(make_cfg):
    rows = datamodule(make_cfg()).datasets["train"]
    sampler = DuplicateFreeSampler(rows, "doc", 16, seed=3)
    first = list(sampler)
    assert list(DuplicateFreeSampler(rows, "doc", 16, seed=3)) == first  # reproducible
    sampler.set_epoch(1)
    assert list(sampler) != first


def test_training_with_duplicate_free_batches(make_cfg, tmp_path):
    assert train(make_cfg("data.unique_in_batch=both", "~logger"))["global_step"] == 3
    directory = tmp_path / "toy"
    write_atomic(directory)
    result = train(rec_cfg(make_cfg, directory, "data.unique_in_batch=doc"))
    assert result["global_step"] == 3


def test_a_bad_value_names_the_key_and_the_choices(make_cfg):
    with pytest.raises(ConfigError, match="unique_in_batch.*doc.*query.*both"):
        train(make_cfg("data.unique_in_batch=docs"))
