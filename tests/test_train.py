"""End to end through Hydra: every tower x loss trains a few steps and writes metrics.json."""

import json

import pytest
import torch

from tests.configs import FEATURE_TOWERS, LOSSES, PRETRAINED_TOWERS, TEXT_TOWERS, options
from twotower.train import train


def test_every_tower_is_in_a_tower_x_loss_test():
    # Text towers train below, feature towers in test_recommendation.py, pretrained ones in
    # test_transformer.py: another input_kind would be in no list.
    assert sorted(TEXT_TOWERS + FEATURE_TOWERS + PRETRAINED_TOWERS) == options("tower")


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("tower", TEXT_TOWERS)
def test_every_tower_and_loss_trains(make_cfg, tmp_path, tower, loss):
    result = train(make_cfg(f"tower={tower}", f"loss={loss}", "~logger"))
    m = result["metrics"]
    assert result["global_step"] == 3
    for key in (
        "val/loss",
        "val/accuracy",
        "val/recall@1",
        "val/recall@10",
        "val/mrr@10",
        "val/ndcg@10",
        "val/map@100",
        "val/batch/recall@5",
        "val/batch/mrr@10",
        "test/ndcg@10",
        "untrained/val/ndcg@10",
    ):
        assert key in m and m[key] == m[key], key  # present and not NaN
    assert 0.0 <= m["val/recall@1"] <= m["val/recall@10"] <= m["val/recall@100"] <= 1.0
    assert (tmp_path / "run.test.trec").is_file() and (tmp_path / "run.val.trec").is_file()
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["metrics"] == m and saved["train_samples"] == 3 * 16


@pytest.mark.parametrize(
    "overrides",
    [
        ["negatives=sampled", "negatives.num_negatives=3"],
        ["negatives=presampled"],
        ["negatives=presampled", "negatives.share_across_batch=true"],
        ["negatives=presampled", "data.format=labelled", "loss=pointwise"],
        ["data.format=pairs", "negatives=in_batch"],
        ["tower@doc_tower=cnn"],
        ["model.share_towers=true", "tower=lstm"],
        ["similarity=dot"],
        ["similarity.learnable=true"],
        ["tokenizer=word"],
        ["tokenizer=char"],
        ["tokenizer=trigram", "tokenizer.buckets=512"],
        ["scheduler=cosine"],
        ["scheduler=plateau"],
        ["optimizer=sgd"],
        ["tower=lstm", "tower.pooling=attention"],
        ["experiment=dssm"],
    ],
    ids=lambda o: " ".join(o),
)
def test_options_train(make_cfg, overrides):
    result = train(make_cfg(*overrides, "~logger"))
    assert result["global_step"] == 3
    assert all(v == v for v in result["metrics"].values())


def test_shared_towers_share_weights(make_cfg):
    from twotower.build import build_for_data

    cfg = make_cfg("model.share_towers=true")
    from hydra.utils import instantiate

    dm = instantiate(cfg.data, tokenizer=instantiate(cfg.tokenizer))
    dm.setup("fit")
    module = build_for_data(cfg, dm)
    assert module.doc_tower is module.query_tower
    separate = build_for_data(make_cfg(), dm)
    assert separate.doc_tower is not separate.query_tower


@pytest.mark.parametrize("debug", ["fast_dev_run", "overfit", "limit", "profiler"])
def test_debug_configs(make_cfg, debug):
    extra = ["trainer.max_epochs=2"] if debug == "overfit" else []
    result = train(make_cfg(f"debug={debug}", "~logger", *extra))
    assert result["global_step"] > 0


def test_tensorboard_hparams_and_checkpoint(make_cfg, tmp_path):
    result = train(make_cfg("trainer.max_epochs=2"))
    events = list(tmp_path.glob("events.out.tfevents.*"))
    assert events, "TensorBoard events are written into the run directory"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"train/loss", "val/mrr@10", "final/val/mrr@10", "final/test/mrr@10"} <= set(tags)
    plugin = acc.PluginTagToContent("hparams")
    assert "_hparams_/session_start_info" in plugin
    assert result["best_checkpoint"].endswith(".ckpt")
    assert (tmp_path / "checkpoints").is_dir()
    # Training throughput counts training steps only: the validation inside fit is apart.
    assert result["validation_time_s"] > 0 and result["train_time_s"] > 0
    # The fit also writes checkpoints and runs epoch-end hooks: more than the two together.
    assert result["fit_time_s"] >= result["train_time_s"] + result["validation_time_s"]
    samples_per_s = result["train_samples"] / result["train_time_s"]
    assert result["train_samples_per_s"] == pytest.approx(samples_per_s)


def test_training_learns(make_cfg):
    """A short real run on the default generator beats the untrained model by far."""
    result = train(
        make_cfg(
            "data.num_docs=400",
            "trainer.limit_train_batches=1.0",
            "trainer.limit_val_batches=1.0",
            "trainer.max_epochs=3",
            "~logger",
        )
    )
    m = result["metrics"]
    assert m["val/batch/mrr@10"] > m["untrained/val/batch/mrr@10"] + 0.2
    assert m["val/ndcg@10"] > m["untrained/val/ndcg@10"] + 0.1  # over all 400 documents
    assert m["val/loss"] < m["untrained/val/loss"]


