"""What a user meets first: divergence, config mistakes and the README's commands, as CLIs."""

from __future__ import annotations

import pytest

from tests.cli import TINY_CLI, metrics, run, runs


def last_line(done) -> str:
    return done.stderr.strip().splitlines()[-1]


def test_a_diverging_run_stops_with_one_line(tmp_path):
    blow_up = [
        "similarity=dot",
        "optimizer=sgd",
        "optimizer.lr=1e30",
        "tower.output_activation=false",
    ]
    done = run("train", *TINY_CLI, *blow_up, cwd=tmp_path, check=False)
    assert done.returncode == 3, done.stderr[-2000:]
    line = last_line(done)
    assert line.startswith("twotower: training diverged: step "), line
    assert "last good checkpoint" in line and "Traceback" not in done.stderr
    (crashed,) = runs(tmp_path)
    assert not (crashed / "metrics.json").exists()
    assert not list((crashed / "checkpoints").glob("epoch*.ckpt")), "nothing saved as best"


def test_an_exploding_loss_warns(make_cfg, recwarn):
    from twotower.train import train

    train(
        make_cfg(
            "similarity=dot",
            "optimizer.lr=1e8",
            "trainer.limit_train_batches=1.0",
            "trainer.max_epochs=2",
            "~logger",
        )
    )
    assert any("training may be diverging" in str(w.message) for w in recwarn.list)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["data=beir"], "config error: data.dir='???': is mandatory"),
        (["data=pairs", "data.train=x.tsv"], "config error: data.val='???': is mandatory"),
        (["optimizer.lr=fast"], "config error: optimizer.lr='fast': must be a float"),
        (["tower.hidden_size=10"], "(did you mean tower.hidden_sizes?)"),
        (["+tower.hidden_size=10"], "(did you mean hidden_sizes?)"),
        (
            ["trainer.max_epochs=1.5"],
            "trainer.max_epochs=1.5: must be an int or null",
        ),
    ],
)
def test_config_mistakes_end_in_one_line_before_any_work(tmp_path, args, expected):
    done = run("train", *args, cwd=tmp_path, check=False)
    assert done.returncode == 2, done.stderr[-2000:]
    assert expected in last_line(done)
    assert "Traceback" not in done.stderr and "documents:" not in done.stderr + done.stdout


def test_the_readme_commands_work_on_a_run_made_with_overrides(tmp_path):
    overrides = [*TINY_CLI, "trainer.max_epochs=1", "loss=pairwise_hinge", "model.recall_at=[1,5]"]
    run("train", *overrides, cwd=tmp_path)
    (made,) = runs(tmp_path)
    (best,) = (made / "checkpoints").glob("epoch*.ckpt")
    ckpt = best.relative_to(tmp_path)  # as the README writes it: outputs/<run>/checkpoints/...
    run("evaluate", f"ckpt={ckpt}", "split=test", "index=hnsw", cwd=tmp_path)
    run("export", f"ckpt={ckpt}", "out=exports/mine", cwd=tmp_path)
    found = run("search", "exports/mine", "some query", "-k", "3", cwd=tmp_path)
    assert found.stdout.strip()
    before = metrics(made)
    run("train", f"ckpt_path={made.relative_to(tmp_path)}", "trainer.max_epochs=2", cwd=tmp_path)
    assert runs(tmp_path) == [made]
    assert metrics(made).keys() == before.keys()
    assert len(list(made.glob("metrics.*.json"))) == 1, "the first run's metrics are kept"


def pair_files(make_cfg, tmp_path, train_rows, val_rows, same_doc: bool = False):
    """A pairs config over train.tsv and dev.tsv of made-up rows (no test file)."""
    for name, rows in (("train.tsv", train_rows), ("dev.tsv", val_rows)):
        doc = "the one document" if same_doc and name == "train.tsv" else "thing{} is tool {}"
        lines = [f"what is thing{i} for\t{doc.format(i, i)}" for i in rows]
        (tmp_path / name).write_text("query\tdoc\n" + "\n".join(lines) + "\n")
    return make_cfg(
        "data=pairs",
        f"data.train={tmp_path / 'train.tsv'}",
        f"data.val={tmp_path / 'dev.tsv'}",
        "data.batch_size=8",
        "data.cache_dir=null",
        "~logger",
    )


def test_pair_files_without_a_test_file_train_and_skip_the_test_stage(make_cfg, tmp_path, caplog):
    from twotower.train import train

    cfg = pair_files(make_cfg, tmp_path, range(60), range(0, 60, 5))
    with caplog.at_level("INFO"):
        result = train(cfg)
    assert "val/ndcg@10" in result["metrics"]
    assert not any(k.startswith("test/") for k in result["metrics"])
    assert (tmp_path / "metrics.json").is_file() and (tmp_path / "run.val.trec").is_file()
    assert "no test split: the test stage is skipped" in caplog.text


def test_data_that_cannot_teach_or_choose_warn(make_cfg, tmp_path, recwarn):
    from twotower.train import train

    train(pair_files(make_cfg, tmp_path, range(40), [3], same_doc=True))
    messages = " ".join(str(w.message) for w in recwarn.list)
    assert "one candidate, its positive: the loss is constant" in messages
    assert "the validation split has 1 judged query" in messages


def test_stopping_step_is_early_stopping_on_the_optimized_metric(make_cfg):
    from twotower.callbacks import early_stopping
    from twotower.errors import ConfigError

    stop = early_stopping(make_cfg("stopping_step=2"))
    assert (stop.monitor, stop.mode, stop.patience) == ("val/ndcg@10", "max", 2)
    with pytest.raises(ConfigError, match="stopping_step=0: must be an integer >= 1"):
        early_stopping(make_cfg("stopping_step=0"))


@pytest.mark.parametrize(
    ("module", "args", "expected"),
    [
        ("evaluate", ["split=test"], "config error: ckpt='???': is mandatory"),
        ("export", ["ckpt=x", "out=y", "index.bogus=1"], "index.bogus='1': no such key"),
    ],
)
def test_evaluate_and_export_mistakes_end_in_one_line(tmp_path, module, args, expected):
    done = run(module, *args, cwd=tmp_path, check=False)
    assert done.returncode == 2 and expected in last_line(done), done.stderr[-2000:]
