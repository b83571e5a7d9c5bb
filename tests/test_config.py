"""Every config composes; every config mistake ends in one line naming the key, before training."""

import re
import subprocess
import sys
from pathlib import Path

import hydra
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import MissingConfigException

from twotower.config_check import check_config
from twotower.errors import ConfigError
from twotower.train import CONF_DIR, train

SKIP_GROUPS = {"hydra", "paths", "sweep", "launcher"}  # not run choices (+sweep=: test_sweep.py)


def group_options():
    for path in sorted(CONF_DIR.rglob("*.yaml")):
        group = path.parent.relative_to(CONF_DIR).as_posix()
        if group != "." and group not in SKIP_GROUPS:
            yield group, path.stem


# Mandatory keys of the data options (files are not read: only the parts are built).
DATA_KEYS = {"beir": ["data.dir=x"], "pairs": ["data.train=x", "data.val=x"]}
# Parts the config builds without data (towers take the data's sizes: build_parts).
PARTS = ("similarity", "negatives", "loss", "tokenizer", "logger")
MLP = "_target_: twotower.towers.mlp.MLPTower\n"


def build_parts(cfg, towers: bool = True) -> None:
    """Instantiate every part of ``cfg`` as train.py does; towers get tiny data sizes (the
    feature schema of tests/test_feature_towers.py: an experiment's own features need its
    data, so ``towers=False`` skips them there)."""
    from tests.test_feature_towers import make_features
    from twotower.train import build, build_towers

    check_config(cfg)  # every _target_ imports; every key is one its signature takes
    for key in PARTS:
        if cfg.get(key) is not None:
            build(cfg[key], key)
    optimizer = build(cfg.optimizer, "optimizer")(params=[torch.nn.Parameter(torch.zeros(1))])
    if cfg.get("scheduler") is not None:
        build(cfg.scheduler, "scheduler")(optimizer=optimizer)
    if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        cfg.trainer.accelerator = "cpu"  # the rest of trainer=gpu (bf16-mixed) builds on a CPU
    callbacks = [build(c, f"callbacks.{k}") for k, c in cfg.callbacks.items()]
    build(cfg.trainer, "trainer", callbacks=callbacks, logger=False)
    kind = getattr(hydra.utils.get_class(cfg.tower._target_), "input_kind", "text")
    if towers or kind == "text":
        inputs = {"vocab_size": 64} if kind == "text" else {"features": make_features()}
        build_towers(cfg, {"query": inputs, "doc": inputs}, kind)


@pytest.mark.parametrize("group, option", list(group_options()), ids=lambda x: str(x))
def test_every_yaml_composes_and_builds(make_cfg, group, option):
    if group == "index":  # an evaluate / export choice: compose there and build it
        for name in ("evaluate", "export"):
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
                cfg = compose(config_name=name, overrides=[f"index={option}", "ckpt=x", "out=y"])
            assert hydra.utils.instantiate(cfg.index).kind == option
        return
    cfg = make_cfg(f"{group}={option}", *DATA_KEYS.get(option if group == "data" else "", []))
    build_parts(cfg, towers=group != "experiment")
    if group == "tower":
        cfg = make_cfg(f"tower@doc_tower={option}")
        check_config(cfg)
        assert cfg.doc_tower._target_.endswith(cfg.doc_tower._target_.split(".")[-1])


@pytest.mark.parametrize(
    "yaml, message",
    [
        (
            "_target_: twotower.towers.mlp.NoSuchTower\n",
            "tower._target_='twotower.towers.mlp.NoSuchTower'",
        ),
        (
            "_target_: twotower.towers.mlp.MLPTower\nhidden_size: [8]\n",
            "did you mean hidden_sizes?",
        ),
        (
            "_target_: twotower.towers.mlp.MLPTower\ndropout: high\n",
            "tower.dropout='high': must be a float",
        ),
    ],
)
def test_a_broken_yaml_fails_the_config_test(make_cfg, tmp_path, yaml, message):
    broken = tmp_path / "conf" / "tower" / "broken.yaml"
    broken.parent.mkdir(parents=True)
    broken.write_text(yaml)
    cfg = make_cfg(f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "tower=broken")
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_parts(cfg)


