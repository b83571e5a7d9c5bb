"""Recommendation end to end through Hydra: feature towers on RecBole atomic files, every loss
and negative strategy, full-ranking evaluation, run files, checkpoints and the baselines."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.configs import FEATURE_TOWERS, LOSSES
from tests.recdata import benchmark_parts, write_atomic
from twotower.build import build_for_data, instantiate
from twotower.errors import ConfigError
from twotower.retrieval.runfile import read_run
from twotower.train import train

# Small towers per tower choice ("" = the default feature tower).
TOWERS = {
    "": ["tower=features", "tower.hidden_sizes=[16]", "tower.output_dim=8", "tower.id_dim=8"],
    "tower=id": ["tower.id_dim=8", "tower.output_dim=8"],
    "tower=features": ["tower.hidden_sizes=[16]", "tower.output_dim=8", "tower.id_dim=8"],
    "tower=mlp": [],
}


@pytest.fixture
def toy(tmp_path):
    directory = tmp_path / "toy"
    rows = write_atomic(directory)
    return directory, rows


def rec_cfg(make_cfg, directory, *overrides):
    return make_cfg(
        "data=recbole",
        f"data.dir={directory}",
        "data.name=toy",
        "data.batch_size=16",
        "data.eval_batch_size=16",
        *TOWERS.get(next((o for o in overrides if o.startswith("tower=")), ""), TOWERS[""]),
        "model.metrics=[recall@10,mrr@10,ndcg@10,hit@10,precision@10]",
        "model.run_depth=10",
        *overrides,
    )


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("tower", FEATURE_TOWERS)
def test_every_loss_trains_feature_towers(make_cfg, toy, tmp_path, tower, loss):
    logq = "null" if loss == "pointwise" else "counted"  # a softmax correction (see below)
    overrides = [f"tower={tower}", f"loss={loss}", f"negatives.logq={logq}"]
    overrides.append("negatives.mask_history=true")
    result = train(rec_cfg(make_cfg, toy[0], *overrides))
    assert result["global_step"] == 3
    for stage in ("val", "test"):
        assert 0.0 <= result["metrics"][f"{stage}/ndcg@10"] <= 1.0
    assert (tmp_path / "metrics.json").is_file() and (tmp_path / "run.test.trec").is_file()


def test_logq_with_the_pointwise_loss_is_a_config_error(make_cfg, toy):
    # On MovieLens it trained to test NDCG@10 0.0008, below chance: every logit + 5 to 12.
    cfg = rec_cfg(make_cfg, toy[0], "loss=pointwise", "negatives.logq=counted")
    with pytest.raises(ConfigError, match="negatives.logq='counted': corrects a softmax"):
        train(cfg)


@pytest.mark.parametrize(
    "overrides",
    [
        ["negatives.logq=streaming"],
        ["negatives=mixed", "negatives.num_uniform=8", "negatives.logq=counted"],
        ["negatives=uniform", "loss=pairwise_logistic", "tower=id", "similarity=dot"],
        ["tower.network=dcn", "data.text_fields=[title]", "tower.float_transform=bucketize"],
    ],
    ids=["streaming_logq", "mixed", "bpr", "dcn_text_buckets"],
)
def test_negatives_and_tower_options_train(make_cfg, toy, overrides):
    assert train(rec_cfg(make_cfg, toy[0], *overrides))["global_step"] == 3


def test_gradients_reach_every_encoder_of_both_towers(make_cfg, toy):
    cfg = rec_cfg(make_cfg, toy[0], "data.text_fields=[title]")
    datamodule = instantiate(cfg.data, "data", tokenizer=instantiate(cfg.tokenizer, "tokenizer"))
    datamodule.setup("fit")
    module = build_for_data(cfg, datamodule)
    batch = datamodule.datasets["train"].__getitems__(list(range(16)))
    loss, _, _, _ = module.model_step(batch)
    loss.backward()
    for tower in (module.query_tower, module.doc_tower):
        for name, encoder in zip(tower.names, tower.encoders, strict=True):
            grads = [p.grad for p in encoder.parameters() if p.requires_grad]
            if grads:  # a standardised float has no parameters
                assert any(g is not None and g.abs().sum() > 0 for g in grads), name
    assert {"history", "age", "user_id"} <= set(module.query_tower.names)
    assert {"title_text", "genre", "item_id"} <= set(module.doc_tower.names)


def test_benchmark_files_are_trained_and_tested_as_given(make_cfg, tmp_path):
    directory = tmp_path / "bench"
    rows = write_atomic(directory, benchmark=True)
    parts = benchmark_parts(rows)
    result = train(rec_cfg(make_cfg, directory, "model.run_depth=20"))
    test_pairs = {(r.user, r.item) for r, p in zip(rows, parts, strict=True) if p == 2}
    run = read_run(tmp_path / "run.test.trec")
    assert set(run) == {u for u, _ in test_pairs}  # exactly the users of toy.test.inter
    train_pairs = {(r.user, r.item) for r, p in zip(rows, parts, strict=True) if p == 0}
    for user, ranked in run.items():  # training items are never ranked
        assert not any((user, item) in train_pairs for item in ranked)
    assert result["train_samples"] == 3 * 16


def test_cold_start_split_ranks_only_held_out_items(make_cfg, toy, tmp_path):
    cfg = rec_cfg(
        make_cfg, toy[0], "data.split=cold_items", "tower@doc_tower=features",
        "doc_tower.use_id=false", "doc_tower.hidden_sizes=[16]", "doc_tower.output_dim=8",
    )  # fmt: skip
    train(cfg)
    datamodule = instantiate(cfg.data, "data", tokenizer=instantiate(cfg.tokenizer, "tokenizer"))
    datamodule.setup("fit")
    cold = {datamodule.doc_ids[i] for i in datamodule.eval_splits["test"].candidates.nonzero()}
    trained = {datamodule.doc_ids[i] for i in datamodule.datasets["train"].item.unique()}
    ranked = {d for docs in read_run(tmp_path / "run.test.trec").values() for d in docs}
    assert ranked <= cold and not (cold & trained)


def test_text_tower_on_feature_data_is_a_config_error(make_cfg, toy):
    cfg = rec_cfg(make_cfg, toy[0], "tower=mlp")
    with pytest.raises(ConfigError, match="tower._target_.*encodes text, but the data give "):
        train(cfg)
    cfg = rec_cfg(make_cfg, toy[0], "model.share_towers=true")
    with pytest.raises(ConfigError, match="model.share_towers=True: users and items"):
        train(cfg)


def test_evaluate_cli_reproduces_the_test_metrics_from_a_checkpoint(make_cfg, toy, tmp_path):
    result = train(rec_cfg(make_cfg, toy[0], "trainer.max_epochs=2"))
    out = tmp_path / "eval"
    cmd = [
        sys.executable,
        "-m",
        "twotower.evaluate",
        f"ckpt={result['best_checkpoint']}",
        "split=test",
        f"out={out}",
        f"hydra.run.dir={out}",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    evaluated = json.loads((out / "metrics.json").read_text())["metrics"]
    for name in ("recall@10", "ndcg@10", "mrr@10"):
        assert evaluated[f"test/{name}"] == pytest.approx(
            result["metrics"][f"test/{name}"], abs=1e-5
        )


def test_popularity_baseline_ranks_by_training_counts(toy, tmp_path):
    from bench import popularity
    from tests.recdata import recbole_datamodule

    directory, _ = toy
    result = popularity.run(
        ["data=recbole", f"data.dir={directory}", "data.name=toy", "model.metrics=[hit@10]"],
        tmp_path / "pop",
    )
    assert 0.0 < result["metrics"]["test/hit@10"] <= 1.0
    datamodule = recbole_datamodule(directory)
    datamodule.setup()
    counts = datamodule.catalogue().doc_counts
    index = {d: i for i, d in enumerate(datamodule.doc_ids)}
    test = datamodule.eval_splits["test"]
    masked = set(zip(test.exclude[0].tolist(), test.exclude[1].tolist(), strict=True))
    run = read_run(tmp_path / "pop" / "run.test.trec")
    for row, user in enumerate(test.query_ids):
        ranked = run[user]
        assert [s for s in ranked.values()] == [counts[index[d]].item() for d in ranked]
        assert not any((row, index[d]) in masked for d in ranked)
        unranked = [i for i in range(len(counts)) if (row, i) not in masked]
        assert len(ranked) == len(unranked)  # every item not masked for the user, best first


def test_long_override_lists_get_a_short_distinct_run_name():
    from twotower.runs import MAX_RUN_NAME, run_name

    long = ",".join(f"tower.key{i}=value{i}" for i in range(40))
    name = run_name(long)
    assert len(name) <= MAX_RUN_NAME and name != run_name(long + ",x=1")
    assert run_name("") == "defaults" and run_name("loss=pointwise") == "loss-pointwise"


def test_export_refuses_a_recommendation_checkpoint_clearly(make_cfg, toy, tmp_path):
    from hydra import compose, initialize_config_dir

    from twotower.config_check import CONF_DIR
    from twotower.export import export

    result = train(rec_cfg(make_cfg, toy[0]))
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("export", [f"ckpt={result['best_checkpoint']}", f"out={tmp_path / 'x'}"])
    with pytest.raises(ConfigError, match="holds feature towers.*twotower.evaluate"):
        export(cfg)
    assert not (tmp_path / "x").exists()
