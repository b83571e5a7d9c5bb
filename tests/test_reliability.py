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
