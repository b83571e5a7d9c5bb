"""Compose the real Hydra config (tiny sizes) so tests take the same path as users."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from twotower.config_check import CONF_DIR

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
        base = TINY if tiny else []
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            plain = compose(config_name="train", overrides=list(overrides))
            if not plain.data._target_.endswith("SyntheticDataModule"):
                base = [o for o in base if not o.startswith("data.")]  # the generator's sizes
            return compose(
                config_name="train",
                overrides=[*base, f"paths.output_dir={tmp_path}", *overrides],
            )

    return _make


def write_beir(directory, num_docs: int = 120, seed: int = 0):
    """A small BEIR directory from the synthetic generator; some queries get a second,
    graded relevant document (grade 2) so graded, multi-relevant qrels are exercised."""
    import json
    from pathlib import Path

    from twotower.data.components.generator import SyntheticGenerator

    data = SyntheticGenerator(
        num_docs=num_docs,
        num_topics=4,
        stems_per_topic=12,
        queries_per_doc=2,
        eval_queries_per_doc=1,
        seed=seed,
    ).generate()
    directory = Path(directory)
    (directory / "qrels").mkdir(parents=True)
    with open(directory / "corpus.jsonl", "w") as f:
        for i, text in enumerate(data.docs):
            f.write(json.dumps({"_id": f"d{i}", "title": "", "text": text}) + "\n")
    queries = open(directory / "queries.jsonl", "w")
    for name, split in (("train", data.train), ("dev", data.val), ("test", data.test)):
        with open(directory / "qrels" / f"{name}.tsv", "w") as f:
            f.write("query-id\tcorpus-id\tscore\n")
            for i, (text, pos) in enumerate(zip(split.queries, split.pos_ids, strict=True)):
                qid = f"{name}{i}"
                queries.write(json.dumps({"_id": qid, "text": text}) + "\n")
                f.write(f"{qid}\td{pos}\t1\n")
                if i % 3 == 0:  # a second relevant document, graded higher
                    f.write(f"{qid}\td{split.neg_ids[i][0]}\t2\n")
    queries.close()
    return directory


@pytest.fixture
def beir_dir(tmp_path):
    return write_beir(tmp_path / "beir")


@pytest.fixture(scope="session")
def tiny_hf(tmp_path_factory):
    """The directory of a tiny random BERT and its tokenizer (skips without the hf extra)."""
    from tests.hf_tiny import HAS_HF, write_tiny_model

    if not HAS_HF:
        pytest.skip("needs the hf extra (transformers)")
    return write_tiny_model(tmp_path_factory.mktemp("hf") / "tiny-bert")
