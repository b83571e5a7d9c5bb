"""BEIR and pair-file datamodules: rows, judged queries, the on-disk cache, training."""

import csv
import json
import logging

import pytest
import torch

from twotower.data.beir import BeirDataModule
from twotower.data.components.tokenizers import TrigramTokenizer
from twotower.data.pairs import PairFileDataModule
from twotower.errors import ConfigError, DataError
from twotower.train import train


def beir_dm(directory, cache, **kw):
    dm = BeirDataModule(TrigramTokenizer(), dir=str(directory), cache_dir=str(cache), **kw)
    dm.setup("fit")
    return dm


def test_beir_rows_and_judged_queries(beir_dir, tmp_path):
    dm = beir_dm(beir_dir, tmp_path / "cache", format="presampled", num_negatives=3)
    n_docs = sum(1 for _ in open(beir_dir / "corpus.jsonl"))
    assert len(dm.corpus) == len(dm.doc_ids) == len(dm.doc_texts) == n_docs
    train_pairs = sum(1 for _ in open(beir_dir / "qrels/train.tsv")) - 1
    assert len(dm.datasets["train"]) == train_pairs  # every relevant pair is a row
    batch = dm.datasets["train"].__getitems__([0, 1, 2])
    assert batch["neg"].shape[:2] == (3, 3)
    assert not (batch["neg_id"] == batch["doc_id"][:, None]).any()  # never the row's positive
    val = dm.eval_splits["val"]
    dev = [line.split("\t") for line in open(beir_dir / "qrels/dev.tsv")][1:]
    assert len(val.query_ids) == len({q for q, _, _ in dev})
    graded = {q: d for q, d in val.qrels.items() if len(d) == 2}
    assert graded and all(sorted(d.values()) == [1, 2] for d in graded.values())


def test_max_val_queries_samples_validation_only(beir_dir, tmp_path):
    full = beir_dm(beir_dir, tmp_path / "cache")
    dm = beir_dm(beir_dir, tmp_path / "cache", max_val_queries=5)
    assert len(dm.eval_splits["val"].query_ids) == 5
    assert len(dm.eval_splits["test"].query_ids) > 5
    # The val rows (the val loss) are the sampled queries' rows, not every dev query's.
    sampled = set(dm.eval_splits["val"].query_ids)
    rows = dm.datasets["val"]
    assert 5 <= len(rows) < len(full.datasets["val"])
    assert sampled <= set(full.eval_splits["val"].query_ids)
    assert len(dm.datasets["test"]) == len(full.datasets["test"])


def test_evaluation_texts_by_length_keep_their_rows(beir_dir, tmp_path):
    from twotower.data.components.batches import TextDataset

    dm = beir_dm(beir_dir, tmp_path / "cache")
    plain, ordered = TextDataset(dm.corpus, "doc"), TextDataset(dm.corpus, "doc", by_length=True)
    batch = ordered.__getitems__(list(range(len(ordered))))
    lengths = dm.corpus.text_len[batch["index"]]
    assert (lengths[1:] >= lengths[:-1]).all()  # shortest first
    assert sorted(batch["index"].tolist()) == list(range(len(plain)))
    same = plain.__getitems__(batch["index"][:7].tolist())
    assert torch.equal(same["index"], batch["index"][:7])


def test_cache_hit_and_a_changed_file_is_tokenised_again(beir_dir, tmp_path, caplog):
    cache = tmp_path / "cache"
    first = beir_dm(beir_dir, cache)
    with caplog.at_level(logging.INFO, logger="twotower.data"):
        second = beir_dm(beir_dir, cache)
    assert "from cache" in caplog.text
    assert torch.equal(first.corpus.ids, second.corpus.ids)
    assert first.tokenizer.state_dict() == second.tokenizer.state_dict()
    # Same name, new contents: the key is the contents, so it is read again.
    lines = (beir_dir / "corpus.jsonl").read_text().splitlines()
    doc = json.loads(lines[0])
    doc["text"] = "zebra quokka"
    (beir_dir / "corpus.jsonl").write_text("\n".join([json.dumps(doc), *lines[1:]]) + "\n")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="twotower.data"):
        third = beir_dm(beir_dir, cache)
    assert "from cache" not in caplog.text
    assert third.doc_texts[0] == "zebra quokka" and len(list(cache.iterdir())) == 2


def test_a_corrupt_cache_entry_is_rebuilt(beir_dir, tmp_path):
    cache = tmp_path / "cache"
    beir_dm(beir_dir, cache)
    (entry,) = cache.iterdir()
    entry.write_bytes(b"not a torch file")
    assert len(beir_dm(beir_dir, cache).corpus) > 0


