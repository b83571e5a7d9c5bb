"""Synthetic data, the batch dataset and the datamodule: determinism, splits, formats, batches."""

from __future__ import annotations

import math
import pickle

import pytest
import torch
from torch.utils.data import DataLoader

from twotower.data.components.batches import TextPairDataset, collate, labelled_rows
from twotower.data.components.generator import SyntheticGenerator
from twotower.data.components.tokenizers import (
    TrigramTokenizer,
    WordTokenizer,
    tokenizer_from_state,
)
from twotower.data.synthetic import SyntheticDataModule
from twotower.errors import ConfigError

SMALL = {"num_docs": 200, "num_topics": 4, "stems_per_topic": 20, "queries_per_doc": 2}


def make_dm(fmt: str = "presampled", tokenizer=None, **kwargs) -> SyntheticDataModule:
    dm = SyntheticDataModule(tokenizer or TrigramTokenizer(), format=fmt, **{**SMALL, **kwargs})
    dm.setup("fit")
    return dm


@pytest.fixture(scope="module")
def data():
    return SyntheticGenerator(**SMALL, seed=3).generate()


def test_same_seed_same_tensors_other_seed_other_data():
    a, b, c = make_dm(seed=1), make_dm(seed=1), make_dm(seed=2)
    for name in ("train", "val", "test"):
        x, y = a.datasets[name], b.datasets[name]
        for attr in ("doc_id", "neg_id", "query_id"):
            assert torch.equal(getattr(x, attr), getattr(y, attr))
        assert torch.equal(x.queries.padded(), y.queries.padded())
        assert torch.equal(x.docs.padded(), y.docs.padded())
    assert a.data.docs != c.data.docs and a.data.train.queries != c.data.train.queries


def test_eval_queries_do_not_depend_on_training_sizes():
    a = SyntheticGenerator(**{**SMALL, "queries_per_doc": 1}).generate()
    b = SyntheticGenerator(**{**SMALL, "queries_per_doc": 3}).generate()
    assert a.docs == b.docs
    for split in ("val", "test"):
        x, y = getattr(a, split), getattr(b, split)
        assert (x.queries, x.pos_ids, x.neg_ids) == (y.queries, y.pos_ids, y.neg_ids)
    assert len(b.train.queries) == 3 * len(a.train.queries)


def test_sizes_and_queries_much_shorter_than_documents(data):
    assert len(data.docs) == 200
    assert [len(s.doc_ids) for s in (data.train, data.val, data.test)] == [160, 20, 20]
    assert len(data.train.queries) == 2 * 160 and len(data.val.queries) == 3 * 20
    query_len = [len(q.split()) for q in data.train.queries]
    doc_len = [len(d.split()) for d in data.docs]
    assert max(query_len) <= 5 < 20 <= min(doc_len)
    assert sum(doc_len) / len(doc_len) > 5 * sum(query_len) / len(query_len)


def test_splits_are_disjoint_and_queries_point_into_their_split(data):
    train, val, test = (set(s.doc_ids) for s in (data.train, data.val, data.test))
    assert not train & val and not train & test and not val & test
    assert train | val | test == set(range(len(data.docs)))
    for split, docs in ((data.train, train), (data.val, val), (data.test, test)):
        assert set(split.pos_ids) <= docs
        assert {d for negs in split.neg_ids for d in negs} <= docs


def test_negatives_never_the_positive_and_half_hard(data):
    for split in (data.train, data.val, data.test):
        for pos, negs in zip(split.pos_ids, split.neg_ids, strict=True):
            assert len(negs) == 4 and pos not in negs and len(set(negs)) == 4
    # Hard ones (even positions) share the topic when the split has enough such documents.
    for pos, negs in zip(data.train.pos_ids, data.train.neg_ids, strict=True):
        assert data.topics[negs[0]] == data.topics[negs[2]] == data.topics[pos]


def test_identical_query_texts_share_an_id(data):
    queries = data.train.queries + data.val.queries + data.test.queries
    ids = data.train.query_ids + data.val.query_ids + data.test.query_ids
    by_text = dict(zip(queries, ids, strict=True))
    assert all(by_text[q] == i for q, i in zip(queries, ids, strict=True))
    assert len(set(ids)) == len(set(queries))


