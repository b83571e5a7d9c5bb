"""make bench-ml100k: two towers and baselines on MovieLens-100K, 3 seeds each, one table.

python -m bench.ml100k --data data/ml-100k --out experiments/reports/ml100k

Two protocols on the same data:

- RecBole's default: all ratings positive, each user's interactions split 8:1:1 at random
  (split seed 2020), full ranking with training (and validation) items masked;
- cold-start items: 20 % of the items are held out with all their interactions and ranked
  among themselves for validation and test; the ID-only model has never seen them.

Each twotower model is trained by ``python -m twotower.train experiment=<name> seed=<s>`` (a
subprocess, as a user runs it); its test metrics are those of its best validation epoch.
The seed changes initialisation and batch order, not the split (as RecBole's table).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from bench import popularity

# (protocol, table name, experiment); "pop" is the popularity baseline, not trained.
MODELS = [
    ("random 8:1:1", "Pop (most popular)", "pop"),
    ("random 8:1:1", "MF-BPR (ID towers, pairwise logistic, 1 uniform negative)", "ml100k_bpr"),
    ("random 8:1:1", "ID two-tower (in-batch softmax)", "ml100k_id"),
    ("random 8:1:1", "feature two-tower (experiment=ml100k)", "ml100k"),
    ("cold-start items", "ID two-tower (in-batch softmax)", "ml100k_cold_id"),
    ("cold-start items", "feature two-tower, no item ID", "ml100k_cold"),
]
KS = (10, 20, 50)
COLUMNS = ["recall@10", "mrr@10", "ndcg@10", "hit@10", "precision@10"]
# The figures (RecBole 1.2.1 and others on the same protocol, 2 CPU cores).
REFERENCE = [
    ("Pop (RecBole)", 0.1275, 0.2670, 0.1418, 0.5769, None),
    ("BPR (RecBole)", 0.2466, 0.4895, 0.2928, 0.7815, 0.21),
    ("LightGCN (RecBole, patience 50)", 0.2571, 0.5071, 0.3038, 0.8028, None),
    ("DSSM with user/item features (RecBole)", 0.1070, 0.2038, 0.1188, 0.5186, 6.3),
    ("DSSM, random negatives (torch-rechub)", 0.1364, 0.3261, 0.1698, 0.6045, 5.0),
    ("two-tower reference, plain PyTorch, ID towers (3 seeds)", 0.2836, 0.5264, 0.3289, 0.8314, 2),
]


def run_one(experiment: str, seed: int, data: Path, runs: Path, extra: list[str]) -> dict:
    """Train (or rank, for Pop) one configuration with one seed; its ``metrics.json``."""
    run_dir = runs / f"{experiment}-seed{seed}"
    args = [f"experiment={experiment}", f"data.dir={data}", f"seed={seed}", *extra]
    if experiment == "pop":
        return popularity.run(["experiment=ml100k", f"data.dir={data}"], run_dir)
    # no progress bar in the logs: the callback goes with the flag
    args += [
        f"hydra.run.dir={run_dir}",
        "trainer.enable_progress_bar=false",
        "~callbacks.progress_bar",
    ]
    print(f"bench-ml100k: python -m twotower.train {' '.join(args)}", flush=True)
    log_path = runs / f"{experiment}-seed{seed}.log"
    with open(log_path, "w") as f:
        done = subprocess.run(
            [sys.executable, "-m", "twotower.train", *args], stdout=f, stderr=subprocess.STDOUT
        )
    if done.returncode:
        raise SystemExit(f"bench-ml100k: {experiment} seed {seed} failed; see {log_path}")
    return json.loads((run_dir / "metrics.json").read_text())


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(protocol: str, name: str, experiment: str, results: list[dict]) -> dict[str, Any]:
    """One row: mean and std over seeds of the test metrics, s/epoch and peak memory."""
    row: dict[str, Any] = {"protocol": protocol, "model": name, "experiment": experiment}
    names = [f"{m}@{k}" for m in ("recall", "mrr", "ndcg", "hit", "precision") for k in KS]
    for metric in names:
        values = [r["metrics"][f"test/{metric}"] for r in results]
        row[metric] = mean_std(values)
    row["seeds"] = len(results)
    if "epoch_time_s" in results[0]:
        row["s_per_epoch"] = mean_std([r["epoch_time_s"] for r in results])
        row["epochs"] = [r["epochs"] for r in results]
        row["peak_memory_mib"] = max(r["peak_memory_mib"] for r in results)
    return row


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: mean ± std over seeds, best of each protocol in bold; then the references."""
    head = "| protocol | model | " + " | ".join(COLUMNS)
    lines = [head + " | s/epoch | peak MiB |", "|---|---|" + "---:|" * (len(COLUMNS) + 2)]
    best = {}
    for row in rows:
        for c in COLUMNS:
            key = (row["protocol"], c)
            best[key] = max(best.get(key, 0.0), row[c][0])
    for row in rows:
        cells = []
        for c in COLUMNS:
            mean, std = row[c]
            text = f"{mean:.4f} ± {std:.4f}"
            cells.append(f"**{text}**" if mean == best[(row["protocol"], c)] else text)
        speed = "-"
        if "s_per_epoch" in row:
            speed = f"{row['s_per_epoch'][0]:.2f}"
        memory = f"{row['peak_memory_mib']:.0f}" if "peak_memory_mib" in row else "-"
        name = f"{row['protocol']} | {row['model']}"
        lines.append(f"| {name} | {' | '.join(cells)} | {speed} | {memory} |")
    lines += ["", "Reference figures (the issue; RecBole 1.2.1's protocol, 2 CPU cores):", ""]
    lines += [
        "| model | recall@10 | mrr@10 | ndcg@10 | hit@10 | s/epoch |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, *values, speed in REFERENCE:
        cells = " | ".join(f"{v:.4f}" for v in values)
        lines.append(f"| {name} | {cells} | {speed if speed is not None else ''} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/ml-100k"))
    parser.add_argument("--out", type=Path, default=Path("experiments/reports/ml100k"))
    parser.add_argument("--runs", type=Path, default=Path("outputs/bench-ml100k"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", nargs="*", help="experiments to run (default: all)")
    parser.add_argument("extra", nargs="*", help="overrides for every training run")
    args = parser.parse_args(argv)
    if not (args.data / "ml-100k.inter").is_file():
        raise SystemExit(f"bench-ml100k: {args.data}/ml-100k.inter not found: make data-ml100k")
    args.runs.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows = []
    for protocol, name, experiment in MODELS:
        if args.only and experiment not in args.only:
            continue
        seeds = args.seeds[:1] if experiment == "pop" else args.seeds  # Pop draws nothing
        results = [run_one(experiment, s, args.data, args.runs, args.extra) for s in seeds]
        rows.append(summarise(protocol, name, experiment, results))
    args.out.mkdir(parents=True, exist_ok=True)
    command = "make bench-ml100k  # python -m bench.ml100k " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    header = (
        "# MovieLens-100K: twotower against the baselines\n\n"
        f"Written by `{command.strip()}` in {time.perf_counter() - started:.0f} s on "
        f"{platform.processor() or platform.machine()} with torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads. Test metrics at the best validation epoch, "
        f"mean ± std over seeds {args.seeds}; s/epoch is training only (without the "
        "full-ranking validation after each epoch).\n\n"
    )
    (args.out / "bench_ml100k.md").write_text(header + table(rows))
    (args.out / "bench_ml100k.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(header + table(rows))


if __name__ == "__main__":
    main()
