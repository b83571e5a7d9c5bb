"""Mined hard negatives: the filters, the masking, the in-run miner and the DDP layout."""

import os
import tempfile
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.test_negatives import DOT, identity_batch
from twotower.data.base import Catalogue
from twotower.errors import ConfigError
from twotower.mining import HardNegativeMiner
from twotower.negatives import InBatchNegatives
from twotower.retrieval.mining import MiningWindow, mine_dense, positive_scores, select
from twotower.train import train


class OneHot:
    """A store of 16 one-hot documents: ``batch(rows)`` is what the encoder gets."""

    def __len__(self):
        return 16

    def batch(self, rows):
        return rows


def encode(rows):
    return torch.nn.functional.one_hot(rows.long(), 16).float()


def hard(pairs, table, k=2, sample="top", **kw):
    """InBatchNegatives with ``k`` hard negatives, bound to ``pairs`` (query, doc), its table
    set to ``table`` (row = query id)."""
    neg = InBatchNegatives(hard_negatives=k, hard_sample=sample, **kw)
    q = torch.tensor([a for a, _ in pairs])
    d = torch.tensor([b for _, b in pairs])
    neg.bind(Catalogue(OneHot(), q, d))
    neg.hard.set_table(torch.tensor(table))
    return neg.train()


# -- the filters, each on a hand-made ranking --------------------------------------------------
RANKED = torch.tensor([[3, 5, 7, 9, 11], [2, 4, 6, -1, -1]])  # 2 queries, best first
SCORES = torch.tensor([[1.0, 0.95, 0.7, 0.5, 0.1], [0.9, 0.85, 0.3, -1e9, -1e9]])
POS_ROWS, POS_DOCS = torch.tensor([0, 1]), torch.tensor([3, 8])  # query 0: doc 3, query 1: doc 8


def test_relevant_documents_are_never_mined():
    table, counts = select(SCORES, RANKED, MiningWindow(1, 5), POS_ROWS, POS_DOCS, 16)
    assert table.tolist() == [[5, 7, 9, 11, -1], [2, 4, 6, -1, -1]]
    assert counts == {"candidates": 8, "relevant": 1, "outside_window": 0, "kept": 7}


def test_the_rank_window_skips_the_top_and_caps_the_depth():
    table, counts = select(SCORES, RANKED, MiningWindow(2, 3), POS_ROWS, POS_DOCS, 16)
    # ranks 2-3: query 0 keeps 5, 7 (3 was rank 1); query 1 keeps 4, 6
    assert table.tolist() == [[5, 7], [4, 6]]
    assert counts["outside_window"] == 1 and counts["relevant"] == 1 and counts["kept"] == 4


def test_the_absolute_margin_drops_what_scores_near_the_positive():
    positive = torch.tensor([1.0, 0.9])
    window = MiningWindow(1, 5, margin=0.2)
    table, counts = select(SCORES, RANKED, window, POS_ROWS, POS_DOCS, 16, positive)
    # query 0 drops > 0.8 (0.95); query 1 drops > 0.7 (0.9, 0.85)
    assert table.tolist() == [[7, 9, 11, -1, -1], [6, -1, -1, -1, -1]]
    assert counts["margin"] == 3


def test_the_relative_margin_is_a_share_of_the_positive():
    positive = torch.tensor([1.0, -0.5])
    window = MiningWindow(1, 5, relative_margin=0.5)
    table, counts = select(SCORES, RANKED, window, POS_ROWS, POS_DOCS, 16, positive)
    # query 0 drops > 0.5 (0.95, 0.7); query 1 drops > -0.75: all three of its documents
    assert table.tolist() == [[9, 11, -1, -1, -1], [-1] * 5]
    assert counts["relative_margin"] == 5


def test_dense_mining_never_returns_a_relevant_document():
    g = torch.Generator().manual_seed(0)
    queries, docs = torch.randn(50, 8, generator=g), torch.randn(200, 8, generator=g)
    pos_rows = torch.arange(50).repeat(3)
    pos_docs = torch.randint(200, (150,), generator=g)
    window = MiningWindow(1, 20, margin=0.0)
    table, counts = mine_dense(queries, docs, window, pos_rows, pos_docs)
    relevant = {(int(r), int(d)) for r, d in zip(pos_rows, pos_docs, strict=True)}
    assert all((r, int(d)) not in relevant for r in range(50) for d in table[r] if d >= 0)
    positive = positive_scores(queries, docs, pos_rows, pos_docs)
    kept = table >= 0
    scores = (queries[:, None, :] * docs[table.clamp(min=0)]).sum(-1)
    assert torch.all(scores[kept] <= positive[:, None].expand_as(scores)[kept] + 1e-6)
    assert counts["candidates"] - counts["relevant"] - counts["margin"] == counts["kept"]