def test_trigrams_beat_word_overlap_and_neither_is_perfect():
    # The design's promise: other word forms and typos defeat exact word overlap, trigrams
    # still match; synonyms defeat both. In-batch MRR over the val queries, batch 128.
    data = SyntheticGenerator(num_docs=1200, seed=0).generate()
    train = data.train.queries + [data.docs[d] for d in data.train.doc_ids]
    pos = torch.tensor(data.val.pos_ids)

    def mrr(tok) -> float:
        tok.fit(train)
        q, d = tok.encode(data.val.queries, 16)[0], tok.encode(data.docs, 64)[0]
        bags = [torch.zeros(len(x), tok.vocab_size).scatter_(1, x.flatten(1), 1.0) for x in (q, d)]
        qb, db = (torch.nn.functional.normalize(b[:, 2:], dim=1) for b in bags)  # no pad/unk
        rr = []
        for s in range(0, len(pos), 128):
            p = pos[s : s + 128]
            scores = qb[s : s + 128] @ db[p].T  # (B, B)
            same = (p[:, None] == p[None, :]) & ~torch.eye(len(p), dtype=torch.bool)
            scores = scores.masked_fill(same, -1.0)
            rr.append(1.0 / (scores >= scores.diag()[:, None]).sum(1))  # rank; ties count against
        return torch.cat(rr).mean().item()

    word, trigram = mrr(WordTokenizer()), mrr(TrigramTokenizer())
    assert word + 0.1 < trigram < 0.9


def test_getitems_keys_shapes_dtypes_and_trimming():
    dm = make_dm()
    ds = dm.datasets["train"]
    rows = [0, 5, 7]
    batch = ds.__getitems__(rows)
    assert set(batch) == {"query", "query_id", "index", "doc", "doc_id", "neg", "neg_id"}
    b, wq, tq = batch["query"].shape
    _, k, wd, td = batch["neg"].shape
    assert (b, k) == (3, 4) and batch["doc"].shape == (3, wd, td)  # doc and negatives agree
    assert all(v.dtype == torch.long for v in batch.values())
    assert batch["index"].tolist() == rows
    assert batch["doc_id"].tolist() == [dm.data.train.pos_ids[i] for i in rows]
    assert torch.equal(batch["neg_id"], torch.tensor([dm.data.train.neg_ids[i] for i in rows]))
    # Trimmed to the batch's longest text and word, and nothing is cut.
    queries, docs = ds.queries.padded(), ds.docs.padded()
    full = {"query": queries[rows], "doc": docs[batch["doc_id"]], "neg": docs[batch["neg_id"]]}
    lengths = {k: ((v != 0).any(-1).sum(-1).max(), (v != 0).sum(-1).max()) for k, v in full.items()}
    assert wq == lengths["query"][0] and wd == max(lengths["doc"][0], lengths["neg"][0])
    assert tq == lengths["query"][1] and td == max(lengths["doc"][1], lengths["neg"][1])
    for key, tokens in full.items():
        w, t = (wq, tq) if key == "query" else (wd, td)
        assert torch.equal(tokens[..., :w, :t], batch[key])
        assert tokens[..., w:, :].sum() == 0 and tokens[..., t:].sum() == 0
    assert set(ds[2]) == set(batch) and ds[2]["query"].dim() == 2


def test_formats_pairs_and_labelled():
    pairs = make_dm("pairs").datasets["train"].__getitems__([0, 1])
    assert set(pairs) == {"query", "query_id", "index", "doc", "doc_id"}
    dm = make_dm("labelled", labelled_negatives=3)
    ds = dm.datasets["train"]
    n_queries = len(dm.data.train.queries)
    assert len(ds) == n_queries * (1 + 3)
    batch = ds.__getitems__(list(range(len(ds))))
    assert batch["label"].dtype == torch.float and batch["label"].sum() == n_queries
    assert set(batch) == {"query", "query_id", "index", "doc", "doc_id", "label"}
    positives = batch["doc_id"][batch["label"] == 1]
    assert positives.tolist() == dm.data.train.pos_ids  # one positive row per query
    # Validation stays presampled whatever the training format.
    assert "neg" in dm.datasets["val"].__getitems__([0])


