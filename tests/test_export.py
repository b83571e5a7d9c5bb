"""evaluate, export and search: the same rankings through every interface."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from twotower.checkpoint import load_module
from twotower.config_check import CONF_DIR
from twotower.data.beir import BeirDataModule
from twotower.evaluate import run as evaluate_run
from twotower.export import export
from twotower.retrieval.evaluation import CorpusEvaluator
from twotower.retrieval.runfile import read_run
from twotower.serving import TwoTowerRetriever, load_doc_embeddings
from twotower.train import train


def compose_cfg(name, *overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One small BEIR run shared by the tests of this file: its directory and checkpoint."""
    from tests.conftest import TINY, write_beir

    root = tmp_path_factory.mktemp("run")
    beir = write_beir(root / "beir")
    overrides = [o for o in TINY if not o.startswith("data.")]
    cfg = compose_cfg(
        "train",
        *overrides,
        "data=beir",
        f"data.dir={beir}",
        f"data.cache_dir={root}/cache",
        "data.batch_size=16",
        f"paths.output_dir={root}/out",
        "~logger",
    )
    torch.set_num_threads(1)
    result = train(cfg)
    return {"root": root, "beir": beir, "ckpt": result["best_checkpoint"], "result": result}


def test_evaluate_writes_metrics_and_a_run_file_equal_to_trec_eval(trained, tmp_path):
    import pytrec_eval  # a dev dependency: a broken install fails, not skips

    out = tmp_path / "eval"
    cfg = compose_cfg("evaluate", f"ckpt={trained['ckpt']}", f"out={out}", "split=test")
    result = evaluate_run(cfg)
    # The training run's own test ranking comes from the same checkpoint.
    for name in ("ndcg@10", "mrr@10", "recall@10"):
        assert result["metrics"][f"test/{name}"] == pytest.approx(
            trained["result"]["metrics"][f"test/{name}"], abs=1e-6
        )
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["metrics"] == result["metrics"]
    qrels = {}
    for line in list(open(trained["beir"] / "qrels/test.tsv"))[1:]:
        q, d, g = line.split("\t")
        qrels.setdefault(q, {})[d] = int(g)
    run = read_run(out / "run.test.trec")
    measures = {"ndcg_cut.10", "recall.1,10,100", "map_cut.100"}
    scores = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)
    ten = {q: dict(sorted(d.items(), key=lambda x: -x[1])[:10]) for q, d in run.items()}
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(ten)
    expected = {
        "ndcg@10": ("ndcg_cut_10", scores),
        "recall@1": ("recall_1", scores),
        "recall@10": ("recall_10", scores),
        "recall@100": ("recall_100", scores),
        "map@100": ("map_cut_100", scores),
        "mrr@10": ("recip_rank", rr),
    }
    for ours, (theirs, table) in expected.items():
        mean = sum(v[theirs] for v in table.values()) / len(qrels)
        assert result["metrics"][f"test/{ours}"] == pytest.approx(mean, abs=1e-6), ours


def test_evaluate_with_doc_embeddings_on_disk_matches_memory(trained, tmp_path):
    args = (f"ckpt={trained['ckpt']}", "split=test")
    memory = evaluate_run(compose_cfg("evaluate", *args, f"out={tmp_path / 'm'}"))
    disk_cfg = compose_cfg(
        "evaluate", *args, f"out={tmp_path / 'd'}", "doc_embeddings_on_disk=true"
    )
    disk = evaluate_run(disk_cfg)
    assert disk["metrics"] == pytest.approx(memory["metrics"], abs=1e-6)
    vectors = np.load(tmp_path / "d" / "doc_embeddings.npy", mmap_mode="r")
    assert vectors.shape[0] == disk["documents"] and vectors.dtype == np.float32
    assert (
        read_run(tmp_path / "d" / "run.test.trec").keys()
        == read_run(tmp_path / "m" / "run.test.trec").keys()
    )


def test_evaluate_reports_an_ann_index_beside_exact(trained, tmp_path):
    cfg = compose_cfg(
        "evaluate", f"ckpt={trained['ckpt']}", f"out={tmp_path}", "index=hnsw", "split=val"
    )
    m = evaluate_run(cfg)["metrics"]
    assert "val/ndcg@10" in m and "val/hnsw/ndcg@10" in m
    assert 0.9 <= m["val/hnsw/recall_of_exact@100"] <= 1.0
    assert (tmp_path / "run.val.hnsw.trec").is_file()


