"""An export's fingerprint ties its index and embeddings to its towers and tokenizer; queries
with no known token warn."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings

import pytest
import torch
from hydra import compose, initialize_config_dir

from twotower.config_check import CONF_DIR
from twotower.data.components.tokenizers import UNK, WordTokenizer
from twotower.errors import DataError
from twotower.export import export
from twotower.serving import TwoTowerRetriever, fingerprint, load_doc_embeddings
from twotower.towers.mlp import MLPTower
from twotower.train import train

UNKNOWN_QUERY = "qxqxq zvzvz"  # no trigram of it occurs in the synthetic corpus


def compose_cfg(name, *overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Two exports of two small runs with different seeds (so different weights)."""
    from tests.conftest import TINY

    root = tmp_path_factory.mktemp("fingerprint")
    torch.set_num_threads(1)
    out = {}
    for name, seed in (("a", 1), ("b", 2)):
        cfg = compose_cfg("train", *TINY, f"seed={seed}", f"paths.output_dir={root}/run-{name}")
        ckpt = train(cfg)["best_checkpoint"]
        cfg = compose_cfg("export", f"ckpt={ckpt}", f"out={root}/{name}", "index=exact")
        out[name] = export(cfg)
    return out


def copy_export(src, dst):
    shutil.copytree(src, dst)
    return dst


def tower(seed: int) -> MLPTower:
    torch.manual_seed(seed)
    return MLPTower(vocab_size=20, hidden_sizes=[6], output_dim=3)


def test_the_fingerprint_follows_weights_and_vocabulary_not_key_order():
    tok = WordTokenizer().fit(["a b c"])
    q, d = tower(0).state_dict(), tower(1).state_dict()
    fp = fingerprint({"query_tower": q, "doc_tower": d}, tok.state_dict())
    assert len(fp) == 64 and fp == fingerprint({"doc_tower": d, "query_tower": q}, tok.state_dict())
    reordered = dict(reversed(list(q.items())))
    assert fp == fingerprint({"query_tower": reordered, "doc_tower": d}, tok.state_dict())
    changed = {k: v.clone() for k, v in q.items()}
    first = next(iter(changed))
    changed[first].view(-1)[0] += 1e-3
    assert fp != fingerprint({"query_tower": changed, "doc_tower": d}, tok.state_dict())
    other = WordTokenizer().fit(["a b d"]).state_dict()
    assert fp != fingerprint({"query_tower": q, "doc_tower": d}, other)


def test_an_export_records_one_fingerprint_in_manifest_index_and_embeddings(exports):
    a, b = exports["a"], exports["b"]
    fp = json.loads((a / "manifest.json").read_text())["fingerprint"]
    assert json.loads((a / "index" / "index.json").read_text())["fingerprint"] == fp
    assert torch.load(a / "doc_embeddings.pt", weights_only=True)["fingerprint"] == fp
    assert json.loads((b / "manifest.json").read_text())["fingerprint"] != fp
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a matching export loads silently
        TwoTowerRetriever.load(a)
        assert (
            load_doc_embeddings(a).shape[0]
            == json.loads((a / "manifest.json").read_text())["documents"]
        )


def test_an_index_or_embeddings_from_another_export_are_refused(exports, tmp_path):
    mixed = copy_export(exports["a"], tmp_path / "mixed")
    shutil.rmtree(mixed / "index")
    shutil.copytree(exports["b"] / "index", mixed / "index")
    with pytest.raises(DataError, match="fingerprints differ") as e:
        TwoTowerRetriever.load(mixed)
    assert str(mixed / "index" / "index.json") in str(e.value)
    assert str(mixed / "model.pt") in str(e.value)
    done = subprocess.run(
        [sys.executable, "-m", "twotower.search", str(mixed), "a query"],
        capture_output=True,
        text=True,
        env={"OMP_NUM_THREADS": "1", "PATH": ""},
        check=False,
    )
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "fingerprints differ" in done.stderr

    mixed = copy_export(exports["a"], tmp_path / "mixed-embeddings")
    shutil.copy(exports["b"] / "doc_embeddings.pt", mixed / "doc_embeddings.pt")
    with pytest.raises(DataError, match="fingerprints differ"):
        load_doc_embeddings(mixed)
    mixed = copy_export(exports["a"], tmp_path / "mixed-model")
    shutil.copy(exports["b"] / "model.pt", mixed / "model.pt")
    with pytest.raises(DataError, match="fingerprints differ"):
        TwoTowerRetriever.load(mixed)


def test_an_old_export_without_fingerprints_loads_with_a_warning(exports, tmp_path):
    old = copy_export(exports["a"], tmp_path / "old")
    for meta in (old / "manifest.json", old / "index" / "index.json"):
        data = json.loads(meta.read_text())
        del data["fingerprint"]
        meta.write_text(json.dumps(data))
    embeddings = torch.load(old / "doc_embeddings.pt", weights_only=True)["embeddings"]
    torch.save(embeddings, old / "doc_embeddings.pt")  # the old layout: a bare tensor
    with pytest.warns(UserWarning, match="no fingerprint"):
        retriever = TwoTowerRetriever.load(old)
    assert retriever.search("a query", k=2)[0]
    with pytest.warns(UserWarning, match="no fingerprint"):
        assert torch.equal(load_doc_embeddings(old), embeddings)


def test_a_query_with_no_known_token_warns(exports):
    retriever = TwoTowerRetriever.load(exports["a"])
    ids, _ = retriever.tokenizer.encode([UNKNOWN_QUERY], max_words=8)
    assert (ids[ids > 0] == UNK).all()  # the premise: every token of it is unknown
    with pytest.warns(UserWarning, match="no token in the vocabulary") as record:
        hits = retriever.search(["animal", UNKNOWN_QUERY], k=3)
    assert len(hits) == 2 and len(record) == 1 and repr(UNKNOWN_QUERY) in str(record[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        retriever.search(["animal"], k=3)
    done = subprocess.run(
        [sys.executable, "-m", "twotower.search", str(exports["a"]), UNKNOWN_QUERY, "-k", "2"],
        capture_output=True,
        text=True,
        env={"OMP_NUM_THREADS": "1", "PATH": ""},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"twotower: warning: query {UNKNOWN_QUERY!r}: no token in the vocabulary "
        "(every token is unknown); its results are arbitrary"
    ]


def test_warnings_point_at_the_callers_line(exports, tmp_path):
    retriever = TwoTowerRetriever.load(exports["a"])
    for call in (retriever.search, retriever.encode):
        with pytest.warns(UserWarning, match="no token in the vocabulary") as record:
            call([UNKNOWN_QUERY])
        assert record[0].filename == __file__, (call.__name__, record[0].filename)
    old = copy_export(exports["a"], tmp_path / "old")
    meta = json.loads((old / "index" / "index.json").read_text())
    del meta["fingerprint"]
    (old / "index" / "index.json").write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="no fingerprint") as record:
        TwoTowerRetriever.load(old)
    assert record[0].filename == __file__
