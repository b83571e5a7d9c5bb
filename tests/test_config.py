"""Every config composes; every config mistake ends in one line naming the key, before training."""

import subprocess
import sys
from pathlib import Path

import hydra
import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import MissingConfigException

from twotower.errors import ConfigError
from twotower.train import CONF_DIR, train

SKIP_GROUPS = {"hydra", "paths", "sweep", "launcher"}  # not run choices (+sweep=: test_sweep.py)


def group_options():
    for path in sorted(CONF_DIR.rglob("*.yaml")):
        group = path.parent.relative_to(CONF_DIR).as_posix()
        if group != "." and group not in SKIP_GROUPS:
            yield group, path.stem


@pytest.mark.parametrize("group, option", list(group_options()), ids=lambda x: str(x))
def test_every_yaml_composes(make_cfg, group, option):
    if group == "index":  # an evaluate / export choice: compose there and build it
        for name in ("evaluate", "export"):
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
                cfg = compose(config_name=name, overrides=[f"index={option}", "ckpt=x", "out=y"])
            assert hydra.utils.instantiate(cfg.index).kind == option
        return
    cfg = make_cfg(f"{group}={option}")
    assert cfg is not None
    if group == "tower":
        cfg = make_cfg(f"tower@doc_tower={option}")
        assert cfg.doc_tower._target_.endswith(cfg.doc_tower._target_.split(".")[-1])


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
        (["ckpt_path=/no/such/file.ckpt"], "ckpt_path='/no/such/file.ckpt': no such file"),
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
