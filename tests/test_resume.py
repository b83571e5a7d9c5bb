"""Crash safety: kill -9 after an epoch, resume with ckpt_path=last, get the same metrics."""

from __future__ import annotations

import json

import pytest
import torch

from tests.cli import TINY_CLI, metrics, run, runs
from twotower.checkpoint_io import atomic_torch_save
from twotower.runs import resume_target, run_name, stamp

EPOCHS = ["trainer.max_epochs=3", "seed=7"]


def test_killed_run_resumes_to_the_metrics_of_an_uninterrupted_one(tmp_path):
    run("train", *TINY_CLI, *EPOCHS, cwd=tmp_path)
    (whole,) = runs(tmp_path)
    kill = ["+callbacks.kill._target_=tests.crash.KillAfterEpoch", "+callbacks.kill.epoch=1"]
    killed = run("train", *TINY_CLI, *EPOCHS, *kill, cwd=tmp_path, check=False)
    assert killed.returncode == -9, killed.stderr[-2000:]
    crashed = next(r for r in runs(tmp_path) if r != whole)
    assert not (crashed / "metrics.json").exists()
    last = torch.load(crashed / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["epoch"] == 1  # the end of the second epoch

    run("train", "ckpt_path=last", cwd=tmp_path)  # the newest run, with its own overrides
    assert runs(tmp_path) == sorted([whole, crashed]), "a resume continues its own directory"
    expected, got = metrics(whole), metrics(crashed)
    assert set(got) == set(expected)
    assert any(k.startswith("untrained/") for k in got)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key
    result = json.loads((crashed / "metrics.json").read_text())
    assert result["global_step"] == json.loads((whole / "metrics.json").read_text())["global_step"]
    assert result["resumed_from"].endswith("last.ckpt")
    # the first command's record is kept beside the resume's
    assert (crashed / ".hydra" / "overrides.yaml").read_text().count("KillAfterEpoch") == 1
    assert list((crashed / ".hydra").glob("resume-*/overrides.yaml"))
    # the TensorBoard curves continue in the run's own directory
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(crashed))
    acc.Reload()
    steps = [e.step for e in acc.Scalars("val/ndcg@10")]
    assert len(steps) >= 3 and steps == sorted(steps)


def test_a_write_that_crashes_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"epoch": 1}, path)

    def crash(obj, f):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt  # a kill during the write

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save({"epoch": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"], "no temporary file is left"


def test_run_names_are_valid_override_values():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    name = run_name("data.dir=/abs/data/gcide,loss=pairwise_hinge,model.recall_at=[1,5],~logger")
    assert "/" not in name and "=" not in name and "," not in name
    parsed = OverridesParser.create().parse_overrides([f"ckpt=outputs/x_{name}/a.ckpt"])
    assert parsed[0].value() == f"outputs/x_{name}/a.ckpt"


def test_ckpt_path_last_without_runs_is_one_config_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from twotower.errors import ConfigError

    with pytest.raises(ConfigError, match="ckpt_path='last': no run under outputs/"):
        resume_target("last")
    assert resume_target(None) is None


def test_two_runs_started_at_once_get_their_own_directories(tmp_path):
    import os
    import subprocess
    import sys

    from tests.cli import REPO

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "twotower.train", *TINY_CLI, "debug=fast_dev_run", "~logger"]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=env, stderr=subprocess.PIPE) for _ in "ab"]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    made = runs(tmp_path)
    assert len(made) == 2 and all((r / "metrics.json").is_file() for r in made)
    # within one second the names differ by their random token (Hydra's were by the second)
    first, second = stamp(), stamp()
    assert first != second
