"""Compose the real Hydra config (tiny sizes) so tests take the same path as users."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from twotower.train import CONF_DIR

# Tiny data and short runs: each end-to-end run takes a second or two on one core.
TINY = [
    "data.num_docs=120",
    "data.num_topics=4",
    "data.stems_per_topic=12",
    "data.queries_per_doc=2",
    "data.eval_queries_per_doc=1",
    "data.batch_size=16",
    "data.eval_batch_size=16",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "trainer.log_every_n_steps=1",
    "trainer.enable_model_summary=false",
    "trainer.enable_progress_bar=false",
    "~callbacks.progress_bar",
    "~callbacks.model_summary",
]


@pytest.fixture(autouse=True)
def _one_thread():
    # Tests may run beside other processes on 2 cores; more threads only make them slower.
    torch.set_num_threads(1)


@pytest.fixture
def make_cfg(tmp_path):
    """``make_cfg(*overrides) -> DictConfig``: the train config with tiny sizes."""

    def _make(*overrides: str, tiny: bool = True) -> DictConfig:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(
                config_name="train",
                overrides=[*(TINY if tiny else []), f"paths.output_dir={tmp_path}", *overrides],
            )

    return _make