def test_export_reload_and_search_match_evaluation(trained, tmp_path):
    out = tmp_path / "export"
    export(compose_cfg("export", f"ckpt={trained['ckpt']}", f"out={out}"))
    module, tokenizer, _ = load_module(trained["ckpt"])
    dm = BeirDataModule(tokenizer, dir=str(trained["beir"]), cache_dir=None)
    dm.setup("test")
    assert tokenizer.state_dict() == dm.tokenizer.state_dict()  # fitted: not fitted again
    # Exported document vectors equal what the module computes.
    exported = torch.load(out / "doc_embeddings.pt", weights_only=True)["embeddings"]
    torch.testing.assert_close(
        exported, CorpusEvaluator().encode(module, dm.corpus, "doc"), rtol=0, atol=1e-6
    )
    # The retriever's top-10 for the test queries equals the evaluation run file's.
    retriever = TwoTowerRetriever.load(out)
    run = read_run(trained["root"] / "out" / "run.test.trec")
    query_text = {
        json.loads(x)["_id"]: json.loads(x)["text"] for x in open(trained["beir"] / "queries.jsonl")
    }
    ids = sorted(run)[:10]
    hits = retriever.search([query_text[q] for q in ids], k=10)
    for q, found in zip(ids, hits, strict=True):
        ranked = sorted(run[q].items(), key=lambda x: -x[1])  # 100 deep
        assert [h.score for h in found] == pytest.approx([s for _, s in ranked[:10]], abs=1e-5)
        # Another batch of queries rounds differently: documents tied within that may swap.
        for hit, (_, score) in zip(found, ranked, strict=False):
            assert hit.doc_id in {d for d, s in ranked if abs(s - score) <= 1e-5}
        assert len({h.doc_id for h in found}) == 10


def test_export_with_doc_embeddings_on_disk_matches_memory(trained, tmp_path):
    args = (f"ckpt={trained['ckpt']}", "index=exact")
    export(compose_cfg("export", *args, f"out={tmp_path / 'm'}"))
    export(compose_cfg("export", *args, f"out={tmp_path / 'd'}", "doc_embeddings_on_disk=true"))
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == sorted(
        p.name for p in (tmp_path / "m").iterdir()
    )  # the scratch file is gone
    torch.testing.assert_close(
        load_doc_embeddings(tmp_path / "d"), load_doc_embeddings(tmp_path / "m"), rtol=0, atol=1e-6
    )
    query = "a query of test words"
    hits = [TwoTowerRetriever.load(tmp_path / x).search([query], k=5)[0] for x in "dm"]
    assert [h.score for h in hits[0]] == pytest.approx([h.score for h in hits[1]], abs=1e-5)


@pytest.fixture
def umask_027():
    """The process umask set to 0o027 for one test: a new directory is then 0o750."""
    old = os.umask(0o027)
    yield
    os.umask(old)


def test_export_directory_gets_the_mode_of_a_new_directory(trained, tmp_path, umask_027):
    out = tmp_path / "export"
    export(compose_cfg("export", f"ckpt={trained['ckpt']}", f"out={out}", "index=exact"))
    (tmp_path / "made").mkdir()  # what os.makedirs gives under this umask
    assert out.stat().st_mode & 0o777 == (tmp_path / "made").stat().st_mode & 0o777 == 0o750


def test_teacher_cache_directory_gets_the_mode_of_a_new_directory(tmp_path, umask_027):
    from twotower.teacher import TeacherVectors, write_cache

    vectors = TeacherVectors(torch.arange(2), torch.zeros(2, 3), torch.zeros(4, 3))
    write_cache(tmp_path / "entry", "key", vectors, {})
    assert (tmp_path / "entry").stat().st_mode & 0o777 == 0o750


def test_export_refuses_a_non_empty_directory(trained, tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    from twotower.errors import ConfigError

    with pytest.raises(ConfigError, match="overwrite=true"):
        export(compose_cfg("export", f"ckpt={trained['ckpt']}", f"out={tmp_path}"))
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_search_cli_prints_the_top_documents(trained, tmp_path):
    out = tmp_path / "export"
    export(compose_cfg("export", f"ckpt={trained['ckpt']}", f"out={out}", "index=exact"))
    query = json.loads(open(trained["beir"] / "queries.jsonl").readline())["text"]
    done = subprocess.run(
        [sys.executable, "-m", "twotower.search", str(out), query, "-k", "3"],
        capture_output=True,
        text=True,
        env={"OMP_NUM_THREADS": "1", "PATH": ""},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    top = TwoTowerRetriever.load(out).search(query, k=3)[0]
    assert all(h.doc_id in done.stdout for h in top)


def test_a_checkpoint_saved_before_the_modules_moved_still_loads(trained, tmp_path):
    """Checkpoints keep class paths (data, negatives, tokenizer): the 0.1.0 ones still load."""
    ckpt = torch.load(trained["ckpt"], map_location="cpu", weights_only=True)
    hparams = ckpt["hyper_parameters"]
    hparams["config"]["data"]["_target_"] = "twotower.data.beir_datamodule.BeirDataModule"
    hparams["config"]["negatives"] = {"_target_": "twotower.negatives.mixed.MixedNegatives"}
    cls = hparams["tokenizer_state"]["class"].rsplit(".", 1)[1]
    hparams["tokenizer_state"]["class"] = f"twotower.data.tokenizers.{cls}"
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)
    module, tokenizer, cfg = load_module(old)
    assert cfg.data._target_ == "twotower.data.beir.BeirDataModule"
    assert type(module.negatives).__name__ == "InBatchNegatives"
    assert type(tokenizer).__name__ == cls
    result = evaluate_run(compose_cfg("evaluate", f"ckpt={old}", f"out={tmp_path / 'e'}"))
    new = evaluate_run(compose_cfg("evaluate", f"ckpt={trained['ckpt']}", f"out={tmp_path / 'n'}"))
    assert result["metrics"] == pytest.approx(new["metrics"], abs=1e-6)