def test_missing_dev_qrels_names_the_file(beir_dir, tmp_path):
    (beir_dir / "qrels/dev.tsv").unlink()
    with pytest.raises(DataError, match=r"dev.tsv: missing"):
        beir_dm(beir_dir, tmp_path / "cache")


def test_beir_trains_and_evaluates_the_whole_corpus(make_cfg, beir_dir, tmp_path):
    cfg = make_cfg(
        "data=beir",
        f"data.dir={beir_dir}",
        f"data.cache_dir={tmp_path}/c",
        "data.batch_size=16",
        "~logger",
    )
    result = train(cfg)
    m = result["metrics"]
    for name in ("recall@1", "recall@10", "recall@100", "mrr@10", "ndcg@10", "map@100"):
        assert 0.0 <= m[f"test/{name}"] <= 1.0 and f"val/{name}" in m
    assert m["val/recall@100"] >= m["val/recall@10"] >= m["val/recall@1"]
    run = (tmp_path / "run.test.trec").read_text().splitlines()
    n_test = len({line.split("\t")[0] for line in open(beir_dir / "qrels/test.tsv")}) - 1
    assert len(run) == n_test * 100 and run[0].split()[1] == "Q0"


def write_table(path, header, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, delimiter="\t" if path.suffix == ".tsv" else ",")
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def pair_files(tmp_path):
    """query/doc pairs about animals, a labelled and a presampled version of them."""
    animals = ["cat", "dog", "horse", "sheep", "goat", "camel", "llama", "zebra", "otter"]
    rows = [(f"what sound does a {a} make {i}", f"the {a} page") for a in animals for i in range(3)]
    pairs = write_table(tmp_path / "train.tsv", ["query", "doc"], rows)
    val = write_table(tmp_path / "val.csv", ["query", "doc"], rows[::3])
    labelled = write_table(
        tmp_path / "labelled.tsv",
        ["label", "query", "doc"],
        [
            r
            for q, d in rows
            for r in ((1, q, d), (0, q, "the otter page" if "otter" not in q else "the cat page"))
        ],
    )
    triples = tmp_path / "triples.jsonl"
    with open(triples, "w") as f:
        for q, d in rows:
            f.write(
                json.dumps(
                    {"query": q, "doc": d, "negatives": ["the goat page", "the cat page"][:2]}
                )
                + "\n"
            )
    return {"pairs": pairs, "val": val, "labelled": labelled, "presampled": triples}


@pytest.mark.parametrize(
    "fmt,overrides",
    [
        ("pairs", []),
        ("labelled", ["loss=pointwise", "negatives=presampled"]),
        ("presampled", ["negatives=presampled", "loss=pairwise_hinge"]),
    ],
)
def test_pair_files_train_in_each_format(make_cfg, pair_files, tmp_path, fmt, overrides):
    cfg = make_cfg(
        "data=pairs",
        f"data.train={pair_files[fmt]}",
        f"data.val={pair_files['val']}",
        f"data.test={pair_files['val']}",
        f"data.cache_dir={tmp_path}/c",
        "data.batch_size=8",
        "~logger",
        *overrides,
    )
    result = train(cfg)
    assert "test/ndcg@10" in result["metrics"] and result["global_step"] == 3


def test_a_loss_that_needs_another_format_says_which(make_cfg, pair_files, tmp_path):
    cfg = make_cfg(
        "data=pairs",
        f"data.train={pair_files['pairs']}",
        f"data.val={pair_files['val']}",
        f"data.cache_dir={tmp_path}/c",
        "run_test=false",
        "negatives=presampled",
        "~logger",
    )
    with pytest.raises(ConfigError, match=r"presampled.*query, doc, neg_1"):
        train(cfg)


def test_pair_file_corpus_is_every_distinct_document(pair_files, tmp_path):
    dm = PairFileDataModule(
        TrigramTokenizer(),
        train=str(pair_files["presampled"]),
        val=str(pair_files["val"]),
        cache_dir=None,
    )
    dm.setup("fit")
    assert dm.train_format == "presampled"
    assert sorted(dm.doc_texts) == sorted(
        {
            f"the {a} page"
            for a in ["cat", "dog", "horse", "sheep", "goat", "camel", "llama", "zebra", "otter"]
        }
    )
    val = dm.eval_splits["val"]
    assert all(len(docs) == 1 for docs in val.qrels.values())