def test_tower_choice_sets_both_sides_and_doc_side_can_differ(make_cfg):
    cfg = make_cfg("tower=cnn")
    assert cfg.tower._target_ == "twotower.towers.cnn.CNNTower" and cfg.doc_tower is None
    cfg = make_cfg("tower@doc_tower=lstm")
    assert cfg.tower._target_.endswith("MLPTower") and cfg.doc_tower._target_.endswith("LSTMTower")


def test_tower_values_reach_the_document_tower(make_cfg):
    from twotower.train import doc_tower_config

    cfg = make_cfg("tower=cnn", "tower.num_filters=7")
    assert doc_tower_config(cfg).num_filters == 7  # not the CNN default
    cfg = make_cfg("tower@doc_tower=cnn", "doc_tower.num_filters=9")
    assert doc_tower_config(cfg).num_filters == 9 and "hidden_sizes" not in cfg.doc_tower


def test_unknown_choice_lists_the_choices(make_cfg):
    with pytest.raises(MissingConfigException) as e:
        make_cfg("tower=transformer")
    assert "tower/transformer" in str(e.value)
    assert {"mlp", "lstm", "cnn"} <= set(e.value.options)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["loss=pairwise_hinge", "loss.margin=-1"], "loss.margin=-1"),
        (["loss=pairwise_logistic", "loss.sigma=0"], "loss.sigma=0"),
        (["similarity.scale=0"], "similarity.scale=0"),
        (
            ["negatives=sampled", "negatives.num_negatives=16"],
            "negatives.num_negatives=16: must be < data.batch_size (16)",
        ),
        (["tower.hidden_sizes=[32,0]"], "tower.hidden_sizes="),
        (["tower=lstm", "tower.pooling=first"], "tower.pooling='first'"),
        (["tower@doc_tower=cnn", "doc_tower.kernel_sizes=[0]"], "doc_tower.kernel_sizes="),
        (["ckpt_path=/no/such/file.ckpt"], "ckpt_path='/no/such/file.ckpt': no such checkpoint"),
        (["data.format=sideways"], "data.format='sideways'"),
        (["data.batch_size=0"], "data.batch_size=0"),
        (
            ["data.format=labelled"],
            "needs training rows of format pairs (query, doc) or presampled",
        ),
        (["data.format=labelled", "negatives=presampled"], "loss=pointwise"),
        (["data.format=pairs", "negatives=presampled"], "but the data are pairs (query, doc)"),
        (["model.share_towers=true", "tower@doc_tower=cnn"], "model.share_towers=True"),
        (["similarity.kind=l2"], "similarity.kind='l2': must be one of cosine, dot"),
    ],
    ids=lambda x: x if isinstance(x, str) else " ".join(x),
)
def test_config_mistakes_fail_before_training(make_cfg, tmp_path, overrides, message):
    with pytest.raises(ConfigError) as e:
        train(make_cfg(*overrides, "~logger"))
    assert message in str(e.value)
    assert not (tmp_path / "metrics.json").exists()


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "twotower.train", *args, f"hydra.run.dir={cwd}"],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def test_cli_prints_one_line_for_a_config_mistake(tmp_path):
    out = run_cli("loss=pairwise_hinge", "loss.margin=-1", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == (
        "twotower: config error: loss.margin=-1: must be >= 0"
    )
    assert "Traceback" not in out.stderr


def test_cli_unknown_tower_lists_the_choices(tmp_path):
    out = run_cli("tower=transformer", cwd=tmp_path)
    assert out.returncode != 0
    assert "Could not find 'tower/transformer'" in out.stderr
    assert "Available options in 'tower'" in out.stderr and "\tlstm" in out.stderr


def test_cli_prints_one_line_for_bad_data(tmp_path):
    bad = tmp_path / "train.tsv"
    bad.write_bytes(b"query\tdoc\ngood query\tgood doc\nbad \xff query\tdoc\n")
    out = run_cli("data=pairs", f"data.train={bad}", f"data.val={bad}", cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith(f"twotower: data error: {bad}:3: field 'query': not UTF-8 (byte 0xff")
    assert not (tmp_path / "metrics.json").exists()