def test_labelled_rows_by_hand():
    query_index, doc_id, label = labelled_rows(
        torch.tensor([7, 8]), torch.tensor([[1, 2], [3, 4]]), 1
    )
    assert query_index.tolist() == [0, 0, 1, 1]
    assert doc_id.tolist() == [7, 1, 8, 3]
    assert label.tolist() == [1.0, 0.0, 1.0, 0.0]


def test_dataset_stores_the_corpus_once():
    queries = torch.ones(2, 1, 1, dtype=torch.long)
    docs = torch.ones(5, 3, 2, dtype=torch.long)
    ds = TextPairDataset(queries, docs, torch.tensor([4, 4]))
    assert len(ds.docs) == 5 and len(ds.docs.ids) == 5 * 3 * 2  # ragged, no padding stored
    assert len(ds) == 2 and ds.__getitems__([1])["doc"].shape == (1, 3, 2)


def test_dataloader_yields_whole_batches():
    dm = make_dm(batch_size=48)
    loader = dm.train_dataloader()
    batches = list(loader)
    n = len(dm.datasets["train"])  # 320: the last batch is partial and kept
    assert len(batches) == len(loader) == math.ceil(n / 48)
    assert [len(b["index"]) for b in batches] == [48] * (n // 48) + [n % 48]
    seen = torch.cat([b["index"] for b in batches])
    assert sorted(seen.tolist()) == list(range(n)) and seen.tolist() != list(range(n))
    rows, queries, corpus = (list(loader) for loader in dm.val_dataloader())
    assert torch.cat([b["index"] for b in rows]).tolist() == list(range(len(dm.datasets["val"])))
    assert torch.cat([b["index"] for b in corpus]).tolist() == list(range(len(dm.corpus)))
    assert all(set(b) == {"query", "index"} for b in queries)
    assert all(set(b) == {"doc", "index"} for b in corpus)
    pickle.dumps(collate)  # workers receive it by pickling


def test_dataloader_with_a_worker():
    ds = make_dm().datasets["val"]
    loader = DataLoader(ds, batch_size=16, collate_fn=collate, num_workers=1)
    assert sum(len(b["index"]) for b in loader) == len(ds)


def test_setup_is_idempotent_and_fits_on_train_texts_only():
    dm = make_dm()
    datasets, tokenizer_state = dict(dm.datasets), dm.tokenizer.state_dict()
    dm.setup("fit")
    dm.setup("validate")
    assert all(dm.datasets[k] is v for k, v in datasets.items())
    train = dm.data.train.queries + [dm.data.docs[d] for d in dm.data.train.doc_ids]
    assert TrigramTokenizer().fit(train).state_dict() == tokenizer_state
    assert dm.vocab_size == dm.tokenizer.vocab_size == len(tokenizer_state["vocab"]) + 2


def test_setup_keeps_a_fitted_tokenizer():
    state = make_dm().tokenizer.state_dict()
    # a checkpoint's tokenizer, restored before setup: its vocabulary is kept, not refitted
    fresh = SyntheticDataModule(tokenizer_from_state(state), **{**SMALL, "seed": 9})
    fresh.setup()
    assert fresh.tokenizer.state_dict() == state
    hashed = make_dm(tokenizer=TrigramTokenizer(buckets=100))
    assert hashed.vocab_size == 102


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"format": "triplets"}, "format"),
        ({"batch_size": 0}, "batch_size"),
        ({"eval_batch_size": 1.5}, "eval_batch_size"),
        ({"num_negatives": 0}, "num_negatives"),
        ({"labelled_negatives": 5}, "labelled_negatives"),
        ({"max_doc_words": -1}, "max_doc_words"),
        ({"num_workers": -1}, "num_workers"),
        ({"shuffle_train": "yes"}, "shuffle_train"),
        ({"num_docs": 10}, "num_docs"),
        ({"stems_per_topic": 3}, "stems_per_topic"),
        ({"typo_rate": 1.5}, "typo_rate"),
        ({"tokenizer": "trigram"}, "tokenizer"),
    ],
)
def test_invalid_arguments_name_the_key(kwargs, key):
    args = {"tokenizer": TrigramTokenizer(), **kwargs}
    with pytest.raises(ConfigError) as err:
        SyntheticDataModule(**args)
    assert err.value.key == key