def test_bad_rows_stop_before_training_with_file_line_and_field(make_cfg, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "a b", "doc": "c d"}\n{"query": "e f", "doc": \n')
    cfg = make_cfg(
        "data=pairs", f"data.train={bad}", f"data.val={bad}", "data.cache_dir=null", "~logger"
    )
    with pytest.raises(DataError, match=r"bad.jsonl:2: .*malformed JSON"):
        train(cfg)


@pytest.mark.parametrize("tokenizer", ["char", "jieba"])
def test_chinese_pairs_train(make_cfg, tmp_path, tokenizer):
    zh = "tests/data/zh_pairs.tsv"
    cfg = make_cfg(
        "data=pairs",
        f"data.train={zh}",
        f"data.val={zh}",
        f"data.test={zh}",
        f"tokenizer={tokenizer}",
        "data.batch_size=8",
        "data.cache_dir=null",
        "~logger",
    )
    result = train(cfg)
    assert result["global_step"] == 3 and 0.0 <= result["metrics"]["test/ndcg@10"] <= 1.0
    state = torch.load(result["best_checkpoint"], weights_only=True)["hyper_parameters"]
    vocab = state["tokenizer_state"]["vocab"]
    assert (
        all(len(w) == 1 for w in vocab) if tokenizer == "char" else any(len(w) > 1 for w in vocab)
    )


def test_pair_files_refuse_a_format_setting(make_cfg, pair_files):
    cfg = make_cfg(
        "data=pairs",
        f"data.train={pair_files['pairs']}",
        f"data.val={pair_files['val']}",
        "+data.format=labelled",
        "~logger",
    )
    with pytest.raises(ConfigError, match="data.format='labelled': is not set for pair files"):
        train(cfg)


@pytest.mark.parametrize("rows", [[("a b", "c d")], [("a b", "c d"), ("e f", "c d")]])
def test_a_corpus_of_one_document_stops_with_a_data_error(make_cfg, tmp_path, rows):
    # Uniform negatives need a second document; this once ended in a ValueError traceback.
    path = write_table(tmp_path / "one.tsv", ["query", "doc"], rows)
    cfg = make_cfg("data=pairs", f"data.train={path}", f"data.val={path}", "data.cache_dir=null")
    with pytest.raises(DataError) as err:
        train(cfg)
    assert str(err.value) == (
        f"{path}: the corpus has 1 document(s): negatives need at least 2 "
        "(the corpus is every distinct document of the train, val and test files)"
    )


def test_a_beir_corpus_of_one_document_stops_with_a_data_error(beir_dir, tmp_path):
    first = (beir_dir / "corpus.jsonl").read_text().splitlines()[0]
    (beir_dir / "corpus.jsonl").write_text(first + "\n")
    doc_id = json.loads(first)["_id"]
    for split in ("train", "dev", "test"):
        lines = (beir_dir / f"qrels/{split}.tsv").read_text().splitlines()
        kept = [line for line in lines[1:] if line.split("\t")[1] == doc_id] or [
            lines[1].split("\t")[0] + f"\t{doc_id}\t1"
        ]
        (beir_dir / f"qrels/{split}.tsv").write_text("\n".join([lines[0], *kept]) + "\n")
    with pytest.raises(DataError, match=r"corpus.jsonl: the corpus has 1 document\(s\)"):
        beir_dm(beir_dir, tmp_path / "cache")


def test_pair_files_without_a_test_file_have_no_test_split(pair_files):
    dm = PairFileDataModule(
        TrigramTokenizer(),
        train=str(pair_files["pairs"]),
        val=str(pair_files["val"]),
        cache_dir=None,
    )
    assert not dm.has_test  # known before setup
    dm.setup("fit")
    assert "test" not in dm.eval_splits and "test" not in dm.datasets
    with pytest.raises(ConfigError, match="data.test=None: no test file"):
        dm.test_dataloader()
    with_test = PairFileDataModule(
        TrigramTokenizer(),
        train=str(pair_files["pairs"]),
        val=str(pair_files["val"]),
        test=str(pair_files["val"]),
    )
    assert with_test.has_test


def test_encoding_by_length_keeps_the_store_order(beir_dir, tmp_path):
    from types import SimpleNamespace

    from twotower.retrieval.evaluation import CorpusEvaluator

    dm = beir_dm(beir_dir, tmp_path / "cache")
    sums = lambda tokens: tokens.float().sum((1, 2))[:, None].repeat(1, 2)  # noqa: E731 - exact
    model = SimpleNamespace(
        device=torch.device("cpu"),
        similarity=SimpleNamespace(prepare=lambda x: x),
        encode_documents=sums,
        encode_queries=sums,
    )
    plain = CorpusEvaluator().encode(model, dm.corpus, "doc", 7)
    ordered = CorpusEvaluator().encode(model, dm.corpus, "doc", 7, by_length=True)
    on_disk = CorpusEvaluator().encode(model, dm.corpus, "doc", 7, tmp_path / "v.npy", True)
    torch.testing.assert_close(ordered, plain)  # each row's own vector, in the store's order
    torch.testing.assert_close(on_disk, plain)
    assert len(set(plain[:, 0].tolist())) > 5  # the texts differ: an order mix-up would show
