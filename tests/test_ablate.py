"""Ablation files: checked on load; one multirun command with the grid, seeds and extras."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import hydra
import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from twotower.ablate import command, load, variant_config, write_variants
from twotower.config_check import CONF_DIR
from twotower.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_every_ablation_file_loads_and_builds_its_multirun():
    files = sorted((ROOT / "experiments").glob("ablate-*.yaml"))
    assert files
    for path in files:
        spec = load(path)
        cmd, sweep_dir = command(spec, small=True)
        assert cmd[1:4] == ["-m", "twotower.train", "-m"]
        assert sweep_dir.parts[:2] == ("multirun", f"{spec['name']}-small")
        assert f"seed={','.join(map(str, spec['seeds']))}" in cmd
        assert all(s in cmd for s in map(str, spec.get("small") or []))


def test_the_loss_ablation_sweeps_the_four_losses_over_three_seeds():
    cmd, _ = command(load(ROOT / "experiments" / "ablate-loss.yaml"), small=False)
    variants = next(c for c in cmd if c.startswith("+variant="))
    for loss in ("pointwise", "pairwise_hinge", "pairwise_logistic", "listwise_softmax"):
        assert loss in variants.removeprefix("+variant=").split(",")
    assert "seed=0,1,2" in cmd and "trainer.max_epochs=3" not in cmd


@pytest.mark.parametrize(
    "text, key",
    [
        ("name: x\nmetric: test/ndcg@10\nseeds: [0]\n", "grid"),
        ("name: x\nmetric: test/ndcg@10\nseeds: [0]\ngrid: {loss: [a]}\ncolor: red\n", "color"),
        ("metric: test/ndcg@10\nseeds: [0]\ngrid: {loss: [a]}\n", "name"),
        ("name: x\nmetric: test/ndcg@10\nseeds: []\ngrid: {loss: [a]}\n", "seeds"),
    ],
)
def test_bad_ablation_files_name_the_key(tmp_path, text, key):
    path = tmp_path / "a.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=key):
        load(path)
    with pytest.raises(ConfigError, match="no such file"):
        load(tmp_path / "missing.yaml")


def test_a_variant_becomes_a_global_config_choosing_groups_and_setting_values():
    config = variant_config(
        {"tower": "lstm", "tower.pooling": "last", "tower@doc_tower": "cnn", "seed": 3}
    )
    assert config == {
        "defaults": [{"override /tower": "lstm"}, {"override /tower@doc_tower": "cnn"}, "_self_"],
        "tower": {"pooling": "last"},
        "seed": 3,
    }


def test_variants_are_swept_by_name_and_runs_are_named_by_what_is_swept(tmp_path):
    spec = {
        "name": "x",
        "metric": "test/ndcg@10",
        "seeds": [0, 1],
        "variants": {"a": {"loss": "pointwise"}, "b": {"similarity.scale": 5.0}},
        "overrides": ["trainer.max_epochs=1", "~callbacks.progress_bar"],
    }
    cmd, sweep_dir = command(spec, small=False)
    assert "+variant=a,b" in cmd
    assert f"hydra.searchpath=[file://{(sweep_dir / 'conf').resolve()}]" in cmd
    exclude = next(c for c in cmd if c.startswith("hydra.job.config.override_dirname"))
    assert "trainer.max_epochs" in exclude and "callbacks.progress_bar" in exclude
    write_variants(spec, tmp_path)
    text = (tmp_path / "conf" / "variant" / "b.yaml").read_text()
    assert text.startswith("# @package _global_\n") and "scale: 5.0" in text
    assert yaml.safe_load((tmp_path / "ablation.yaml").read_text()) == spec


@pytest.mark.parametrize("path", sorted((ROOT / "experiments").glob("ablate-*.yaml")), ids=str)
def test_every_variant_of_every_ablation_composes_and_builds_its_parts(tmp_path, path):
    spec = load(path)
    write_variants(spec, tmp_path)
    # The runs' own overrides, minus the one that deletes a key compose leaves in place.
    fixed = [o for o in spec.get("overrides") or [] if not o.startswith("~")]
    grid = spec.get("grid") or {}
    points = [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())]
    for variant in spec.get("variants") or [None]:
        for point in points:
            overrides = [*fixed, *(f"{k}={v}" for k, v in point.items())]
            if variant:
                searchpath = f"hydra.searchpath=[file://{tmp_path / 'conf'}]"
                overrides += [searchpath, f"+variant={variant}"]
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
                cfg = compose(config_name="train", overrides=overrides)
            for part in ("negatives", "loss", "similarity"):
                hydra.utils.instantiate(cfg[part])
            for key, value in (spec.get("variants") or {}).get(variant, {}).items():
                if "." in key:  # a value the variant sets, seen in the composed config
                    assert OmegaConf.select(cfg, key) == value, (variant, key)


def test_bad_variants_name_the_key(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text("name: x\nmetric: m\nseeds: [0]\nvariants: {'a b': {loss: x}}\n")
    with pytest.raises(ConfigError, match="variants"):
        load(path)
    path.write_text("name: x\nmetric: m\nseeds: [0]\nvariants: {a: {}}\n")
    with pytest.raises(ConfigError, match="variants.a"):
        load(path)


def test_a_variant_key_that_an_override_also_sets_is_refused(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text(
        "name: x\nmetric: m\nseeds: [0]\noverrides: [model.share_towers=true]\n"
        "variants: {a: {model.share_towers: false}}\n"
    )
    with pytest.raises(ConfigError, match="variants.a.model.share_towers"):
        load(path)


def session_hparams(run_dir: Path) -> dict:
    """The hyper-parameters TensorBoard's HPARAMS tab shows for a run."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    content = acc.SummaryMetadata("_hparams_/session_start_info").plugin_data.content
    info = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    return {
        k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
        for k, v in info.hparams.items()
    }


@pytest.mark.slow
def test_a_real_ablation_groups_its_runs_for_tensorboard_and_reports_in_file_order(tmp_path):
    """2 variants x 2 seeds through ``twotower.ablate`` (about 15 s on one core)."""
    from tests.conftest import TINY

    spec = {
        "name": "tiny",
        "description": "shared towers against hinge",
        "metric": "test/ndcg@10",
        "seeds": [0, 1],
        "variants": {"shared": {"model.share_towers": True}, "hinge": {"loss": "pairwise_hinge"}},
        "overrides": [*TINY, "logger=tensorboard"],
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "reports"
    cmd = [sys.executable, "-m", "twotower.ablate", str(path), "--out", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, env=env, cwd=tmp_path, timeout=300)

    (sweep,) = (tmp_path / "multirun" / "tiny").iterdir()  # multirun/<ablation>/<time>
    runs = sorted(p.name for p in sweep.iterdir() if (p / "metrics.json").is_file())
    assert runs == [f"+variant-{v}+seed-{s}" for v in ("hinge", "shared") for s in (0, 1)]
    params = session_hparams(sweep / "+variant-shared+seed-1")
    assert params["variant"] == "shared" and params["seed"] == 1
    assert params["model.share_towers"] and params["loss"] == "listwise_softmax"
    params = session_hparams(sweep / "+variant-hinge+seed-0")
    assert not params["model.share_towers"] and params["loss"] == "pairwise_hinge"

    md = (out / "tiny.md").read_text()
    assert "shared towers against hinge" in md
    assert "- `shared`: `model.share_towers=true`" in md
    assert md.index("| shared |") < md.index("| hinge |")  # the file's order, not the alphabet
    assert (out / "tiny_test_ndcg_10.png").read_bytes().startswith(b"\x89PNG")
