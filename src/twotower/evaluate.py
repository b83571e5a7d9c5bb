"""Full-corpus evaluation of a checkpoint: metrics.json and a TREC run file.

python -m twotower.evaluate ckpt=PATH split=test
python -m twotower.evaluate ckpt=PATH data=beir data.dir=data/gcide index=hnsw

With an approximate index, its metrics and its recall of the exact top-k are reported beside
the exact search's (keys ``<kind>/<metric>``).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from twotower.build import instantiate
from twotower.checkpoint import load_module
from twotower.config_check import CONF_DIR, check_config, run_cli
from twotower.errors import ConfigError, check_choice, user_errors
from twotower.retrieval.evaluation import CorpusEvaluator
from twotower.retrieval.index import recall_of_exact
from twotower.retrieval.runfile import write_run
from twotower.runs import nothing_left_on_error
from twotower.summary import print_metrics

log = logging.getLogger("twotower.evaluate")
SPLITS = {"val": "val", "dev": "val", "test": "test"}


def run(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate ``cfg.ckpt`` on ``cfg.split``; returns what ``metrics.json`` holds."""
    check_choice("split", cfg.split, tuple(SPLITS))
    stage = SPLITS[cfg.split]
    module, tokenizer, train_cfg = load_module(cfg.ckpt)
    metrics = list(cfg.metrics or module.evaluator.metrics)
    try:
        evaluator = CorpusEvaluator(metrics, depth=cfg.depth)
    except ConfigError as e:
        raise ConfigError("metrics", metrics, e.expected) from None
    data_cfg = cfg.data if cfg.get("data") else train_cfg.data
    datamodule = instantiate(data_cfg, "data", tokenizer=tokenizer)
    datamodule.setup("test" if stage == "test" else "validate")
    split = datamodule.eval_splits[stage]

    started = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    to_file = out / "doc_embeddings.npy" if cfg.doc_embeddings_on_disk else None
    by_length = getattr(tokenizer, "encode_by_length", False)  # a transformer's tokenizer
    docs = evaluator.encode(
        module, datamodule.corpus, "doc", cfg.batch_size, to_file, by_length
    )  # (D, d)
    encode_docs_s = time.perf_counter() - started
    queries = evaluator.encode(module, split.queries, "query", cfg.batch_size, None, by_length)
    encode_s = time.perf_counter() - started
    started = time.perf_counter()
    exact = evaluator.rank(split, queries, docs)
    search_s = time.perf_counter() - started
    result: dict[str, Any] = {
        "metrics": {f"{stage}/{k}": v for k, v in exact.metrics.items()},
        "queries": len(split.query_ids),
        "documents": len(datamodule.doc_ids),
        "encode_s": encode_s,  # documents and queries
        "encode_docs_s": encode_docs_s,
        "exact_search_s": search_s,
    }
    write_run(
        out / f"run.{stage}.trec",
        split.query_ids,
        datamodule.doc_ids,
        exact.indices,
        exact.scores,
        cfg.run_tag,
    )

    index = instantiate(cfg.index, "index")
    if index.kind != "exact" and split.exclude is not None:
        raise ConfigError(
            "index",
            index.kind,
            "cannot leave out each user's training items; these data rank exactly: index=exact",
        )
    if index.kind != "exact" and split.candidates is not None:
        raise ConfigError(
            "index",
            index.kind,
            "cannot keep to the split's candidate (cold-start) items; these data rank exactly: "
            "index=exact",
        )
    if index.kind != "exact":
        started = time.perf_counter()
        index.build(docs)
        result["index_build_s"] = time.perf_counter() - started
        started = time.perf_counter()
        approx = evaluator.rank(split, queries, docs, index=index)
        result["index_search_s"] = time.perf_counter() - started
        result["metrics"].update(
            {f"{stage}/{index.kind}/{k}": v for k, v in approx.metrics.items()}
        )
        k = min(cfg.depth, exact.indices.shape[1])
        result["metrics"][f"{stage}/{index.kind}/recall_of_exact@{k}"] = recall_of_exact(
            approx.indices, exact.indices, k
        )
        write_run(
            out / f"run.{stage}.{index.kind}.trec",
            split.query_ids,
            datamodule.doc_ids,
            approx.indices,
            approx.scores,
            f"{cfg.run_tag}-{index.kind}",
        )
    result["config"] = OmegaConf.to_container(cfg, resolve=True)
    (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    print_metrics(result, out / "metrics.json")
    return result


@hydra.main(config_path=str(CONF_DIR), config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    torch.set_grad_enabled(False)
    with user_errors(), nothing_left_on_error(HydraConfig.get().runtime.output_dir):
        check_config(cfg)
        run(cfg)


if __name__ == "__main__":
    run_cli(main, str(CONF_DIR), "evaluate")