@pytest.mark.parametrize(
    "bad", [(0, 5, None, None), (5, 3, None, None), (1, 5, -0.1, None), (1, 5, None, "x")]
)
def test_bad_windows_name_the_key(bad):
    with pytest.raises(ConfigError):
        MiningWindow(*bad)


# -- the candidates ----------------------------------------------------------------------------
def test_mined_negatives_serve_every_row_and_mask_relevant_ones():
    # Query 0 (positive doc 0) was mined 5, 6; query 1 (positive doc 1) was mined 6, 0.
    # Training pairs also make doc 5 relevant to query 1.
    neg = hard([(0, 0), (1, 1), (1, 5)], [[5, 6], [6, 0]])
    q, d, batch = identity_batch([0, 1], [0, 1])
    c = neg(q, d, batch, DOT, encode)
    assert c.scores.shape == (2, 2 + 4)  # 2 in-batch + 2 rows x 2 mined, shared
    mined = c.mask[:, 2:]  # columns: 5, 6 (row 0's), 6, 0 (row 1's)
    # Row 0: 5, 6 valid; the second 6 repeats a mined column; 0 is its own positive.
    # Row 1: 5 is a training positive of query 1; 6 valid; its second copy a repeat; 0 is a
    # batch document already (column 0), so its mined copy is a repeat too.
    assert mined.tolist() == [[True, True, False, False], [False, True, False, False]]
    valid = c.scores[:, 2:][mined]
    assert torch.all(valid == 0)  # no valid mined column scores as a positive would


def test_pads_and_unmined_queries_bring_no_candidates():
    neg = hard([(0, 0), (1, 1), (2, 2)], [[7, -1], [-1, -1]])
    q, d, batch = identity_batch([0, 1, 2], [0, 1, 2])  # query 2 is past the table
    c = neg(q, d, batch, DOT, encode)
    assert c.mask[:, 3:].sum(0).tolist() == [3, 0, 0, 0, 0, 0]  # only doc 7 is valid


def test_a_pad_does_not_make_a_mined_document_0_a_repeat():
    # Mined columns 5, pad, 0, 6 (rows 0 and 1 of the table): document 0 follows a pad, which
    # must not count as an earlier document 0. Positives 3 and 4: 0 is nobody's.
    neg = hard([(0, 3), (1, 4)], [[5, -1], [0, 6]])
    q, d, batch = identity_batch([3, 4], [0, 1])
    c = neg(q, d, batch, DOT, encode)
    assert c.mask[:, 2:].tolist() == [[True, False, True, True]] * 2
    assert c.doc_ids[2:].tolist() == [5, -1, 0, 6]  # the pad's id is -1, as Candidates says


def test_validation_and_test_batches_have_no_mined_columns():
    neg = hard([(0, 0), (1, 1)], [[5, 6, 7], [8, 9, 10]], sample="random")
    q, d, batch = identity_batch([0, 1], [0, 1])
    neg.eval()
    rng = torch.get_rng_state()
    c = neg(q, d, batch, DOT, encode)
    assert c.scores.shape == (2, 2)  # the in-batch candidates only
    assert torch.equal(torch.get_rng_state(), rng)  # no draw from the global RNG
    assert neg.train()(q, d, batch, DOT, encode).scores.shape == (2, 2 + 4)


def test_random_sampling_draws_distinct_documents_of_the_window():
    neg = hard([(0, 0)], [[3, 4, 5, 6, -1, -1]], k=3, sample="random")
    q, d, batch = identity_batch([0], [0])
    seen = set()
    for seed in range(20):
        torch.manual_seed(seed)
        ids = neg.hard.candidates(batch, encode, q.device)[1].tolist()
        assert len(set(ids)) == 3 and set(ids) <= {3, 4, 5, 6}
        seen |= set(ids)
    assert seen == {3, 4, 5, 6}


def test_gradients_reach_the_document_tower_through_mined_negatives():
    neg = hard([(0, 0), (1, 1)], [[5, 6], [7, 8]])
    w = torch.nn.Parameter(torch.eye(16))
    q, d, batch = identity_batch([0, 1], [0, 1])
    c = neg(q, d, batch, DOT, lambda rows: encode(rows) @ w)
    c.scores[:, 2:][c.mask[:, 2:]].sum().backward()
    assert w.grad[5:9].abs().sum() > 0


