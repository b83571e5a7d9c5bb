"""twotower.report on a hand-built sweep: grouping, mean ± std, bold, plots, missing runs."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from twotower.report import (
    ReportError,
    expected_grid,
    find_runs,
    group_runs,
    main,
    markdown_table,
    metric_names,
    read_curve,
    summarise,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# loss=a: ndcg 0.1, 0.2, 0.3 -> 0.2 ± 0.1; loss=b: 0.5, 0.5, 0.8 -> 0.6 ± sqrt(0.03)
NDCG = {("a", 0): 0.1, ("a", 1): 0.2, ("a", 2): 0.3, ("b", 0): 0.5, ("b", 1): 0.5, ("b", 2): 0.8}


def write_tb(run_dir: Path, values: list[float]) -> None:
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(run_dir)) as writer:
        for step, value in enumerate(values):
            writer.add_scalar("val/ndcg@10", value, global_step=step)


@pytest.fixture
def sweep(tmp_path) -> Path:
    """A multirun of loss=a,b x seed=0,1,2 as Hydra and train.py would leave it."""
    root = tmp_path / "multirun" / "sweep"
    root.mkdir(parents=True)
    task = {"hydra": {"overrides": {"task": ["loss=a,b", "seed=0,1,2", "data.num_docs=50"]}}}
    (root / "multirun.yaml").write_text(yaml.safe_dump(task))
    for i, ((loss, seed), ndcg) in enumerate(NDCG.items()):
        run = root / str(i)
        (run / ".hydra").mkdir(parents=True)
        overrides = [f"loss={loss}", f"seed={seed}", "data.num_docs=50"]
        overrides.append("trainer.enable_progress_bar=false")  # not a setting of its own
        (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        metrics = {
            "test/ndcg@10": ndcg,
            "test/loss": 1.0 if loss == "a" else 2.0,
            "val/ndcg@10": ndcg,
            "untrained/test/ndcg@10": 0.01,
        }
        (run / "metrics.json").write_text(json.dumps({"metrics": metrics, "seed": seed}))
    write_tb(root / "0", [0.1, 0.2, 0.3])
    write_tb(root / "1", [0.2, 0.3, 0.4])
    write_tb(root / "3", [0.4, 0.5, 0.6])
    return root


def test_find_and_group(sweep):
    runs = find_runs(sweep)
    assert [r.path.name for r in runs] == ["0", "1", "2", "3", "4", "5"]
    groups = group_runs(runs)
    assert [len(g) for g in groups.values()] == [3, 3]
    assert len(expected_grid(sweep / "multirun.yaml")) == 6


def test_table_means_std_and_bold(sweep):
    runs = find_runs(sweep)
    metrics = metric_names(runs, "test/ndcg@10")
    assert metrics == ["test/ndcg@10", "test/loss"]
    rows = summarise(runs, metrics)
    assert [r.label for r in rows] == ["loss=a", "loss=b"]
    mean, std = rows[0].stats["test/ndcg@10"]
    assert math.isclose(mean, 0.2) and math.isclose(std, 0.1)
    mean, std = rows[1].stats["test/ndcg@10"]
    assert math.isclose(mean, 0.6) and math.isclose(std, math.sqrt(0.03))
    table = markdown_table(rows, metrics).splitlines()
    assert table[0] == "| loss | test/ndcg@10 | test/loss | seeds |"
    # higher ndcg wins for b, lower loss wins for a
    assert table[2] == "| a | 0.2000 ± 0.1000 | **1.0000 ± 0.0000** | 3 |"
    assert table[3] == "| b | **0.6000 ± 0.1732** | 2.0000 ± 0.0000 | 3 |"


def test_one_run_is_shown_without_a_spread(sweep, tmp_path):
    for run in ("1", "2"):  # loss=a keeps seed 0 alone: no std to show
        (sweep / run / "metrics.json").unlink()
    md = main([str(sweep), "--out", str(tmp_path), "--allow-missing"]).read_text()
    assert "| a | 0.1000 | **1.0000** | 1 |" in md
    assert "| b | **0.6000 ± 0.1732** | 2.0000 ± 0.0000 | 3 |" in md  # two or more: mean ± std
    assert "Mean ± sample std over seeds (one run: its value alone);" in md


def test_curve_uses_the_longest_event_file(sweep):
    write_tb(sweep / "0", [0.9])  # a validate() call's own short file
    assert read_curve(sweep / "0", "val/ndcg@10") == pytest.approx({0: 0.1, 1: 0.2, 2: 0.3})
    assert read_curve(sweep / "2", "val/ndcg@10") == {}


def test_report_files(sweep, tmp_path):
    out = tmp_path / "reports"
    md = main([str(sweep), "--out", str(out), "--expect", "3"])
    assert md == out / "sweep.md"
    text = md.read_text()
    assert "`python -m twotower.report " in text and "--expect 3`" in text
    assert "**0.6000 ± 0.1732**" in text
    for png in ("sweep_test_ndcg_10.png", "sweep_curves.png"):
        data = (out / png).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000
        assert f"]({png})" in text
    assert "| `4` | loss=b | 1 | 0.5000 |" in text


def test_no_curves_without_the_tag(sweep, tmp_path):
    for f in sweep.glob("*/events.out.tfevents.*"):
        f.unlink()
    md = main([str(sweep), "--out", str(tmp_path), "--name", "x"])
    assert "No learning curves: no run logged `val/ndcg@10`." in md.read_text()
    assert not (tmp_path / "x_curves.png").exists()


def error_of(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("twotower: report error: ") and err.count("\n") == 1
    return err


def test_missing_run_is_an_error(sweep, tmp_path, capsys):
    (sweep / "5" / "metrics.json").unlink()  # loss=b, seed=2
    err = error_of([str(sweep), "--out", str(tmp_path)], capsys)
    assert f"1 of 6 runs have no metrics.json (unfinished?): loss=b,seed=2 ({sweep / '5'})" in err
    assert not (tmp_path / "sweep.md").exists()


def test_run_never_started_is_an_error(sweep, tmp_path, capsys):
    import shutil

    shutil.rmtree(sweep / "2")  # loss=a, seed=2
    err = error_of([str(sweep), "--out", str(tmp_path)], capsys)
    assert "1 of 6 runs" in err and "loss=a,seed=2 (not started)" in err


def test_expect_counts_seeds(sweep, tmp_path, capsys):
    err = error_of([str(sweep), "--out", str(tmp_path), "--expect", "4"], capsys)
    assert "loss=a has 3 finished seeds, expected 4" in err


def test_allow_missing_reports_the_rest(sweep, tmp_path):
    (sweep / "5" / "metrics.json").unlink()
    md = main([str(sweep), "--out", str(tmp_path), "--allow-missing"]).read_text()
    assert "## Missing runs" in md and "- loss=b,seed=2" in md
    assert "| b | **0.5000 ± 0.0000** | 2.0000 ± 0.0000 | 2 |" in md
    assert "| `5` | loss=b | 2 | missing |" in md


def test_empty_or_absent_dir_is_an_error(tmp_path, capsys):
    assert "no runs found" in error_of([str(tmp_path)], capsys)
    assert "no such directory" in error_of([str(tmp_path / "nope")], capsys)
    with pytest.raises(ReportError, match="no runs found"):
        find_runs(tmp_path)


@pytest.mark.slow
def test_real_sweep(tmp_path):
    """2 seeds x 2 losses through ``twotower.train -m`` (about 10 s on one core)."""
    from tests.conftest import TINY

    repo = Path(__file__).resolve().parents[1]
    sweep = tmp_path / "sweep"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "twotower.train",
        "-m",
        "seed=0,1",
        "loss=pointwise,pairwise_hinge",
    ]
    tiny = [o if o != "trainer.max_epochs=1" else "trainer.max_epochs=2" for o in TINY]
    cmd += [*tiny, f"hydra.sweep.dir={sweep}"]  # two epochs: a curve of two points
    subprocess.run(cmd, check=True, capture_output=True, env=env, cwd=repo, timeout=120)
    md = main([str(sweep), "--out", str(tmp_path / "reports"), "--expect", "2"]).read_text()
    assert "| loss | test/ndcg@10 |" in md and "| pointwise |" in md
    assert "](sweep_curves.png)" in md


def test_columns_are_the_primary_cut_off_without_batch_or_accuracy(tmp_path):
    from twotower.report import Run

    names = ["test/ndcg@10", "test/recall@10", "test/recall@100", "test/loss", "test/accuracy"]
    metrics = {m: 0.5 for m in [*names, "test/batch/mrr@10", "val/ndcg@10"]}
    runs = [Run(tmp_path, [], metrics=metrics)]
    assert metric_names(runs, "test/ndcg@10") == ["test/ndcg@10", "test/loss", "test/recall@10"]


def test_loss_column_is_left_out_when_the_runs_differ_in_their_loss(sweep, tmp_path):
    for i, (loss, _) in enumerate(NDCG):
        config = {"loss": {"_target_": f"twotower.losses.{loss}"}}
        (sweep / str(i) / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    md = main([str(sweep), "--out", str(tmp_path)]).read_text()
    assert "| loss | test/ndcg@10 | seeds |" in md  # no test/loss column
