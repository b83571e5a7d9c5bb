"""Most-popular baseline in the same harness: same data module, masks, metrics and run files.

Every user gets the items ranked by their number of training interactions (ties: lower item
index first), with the user's training items (and validation items when testing) left out,
exactly as the towers are evaluated.

    python -m bench.popularity --out outputs/pop experiment=ml100k
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from twotower.build import instantiate
from twotower.config_check import CONF_DIR
from twotower.errors import user_errors
from twotower.retrieval.evaluation import Ranking, evaluate
from twotower.retrieval.runfile import write_run
from twotower.summary import print_metrics


def popularity(datamodule, stage: str, metrics: list[str], depth: int) -> Ranking:
    """Rank the catalogue by training popularity for every judged user of ``stage``."""
    split = datamodule.eval_splits[stage]
    counts = datamodule.catalogue().doc_counts.float()  # (N,)
    users = torch.ones(len(split.query_ids), 1)  # every user scores item i as counts[i]
    return evaluate(
        users,
        counts[:, None],
        split.judged,
        metrics,
        depth=depth,
        exclude=split.exclude,
        candidates=split.candidates,
    )


def run(overrides: list[str], out: Path) -> dict:
    """Compose the train config with ``overrides``, rank by popularity, write the run dir."""
    started = time.perf_counter()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    datamodule = instantiate(cfg.data, "data", tokenizer=instantiate(cfg.tokenizer, "tokenizer"))
    datamodule.setup("fit")
    metrics: dict[str, float] = {}
    out.mkdir(parents=True, exist_ok=True)
    for stage in ("val", "test"):
        ranking = popularity(datamodule, stage, list(cfg.model.metrics), cfg.model.run_depth)
        metrics.update({f"{stage}/{k}": v for k, v in ranking.metrics.items()})
        split = datamodule.eval_splits[stage]
        write_run(
            out / f"run.{stage}.trec",
            split.query_ids,
            datamodule.doc_ids,
            ranking.indices,
            ranking.scores,
            "pop",
        )
    result = {"model": "pop", "metrics": metrics, "wall_time_s": time.perf_counter() - started}
    (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    print_metrics(result, out / "metrics.json")
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="run directory to write")
    parser.add_argument("overrides", nargs="*", help="train config overrides (experiment=...)")
    args = parser.parse_args(argv)
    with user_errors():
        run(args.overrides, args.out)


if __name__ == "__main__":
    main()
