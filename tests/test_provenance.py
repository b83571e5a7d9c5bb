"""A run records what reproduces it: git commit, package versions, config and seed."""

from __future__ import annotations

import json
import subprocess

import torch

from twotower.provenance import REPO, git_state, versions
from twotower.train import train


def test_metrics_json_records_commit_versions_config_and_seed(make_cfg, tmp_path):
    train(make_cfg("seed=7"))
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["seed"] == 7 and record["config"]["seed"] == 7
    prov = record["provenance"]
    assert prov["packages"]["torch"] == torch.__version__
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True)
    if head.returncode == 0:  # a clone: the commit it ran
        assert prov["git"]["commit"] == head.stdout.decode().strip()
        assert isinstance(prov["git"]["dirty"], bool)


def test_outside_a_source_tree_there_is_no_commit(tmp_path):
    assert git_state(tmp_path) == {"commit": None, "dirty": None}
    assert versions(("surely-not-installed-pkg",)) == {"surely-not-installed-pkg": None}
