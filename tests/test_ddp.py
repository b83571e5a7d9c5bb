"""trainer=ddp with 2 CPU processes (gloo): candidates span the global batch, and the loss and
the SGD update equal a single process's on the same global batch."""

import csv
import os
import subprocess
import sys

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate

from twotower.build import build_for_data

LOCAL_BATCH = 16
COMMON = [
    "data.shuffle_train=false",  # DistributedSampler then deals rows 0..2B-1 to the 2 ranks
    "trainer.max_steps=1",
    "eval_before_training=false",
    "run_test=false",
    "optimizer=sgd",
    "optimizer.momentum=0.0",  # plain SGD: a wrong gradient scale would show in the update
    "callbacks.model_checkpoint.monitor=null",
    "callbacks.model_checkpoint.filename=last",
]


def run_ddp(run_dir, cwd, *overrides: str) -> list[dict[str, str]]:
    """Train with 2 CPU processes (1 thread each); the rows of the run's metrics.csv."""
    from tests.conftest import TINY

    cmd = [sys.executable, "-m", "twotower.train", "trainer=ddp", "trainer.devices=2"]
    cmd += ["logger=csv", *TINY, *COMMON, *overrides, f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=cwd)
    assert out.returncode == 0, out.stderr[-3000:]
    return list(csv.DictReader(open(run_dir / "metrics.csv")))


@pytest.mark.parametrize(
    "extra",
    [[], ["model.grad_cache.chunk_size=5"]],
    ids=["ddp", "ddp_grad_cache"],  # GradCache averages the gradients itself: same update
)
def test_ddp_gathers_candidates_and_matches_one_process(make_cfg, tmp_path, extra):
    ddp_dir = tmp_path / "ddp"
    rows = run_ddp(ddp_dir, tmp_path, *extra)
    ddp_loss = float(next(r for r in rows if r.get("train/loss"))["train/loss"])
    # an epoch mean over the logged batches; the run has one batch
    ddp_candidates = float(next(r for r in rows if r.get("train/candidates"))["train/candidates"])
    ddp_state = torch.load(ddp_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]

    # One process, same seed, same global batch of 2 x 16 rows.
    cfg = make_cfg(*COMMON, f"data.batch_size={2 * LOCAL_BATCH}")
    pl.seed_everything(cfg.seed)
    dm = instantiate(cfg.data, tokenizer=instantiate(cfg.tokenizer))
    dm.setup("fit")
    module = build_for_data(cfg, dm)
    batch = dm.datasets["train"].__getitems__(list(range(2 * LOCAL_BATCH)))
    loss, cands, _, _ = module.model_step(batch)

    assert cands.scores.shape == (2 * LOCAL_BATCH, 2 * LOCAL_BATCH)
    assert ddp_candidates == cands.mask.sum(1).float().mean().item() > LOCAL_BATCH
    assert abs(ddp_loss - loss.item()) < 1e-5, (ddp_loss, loss.item())

    optimizer = module.optimizer(params=module.parameters())
    loss.backward()
    optimizer.step()
    for name, value in module.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(ddp_state[name], value, atol=1e-6, rtol=1e-5, msg=name)
