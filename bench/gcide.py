"""make bench-gcide: twotower models and baselines on the GCIDE reverse dictionary, one table.

python -m bench.gcide --data data/gcide --out experiments/reports/gcide

Each model is trained by ``python -m twotower.train experiment=<name>`` (a subprocess, as a
user would run it) and evaluated by ``python -m twotower.evaluate`` on the test split; the
baselines rank the same corpus for the same queries and are scored by the same code.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from bench.baselines import BASELINES
from twotower.data.readers.beir import load_beir
from twotower.retrieval.ranking import Qrels, ranking_metrics

log = logging.getLogger("bench")
MODELS = {  # table name -> experiment config
    "DSSM (MLP 300-300-128)": "gcide_dssm",
    "CDSSM (CNN)": "gcide_cdssm",
    "LSTM-DSSM": "gcide_lstm",
}
BASELINE_NAMES = {
    "bm25": "BM25 (bm25s)",
    "tfidf": "letter-trigram TF-IDF",
    "minilm": "all-MiniLM-L6-v2, zero-shot",
}
METRICS = ["recall@1", "recall@10", "recall@100", "mrr@10", "ndcg@10"]


def _python(*args: str, log_path: Path) -> None:
    """Run ``python -m ...`` and keep its output; a failure stops the benchmark."""
    with open(log_path, "w") as f:
        done = subprocess.run([sys.executable, "-m", *args], stdout=f, stderr=subprocess.STDOUT)
    if done.returncode:
        raise SystemExit(f"bench-gcide: {' '.join(args[:2])} failed; see {log_path}")


def train_model(name: str, experiment: str, data: Path, runs: Path, extra: list[str]) -> dict:
    """Train one experiment, evaluate its best checkpoint on test; the row of the table."""
    run_dir = runs / experiment
    run_dir.mkdir(parents=True, exist_ok=True)
    args = [f"experiment={experiment}", f"data.dir={data}", f"hydra.run.dir={run_dir}", *extra]
    print(f"bench-gcide: training {name}: python -m twotower.train {' '.join(args)}", flush=True)
    _python("twotower.train", *args, log_path=runs / f"{experiment}.train.log")
    trained = json.loads((run_dir / "metrics.json").read_text())
    eval_dir = run_dir / "evaluate"
    _python(
        "twotower.evaluate",
        f"ckpt={trained['best_checkpoint']}",
        f"out={eval_dir}",
        "index=flat",
        "split=test",
        log_path=runs / f"{experiment}.evaluate.log",
    )
    evaluated = json.loads((eval_dir / "metrics.json").read_text())
    return {
        "model": name,
        "command": f"python -m twotower.train {' '.join(args)}",
        "metrics": {m: evaluated["metrics"][f"test/{m}"] for m in METRICS},
        "train_s": trained["train_time_s"],
        "epochs": trained["epochs"],
        "index_s": evaluated["encode_s"] + evaluated.get("index_build_s", 0.0),
    }


def run_baseline(key: str, data, qrels: Qrels, query_rows: list[int]) -> dict:
    """Rank the corpus with one baseline for the judged test queries."""
    print(f"bench-gcide: baseline {BASELINE_NAMES[key]}", flush=True)
    queries = [data.query_texts[i] for i in query_rows]
    started = time.perf_counter()
    _, indices = BASELINES[key](data.corpus_texts, queries, 100)  # (Q, 100)
    seconds = time.perf_counter() - started
    metrics = ranking_metrics(indices[qrels.query_rows], qrels, METRICS)
    return {"model": BASELINE_NAMES[key], "metrics": metrics, "train_s": None, "index_s": seconds}


def table(rows: list[dict[str, Any]]) -> str:
    """A markdown table, the best value of each metric in bold."""
    best = {m: max(r["metrics"][m] for r in rows) for m in METRICS}
    head = [
        "model",
        *(m.replace("recall", "R").replace("mrr", "MRR").replace("ndcg", "NDCG") for m in METRICS),
        "train (s)",
        "index (s)",
    ]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for r in rows:
        cells = [
            f"**{r['metrics'][m]:.4f}**" if r["metrics"][m] == best[m] else f"{r['metrics'][m]:.4f}"
            for m in METRICS
        ]
        train_s = "-" if r["train_s"] is None else f"{r['train_s']:.0f} ({r['epochs']} ep.)"
        lines.append(
            f"| {r['model']} | " + " | ".join(cells) + f" | {train_s} | {r['index_s']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.gcide", description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("data/gcide"))
    parser.add_argument("--out", type=Path, default=Path("experiments/reports/gcide"))
    parser.add_argument(
        "--runs",
        type=Path,
        default=Path("outputs/bench-gcide"),
        help="run directories and logs (checkpoints: keep out of the report)",
    )
    parser.add_argument("--models", nargs="*", default=list(MODELS.values()))
    parser.add_argument("--baselines", nargs="*", default=list(BASELINE_NAMES))
    parser.add_argument("overrides", nargs="*", help="extra overrides for every training run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("bm25s").setLevel(logging.WARNING)  # it logs every step at DEBUG
    if not (args.data / "corpus.jsonl").is_file():
        raise SystemExit(f"bench-gcide: no BEIR data at {args.data}: run `make data-gcide` first")
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    data = load_beir(args.data, splits=("test",))
    query_index = {q: i for i, q in enumerate(data.query_ids)}
    doc_index = {d: i for i, d in enumerate(data.corpus_ids)}
    judged = list(data.qrels["test"])
    qrels = Qrels.from_dict(data.qrels["test"], {q: i for i, q in enumerate(judged)}, doc_index)
    rows = [run_baseline(k, data, qrels, [query_index[q] for q in judged]) for k in args.baselines]
    names = {v: k for k, v in MODELS.items()}
    for experiment in args.models:
        rows.append(
            train_model(names[experiment], experiment, args.data, args.runs, args.overrides)
        )

    result = {
        "test_queries": len(judged),
        "documents": len(data.corpus_ids),
        "rows": rows,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "torch": torch.__version__,
        "wall_time_s": time.perf_counter() - started,
        "command": "python -m bench.gcide " + " ".join(argv or sys.argv[1:]),
    }
    (args.out / "bench_gcide.json").write_text(json.dumps(result, indent=2) + "\n")
    md = (
        f"# GCIDE reverse dictionary: test split\n\n"
        f"{len(judged)} test queries (definitions) rank all {len(data.corpus_ids)} headwords. "
        f"Produced by `{result['command']}` in {result['wall_time_s'] / 60:.0f} min on "
        f"{result['machine']} (torch {result['torch']}).\n\n{table(rows)}\n\n"
        "Index time: encoding the corpus plus building the index (models), or indexing and "
        "searching (baselines). Commands of the models:\n\n"
        + "\n".join(f"- {r['model']}: `{r['command']}`" for r in rows if "command" in r)
        + "\n"
    )
    (args.out / "bench_gcide.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
