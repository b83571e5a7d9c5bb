"""Ablation files: checked on load; one multirun command with the grid, seeds and extras."""

from __future__ import annotations

from pathlib import Path

import pytest

from twotower.ablate import command, load
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
    assert "loss=pointwise,pairwise_hinge,pairwise_logistic,listwise_softmax" in cmd
    assert "seed=0,1,2" in cmd and "trainer.max_epochs=2" not in cmd


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