# -- in a run ----------------------------------------------------------------------------------
def test_a_run_mines_then_refreshes(make_cfg):
    cfg = make_cfg(
        "negatives.hard_negatives=2",  # the default start_epoch: after an epoch of training
        "negatives.mining.refresh_every=1",
        "negatives.mining.rank_min=2",
        "negatives.mining.rank_max=10",
        "trainer.max_epochs=3",
        "~logger",
    )
    result = train(cfg)
    assert result["global_step"] == 9
    mining = result["mining"]
    assert [m["epoch"] for m in mining] == [1, 2]
    assert all(m["kept"] > 0 and m["seconds"] > 0 for m in mining)


def test_the_model_mines_after_an_epoch_by_default_and_warns_if_told_to_mine_at_0(make_cfg):
    settings = dict(make_cfg("negatives.hard_negatives=2").negatives.mining)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the defaults warn about nothing
        assert HardNegativeMiner(settings).start == 1
        assert HardNegativeMiner({**settings, "source": "bm25"}).start == 0  # ready at once
    with pytest.warns(UserWarning, match="untrained model.*all run"):
        HardNegativeMiner({**settings, "start_epoch": 0})


def test_an_unknown_mining_key_is_one_config_error(make_cfg):
    with pytest.raises(ConfigError, match="mining"):
        train(make_cfg("negatives.hard_negatives=1", "+negatives.mining.depth=3", "~logger"))


# -- under DDP: 2 gloo processes ---------------------------------------------------------------
def _ddp_worker(rank, init, out):
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    torch.set_num_threads(1)
    # Rank r holds queries 2r, 2r+1, positives 2r, 2r+1; each query q was mined q+8, q+12.
    table = [[q + 8, q + 12] for q in range(4)]
    neg = hard([(q, q) for q in range(4)], table, k=2)
    q, d, batch = identity_batch([2 * rank, 2 * rank + 1], [2 * rank, 2 * rank + 1])
    c = neg(q, d, batch, DOT, encode)
    mined = neg.hard.candidates(batch, encode, q.device)[1]
    saved = {"mined": mined, "labels": c.labels, "mask": c.mask, "scores": c.scores}
    torch.save(saved, out + str(rank))
    dist.destroy_process_group()


def test_ddp_keeps_each_rows_mined_negatives_aligned():
    with tempfile.TemporaryDirectory() as tmp:
        init, out = f"file://{os.path.join(tmp, 'init')}", os.path.join(tmp, "r")
        mp.spawn(_ddp_worker, args=(init, out), nprocs=2, join=True)
        results = [torch.load(out + str(r), weights_only=True) for r in range(2)]
    for rank, r in enumerate(results):
        # global mined columns: rank 0's rows (8, 12, 9, 13), then rank 1's (10, 14, 11, 15)
        assert r["mined"].tolist() == [8, 12, 9, 13, 10, 14, 11, 15]
        assert r["labels"].shape == (2, 4 + 8)
        assert r["labels"][:, 2 * rank : 2 * rank + 2].equal(torch.eye(2))
        assert r["mask"].all()  # no overlap: every candidate is valid


# -- twotower.mine: a presampled pair file -----------------------------------------------------
def test_mine_writes_a_presampled_file_that_trains(tmp_path):
    from tests.conftest import TINY, write_beir
    from tests.test_export import compose_cfg
    from twotower.data.readers.pairs import load_pairs
    from twotower.mine import mine

    beir = write_beir(tmp_path / "beir")
    tiny = [o for o in TINY if not o.startswith("data.")]
    data = ["data=beir", f"data.dir={beir}", f"data.cache_dir={tmp_path}/cache"]
    run = train(compose_cfg("train", *tiny, *data, f"paths.output_dir={tmp_path}/run", "~logger"))
    out = tmp_path / "mined.jsonl"
    args = [f"source={run['best_checkpoint']}", f"out={out}", "num_negatives=3", "rank_min=2"]
    result = mine(compose_cfg("mine", *args, "relative_margin=0.01"))
    pairs = load_pairs(out)
    assert pairs.format == "presampled" and len(pairs.queries) == result["rows"]
    assert all(len(n) == 3 for n in pairs.negatives)
    # No negative is a relevant document of its query (by text: queries repeat across rows).
    relevant = _relevant_by_text(beir)
    for query, negs in zip(pairs.queries, pairs.negatives, strict=True):
        assert not relevant[query] & set(negs)
    assert (
        result["kept"] + result["relevant"] + result["outside_window"] + result["relative_margin"]
        == result["candidates"]
    )
    with pytest.raises(ConfigError, match="exists"):
        mine(compose_cfg("mine", *args))
    # data=pairs trains on the file with its presampled negatives.
    pairs_data = [
        "data=pairs",
        f"data.train={out}",
        f"data.val={out}",
        "data.cache_dir=null",
        "data.batch_size=16",
    ]
    result = train(
        compose_cfg(
            "train",
            *tiny,
            *pairs_data,
            "negatives=presampled",
            f"paths.output_dir={tmp_path}/run2",
            "~logger",
        )
    )
    assert result["global_step"] == 3