def test_same_command_same_metrics(make_cfg):
    first = train(make_cfg("~logger"))["metrics"]
    torch.manual_seed(123)  # disturb the global RNG: the run must seed itself
    second = train(make_cfg("~logger"))["metrics"]
    assert first == second


def test_resume_from_a_checkpoint_keeps_its_tokenizer(make_cfg, tmp_path):
    first = train(make_cfg("~logger"))
    ckpt = first["best_checkpoint"]
    # another data seed would fit another vocabulary: resuming must keep the checkpoint's
    resumed = train(make_cfg("~logger", f"ckpt_path={ckpt}", "trainer.max_epochs=2", "data.seed=5"))
    assert resumed["global_step"] == 2 * first["global_step"]
    saved = torch.load(resumed["best_checkpoint"], weights_only=True)["hyper_parameters"]
    original = torch.load(ckpt, weights_only=True)["hyper_parameters"]
    assert saved["tokenizer_state"] == original["tokenizer_state"]


def test_compiled_towers_train_and_keep_their_checkpoint_keys(make_cfg, tmp_path):
    result = train(make_cfg("model.compile=true", "~logger", "trainer.max_epochs=1"))
    assert result["global_step"] == 3 and all(v == v for v in result["metrics"].values())
    ckpt = torch.load(next(tmp_path.rglob("*.ckpt")), weights_only=True)
    assert not any("_orig_mod" in k for k in ckpt["state_dict"])


@pytest.mark.parametrize("extra", [[], ["model.grad_cache.chunk_size=5"]], ids=["auto", "manual"])
def test_scheduler_interval_step_steps_every_batch(make_cfg, tmp_path, extra):
    """model.scheduler_interval=step: a cosine over 4 steps, with Lightning's optimization
    and with GradCache's manual one, reaches its floor within one epoch of 4 batches."""
    import csv
    import math

    cfg = make_cfg(
        "scheduler=cosine",
        "scheduler.T_max=4",
        "model.scheduler_interval=step",
        "trainer.limit_train_batches=4",
        "optimizer.lr=0.01",
        "logger=csv",
        "+callbacks.lr._target_=pytorch_lightning.callbacks.LearningRateMonitor",
        "+callbacks.lr.logging_interval=step",
        *extra,
    )
    train(cfg)
    rows = list(csv.DictReader(open(next(tmp_path.rglob("metrics.csv")))))
    lrs = [float(r["lr-AdamW"]) for r in rows if r.get("lr-AdamW")]
    expected = [0.01 * (1 + math.cos(math.pi * t / 4)) / 2 for t in range(4)]
    assert lrs == pytest.approx(expected, rel=1e-6)


def test_fit_statistics_count_the_whole_fit_when_the_best_epoch_is_not_the_last(make_cfg):
    # The highest val/loss as "best" keeps an early epoch, not the last of 3. The final
    # validate/test restore that checkpoint's callback states; the counts written must still
    # be the whole fit's (they once were the best epoch's).
    overrides = [
        "callbacks.model_checkpoint.monitor=val/loss",
        "callbacks.model_checkpoint.mode=max",
    ]
    cfg = make_cfg("trainer.max_epochs=3", *overrides, "~logger")
    result = train(cfg)
    assert "epoch02" not in result["best_checkpoint"]
    assert result["epochs"] == 3 and result["global_step"] == 9
    assert result["train_samples"] == 3 * 3 * 16
    assert result["train_samples_per_s"] == pytest.approx(
        result["train_samples"] / result["train_time_s"]
    )


def test_eval_rows_false_ranks_alone(make_cfg):
    with_rows = train(make_cfg("trainer.max_epochs=2", "~logger"))["metrics"]
    alone = train(make_cfg("trainer.max_epochs=2", "data.eval_rows=false", "~logger"))["metrics"]
    rows = {k for k in with_rows if "/batch/" in k or k.endswith(("/loss", "/accuracy"))}
    assert rows and set(alone) == set(with_rows) - rows
    # The untrained model ranks the same corpus the same way. (The trained ones differ: each
    # DataLoader draws its base seed from torch's generator, so one loader fewer shifts the
    # training shuffle that follows.)
    untrained = [k for k in alone if k.startswith("untrained/")]
    assert {k: alone[k] for k in untrained} == pytest.approx(
        {k: with_rows[k] for k in untrained}, abs=1e-6
    )


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["scheduler=plateau"], "model.scheduler_monitor='val/loss'"),
        (["optimized_metric=val/batch/mrr@10"], "optimized_metric='val/batch/mrr@10'"),
    ],
)
def test_a_watched_rows_metric_without_rows_is_a_config_error(make_cfg, overrides, key):
    from twotower.errors import ConfigError

    with pytest.raises(ConfigError, match="data.eval_rows=false skips") as e:
        train(make_cfg(*overrides, "data.eval_rows=false", "~logger"))
    assert str(e.value).startswith(key)