# -- BM25 and export sources ---------------------------------------------------------------------
def _relevant_by_text(beir):
    from twotower.data.readers.beir import load_beir

    truth = load_beir(beir, splits=("train",))
    text = dict(zip(truth.query_ids, truth.query_texts, strict=True))
    doc_text = dict(zip(truth.corpus_ids, truth.corpus_texts, strict=True))
    relevant: dict[str, set[str]] = {}
    for q, docs in truth.qrels["train"].items():
        relevant.setdefault(text[q], set()).update(doc_text[d] for d, g in docs.items() if g > 0)
    return relevant


def test_bm25_pair_scores_equal_the_searched_scores():
    from twotower.retrieval.sparse import BM25

    corpus = ["the cat sat", "a dog barked at the cat", "birds sing", "cat and dog"]
    index = BM25(corpus)
    scores, ranked = index.search(["cat dog", "bird"], k=4)
    rows = torch.tensor([0, 0, 0])
    docs = ranked[0, :3]
    torch.testing.assert_close(index.score_pairs(["cat dog", "bird"], rows, docs), scores[0, :3])
    assert ranked[1].tolist() == [-1] * 4  # unstemmed, "bird" is not "birds": nothing ranks


def test_mine_from_bm25_and_from_an_export(tmp_path):
    from tests.conftest import TINY, write_beir
    from tests.test_export import compose_cfg
    from twotower.data.readers.pairs import load_pairs
    from twotower.export import export
    from twotower.mine import mine

    beir = write_beir(tmp_path / "beir")
    relevant = _relevant_by_text(beir)
    data = ["data=beir", f"data.dir={beir}", f"data.cache_dir={tmp_path}/cache"]
    out = tmp_path / "bm25.jsonl"
    window = ["num_negatives=2", "rank_min=1", "rank_max=20", "relative_margin=0.05"]
    result = mine(compose_cfg("mine", "source=bm25", *data, f"out={out}", *window))
    assert result["kept"] > 0 and result["relative_margin"] >= 0
    pairs = load_pairs(out)
    for query, negs in zip(pairs.queries, pairs.negatives, strict=True):
        assert len(negs) == 2 and not relevant[query] & set(negs)
    with pytest.raises(ConfigError, match="data.*must be given with source=bm25"):
        mine(compose_cfg("mine", "source=bm25", f"out={tmp_path / 'x.jsonl'}"))

    tiny = [o for o in TINY if not o.startswith("data.")]
    run = train(compose_cfg("train", *tiny, *data, f"paths.output_dir={tmp_path}/run", "~logger"))
    exported = tmp_path / "export"
    export(compose_cfg("export", f"ckpt={run['best_checkpoint']}", f"out={exported}"))
    out = tmp_path / "export.jsonl"
    result = mine(compose_cfg("mine", f"source={exported}", *data, f"out={out}", *window))
    assert result["kept"] > 0
    pairs = load_pairs(out)
    for query, negs in zip(pairs.queries, pairs.negatives, strict=True):
        assert not relevant[query] & set(negs)
    # The export's ranking equals the checkpoint's (same towers, exact search).
    same = tmp_path / "ckpt.jsonl"
    by_ckpt = mine(compose_cfg("mine", f"source={run['best_checkpoint']}", f"out={same}", *window))
    assert {k: by_ckpt[k] for k in ("candidates", "kept")} == {
        k: result[k] for k in ("candidates", "kept")
    }


def test_bm25_mining_inside_a_run(make_cfg, beir_dir, tmp_path):
    cfg = make_cfg(
        "data=beir",
        f"data.dir={beir_dir}",
        "data.batch_size=16",
        "negatives.hard_negatives=2",
        "negatives.mining.source=bm25",
        "negatives.mining.rank_min=2",
        "~logger",
    )
    result = train(cfg)
    (entry,) = result["mining"]
    assert entry["epoch"] == 0 and entry["kept"] > 0 and entry["outside_window"] > 0
    with pytest.raises(ConfigError, match="refresh_every.*source=bm25"):
        bm25 = ("negatives.mining.source=bm25", "negatives.mining.refresh_every=1")
        train(make_cfg("data=beir", f"data.dir={beir_dir}", "negatives.hard_negatives=2", *bm25))
