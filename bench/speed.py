"""make bench: twotower against a bare PyTorch loop, the yardsticks, torch.mm and faiss.

python -m bench.speed --out experiments/reports/bench [--repeats 3] [--only training,...]

Every row is a ratio of measurements taken side by side in this run, interleaved (A B C, then
C B A, ...) so that machine noise hits every side alike; figures are medians over the
repeats. The framework side is ``twotower.train`` (its ``train_samples_per_s`` and
``epoch_time_s`` count training steps only); the bare side trains the same parts on the
same batches in a plain loop (:mod:`bench.bare`): the framework's overhead. The yardsticks
(:mod:`bench.yardstick`) are the same models written without twotower: whether its parts are
as fast. Needs ``make data-gcide data-ml100k``. Writes ``bench.md`` and ``bench.json`` in
``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from bench import search_speed, yardstick
from bench.bare import bare_epochs, framework_epochs, prepared
from twotower.config_check import CONF_DIR

QUIET = [
    "eval_before_training=false",
    "run_test=false",
    "~logger",
    "trainer.enable_progress_bar=false",
    "~callbacks.progress_bar",
    "~callbacks.model_summary",
    "trainer.enable_model_summary=false",
]
# (row, overrides, epochs, repeats, yardstick): ml-100k epochs last 1-3 s, so more of them. The
# text row runs the yardstick's settings (no dropout, a tower per side; its README).
TRAINING = [
    ("text DSSM, GCIDE (experiment=gcide_dssm, batch 2048)", yardstick.TEXT, 1, 3, "text"),
    ("ml-100k ID two-tower (experiment=ml100k_id)", yardstick.ML100K_ID, 5, 5, "ml100k"),
    ("ml-100k feature two-tower (experiment=ml100k)", ["experiment=ml100k"], 3, 5, None),
]
ML100K = ["experiment=ml100k_id", "trainer.max_epochs=2"]
UNIFORM = ["negatives=uniform", "negatives.num_negatives=64", "~negatives.logq"]
NEGATIVES = [  # against in_batch, on ML100K
    ("negatives=uniform, K=64", UNIFORM),
    ("negatives=mixed, 1,024 uniform", ["negatives=mixed", "negatives.num_uniform=1024"]),
]
SETTINGS = [  # (row, overrides of the changed side, of the default side)
    ("trainer.deterministic=false vs true", ["trainer.deterministic=false"], []),
    ("optimizer.fused=false (single-tensor) vs fused AdamW", ["optimizer.fused=false"], []),
    ("malloc_heap_mib=0 (glibc's thresholds) vs 256", ["malloc_heap_mib=0"], []),
    # the epoch time includes the first steps' compilation and any recompilation
    ("model.compile=true vs false", ["model.compile=true"], []),
]


def config(overrides: list[str], out: Path) -> DictConfig:
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", [*QUIET, f"paths.output_dir={out}", *overrides])


def interleaved(*fns: Callable[[], dict], repeats: int) -> list[list[dict]]:
    """``repeats`` results of each of ``fns``, in turn and in alternating order: A B C, C B A,
    A B C ..., so that machine noise hits every side alike."""
    results: list[list[dict]] = [[] for _ in fns]
    order = list(range(len(fns)))
    for r in range(repeats):
        for i in order if r % 2 == 0 else order[::-1]:
            results[i].append(fns[i]())
    return results


def with_peak(fn: Callable[..., dict], *args) -> dict:
    """``fn(*args)`` and the process's peak RSS while it ran (the high-water mark is reset
    first through /proc/self/clear_refs; without it the figure is the process's peak)."""
    search_speed._reset_peak()
    result = fn(*args)
    return {**result, "peak_mib": search_speed._peak_kib()[0] / 1024}


def median(results: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in results)


def run_yardstick(args, kind: str, epochs: int) -> dict:
    """One yardstick run: ``samples_per_s``, ``epoch_time_s`` (ml-100k) and ``val_pass_s``."""
    threads = torch.get_num_threads()
    if kind == "text":
        out = yardstick.text(args.yardstick, args.gcide, threads)
        return {**out, "epoch_time_s": float("nan")}
    # Its first epoch is left out of its median (warm-up): one more than twotower's epochs.
    out = yardstick.ml100k(args.yardstick, args.ml100k, threads, epochs + 1)
    epoch_s = out["epoch_s_median"]
    return {
        **out,
        "samples_per_s": out["train_pairs"] / epoch_s,
        "epoch_time_s": epoch_s,
        "val_pass_s": out["val_pass_s_median"],
    }


def training_rows(args, tmp: Path) -> list[dict]:
    rows = []
    for name, overrides, epochs, repeats, kind in TRAINING:
        cfg = config([*overrides, f"trainer.max_epochs={epochs}"], tmp / "train")
        sides = [
            lambda cfg=cfg: with_peak(framework_epochs, cfg),
            lambda cfg=cfg, e=epochs: with_peak(bare_epochs, cfg, e),
        ]
        if kind and args.yardstick:
            sides.append(lambda k=kind, e=epochs: run_yardstick(args, k, e))
        fw, bare, *yard = interleaved(
            *sides, repeats=max(args.repeats, repeats) if args.repeats > 1 else 1
        )
        fw_s, bare_s = median(fw, "samples_per_s"), median(bare, "samples_per_s")
        row = {
            "row": f"{name}: training samples/s",
            "twotower": fw_s,
            "reference": bare_s,
            "reference_is": "bare PyTorch loop, same parts and batches",
            "ratio": fw_s / bare_s,
            "target": "",
            "epoch_s": median(fw, "epoch_time_s"),
            "bare_epoch_s": median(bare, "epoch_time_s"),
            "epoch_ratio": median(fw, "epoch_time_s") / median(bare, "epoch_time_s"),
            "validation_s_per_epoch": median(fw, "validation_s_per_epoch"),
            "peak_memory_mib": max(r["peak_mib"] for r in fw),
            "bare_peak_memory_mib": max(r["peak_mib"] for r in bare),
            "epochs": epochs,
            "repeats": {"twotower": fw, "bare": bare, **({"yardstick": yard[0]} if yard else {})},
        }
        if yard:
            yard_s = median(yard[0], "samples_per_s")
            row |= {
                "yardstick": yard_s,
                "yardstick_ratio": fw_s / yard_s,
                "yardstick_epoch_s": median(yard[0], "epoch_time_s"),
                "target": ">= 0.85 x yardstick"
                if kind == "text"
                else "<= 1.15 x yardstick s/epoch",
            }
        rows.append(row)
        print(f"  {row['row']}: {fw_s:.0f} vs bare {bare_s:.0f}, yardstick {row.get('yardstick')}")
        if yard and kind == "ml100k":
            rows.append(validation_yardstick_row(fw, yard[0]))
    return rows


def ratio_row(row: str, a: float, b: float, reference_is: str, target: str = "") -> dict:
    """One row of the table: twotower's figure ``a`` against the reference's ``b``."""
    return {
        "row": row,
        "twotower": a,
        "reference": b,
        "reference_is": reference_is,
        "ratio": a / b,
        "target": target,
    }


def validation_yardstick_row(fw: list[dict], yard: list[dict]) -> dict:
    """ml-100k full-ranking validation as a run spends it (its validation time per epoch)
    against the yardstick's pass (every user against every item, training items masked)."""
    return ratio_row(
        "ml-100k validation pass inside a run (experiment=ml100k_id): s",
        median(fw, "validation_s_per_epoch"),
        median(yard, "val_pass_s"),
        "yardstick id_two_tower.py's pass",
        "<= 2",
    )


def paired_rows(args, tmp: Path, pairs, base: list[str], what: str) -> list[dict]:
    """Framework s/epoch of each changed setting against ``base``, interleaved."""
    rows = []
    for name, changed, default in pairs:
        cfg_a = config([*base, *changed], tmp / "a")
        cfg_b = config([*base, *default], tmp / "b")
        ra, rb = interleaved(
            lambda c=cfg_a: framework_epochs(c),
            lambda c=cfg_b: framework_epochs(c),
            repeats=args.repeats,
        )
        a, b = median(ra, "epoch_time_s"), median(rb, "epoch_time_s")
        rows.append(
            {
                "row": f"{name}: s/epoch",
                "twotower": a,
                "reference": b,
                "reference_is": what,
                "ratio": a / b,
                "target": "<= 2" if "uniform" in name and "K=64" in name else "",
                "repeats": {"changed": ra, "reference": rb},
            }
        )
        print(f"  {name}: {a:.2f} vs {b:.2f} s/epoch", flush=True)
    return rows


def threads_row(args, tmp: Path) -> dict:
    cfg = config(ML100K, tmp / "t")
    threads = torch.get_num_threads()

    def one_thread():
        torch.set_num_threads(1)
        try:
            return framework_epochs(cfg)
        finally:
            torch.set_num_threads(threads)

    ra, rb = interleaved(one_thread, lambda: framework_epochs(cfg), repeats=args.repeats)
    return ratio_row(
        f"1 torch thread vs {threads} (ml-100k ID): s/epoch",
        median(ra, "epoch_time_s"),
        median(rb, "epoch_time_s"),
        f"{threads} threads",
    )


def validation_row(args, tmp: Path) -> dict:
    """Full-corpus validation of ml-100k (943 users x 1,682 items, training items masked):
    encode both sides and rank with the module's evaluator, against one torch.mm of the same
    vectors (the arithmetic floor)."""
    datamodule, module = prepared(config(ML100K, tmp / "v"))
    module.eval()
    split, evaluator = datamodule.eval_splits["val"], module.evaluator

    def full():
        started = time.perf_counter()
        docs = evaluator.encode(module, datamodule.corpus, "doc")
        queries = evaluator.encode(module, split.queries, "query")
        evaluator.rank(split, queries, docs)
        return {"s": time.perf_counter() - started, "q": queries, "d": docs}

    warm = full()

    def mm():
        started = time.perf_counter()
        warm["q"] @ warm["d"].T
        return {"s": time.perf_counter() - started}

    ra, rb = interleaved(full, mm, repeats=max(args.repeats, 5))
    return ratio_row(
        "ml-100k full-ranking validation (encode, rank, 15 metrics): s",
        median(ra, "s"),
        median(rb, "s"),
        "torch.mm of the same vectors",
        "<= 0.05 s",
    )


def cache_rows(args, tmp: Path) -> list[dict]:
    """GCIDE's tokenised corpus: the cache entry's load, and the datamodule's whole prepare
    from the cache, against preparing it from the files."""
    from twotower.data.beir import BeirDataModule
    from twotower.data.components.cache import load_entry
    from twotower.data.components.tokenizers import TrigramTokenizer

    def prepare(cache: Path) -> dict:
        dm = BeirDataModule(TrigramTokenizer(), dir=args.gcide, cache_dir=str(cache))
        started = time.perf_counter()
        dm.prepare()
        return {"s": time.perf_counter() - started}

    def load(path: Path) -> dict:
        started = time.perf_counter()
        load_entry(path)
        return {"s": time.perf_counter() - started}

    built = prepare(tmp / "cache")  # reads, fits the tokenizer, tokenises, writes the entry
    (entry,) = (tmp / "cache").glob("beir-*")
    loads = [load(entry) for _ in range(args.repeats)]
    prepared_ = [prepare(tmp / "cache") for _ in range(args.repeats)]
    return [
        {
            "row": f"GCIDE cache entry loaded ({entry.stat().st_size / 2**20:.0f} MiB .npz): s",
            "twotower": median(loads, "s"),
            "reference": built["s"],
            "reference_is": "prepared from the files (read, fit, tokenise, write)",
            "ratio": median(loads, "s") / built["s"],
            "target": "<= 1 s",
        },
        {
            "row": "GCIDE datamodule prepared from the cache (load, splits, negatives): s",
            "twotower": median(prepared_, "s"),
            "reference": built["s"],
            "reference_is": "prepared from the files",
            "ratio": median(prepared_, "s") / built["s"],
            "target": "",
        },
    ]


def gflops_row(args, tmp: Path) -> dict:
    """Achieved GFLOP/s of the text DSSM's training step against torch.mm on its largest
    matmul shape (the dense layers and the (B, B) scores; the bag layer is memory-bound)."""
    from torch.utils.flop_counter import FlopCounterMode

    cfg = config(["experiment=gcide_dssm"], tmp / "g")
    datamodule, module = prepared(cfg)
    module.train()
    optimizer = module.configure_optimizers()
    batch = next(iter(datamodule.train_dataloader()))

    def step():
        loss = module.model_step(batch)[0]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()
    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    b = int(cfg.data.batch_size)
    x, w = torch.randn(b, 300), torch.randn(300, 300)

    def timed(fn, n):
        started = time.perf_counter()
        for _ in range(n):
            fn()
        return {"s": (time.perf_counter() - started) / n}

    ra, rb = interleaved(
        lambda: timed(step, 5), lambda: timed(lambda: x @ w, 50), repeats=args.repeats
    )
    achieved = flops / median(ra, "s") / 1e9
    mm = 2 * b * 300 * 300 / median(rb, "s") / 1e9
    return {
        "row": f"text DSSM training step, GFLOP/s ({flops / 1e9:.1f} GFLOP counted a step)",
        "twotower": achieved,
        "reference": mm,
        "reference_is": f"torch.mm ({b} x 300) @ (300 x 300)",
        "ratio": achieved / mm,
        "target": "",
    }


def search_row(args, tmp: Path) -> dict:
    report = search_speed.run(
        search_speed.parse_args(
            ["--out", str(tmp), "--docs", str(args.search_docs), "--threads",
             str(torch.get_num_threads()), "--repeats", str(args.repeats)]
        ),
        "bench.speed",
    )  # fmt: skip
    r = report["rows"][0]
    return {
        "row": f"exact search, {r['docs']:,} docs x {r['queries']:,} queries, k=100: s",
        "twotower": r["exact_s"],
        "reference": r["faiss_s"],
        "reference_is": "faiss IndexFlatIP",
        "ratio": r["ratio"],
        "target": "<= 1.5",
        "peak_memory_mib": r["exact_peak_mib"],
        "faiss_peak_mib": r["faiss_peak_mib"],
        "recall_faiss_vs_exact": r["recall_faiss_vs_exact"],
    }


def machine() -> dict[str, Any]:
    import faiss
    import pytorch_lightning

    return {
        "cpu": search_speed._cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": pytorch_lightning.__version__,
        "faiss": faiss.__version__,
        "platform": platform.platform(),
    }


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "# make bench: twotower against a bare loop, the yardsticks, torch.mm and faiss",
        "",
        f"`{report['command']}`; {m['cpu']}, {m['cpu_count']} cores, {m['torch_threads']} "
        f"torch threads; Python {m['python']}, torch {m['torch']}, Lightning "
        f"{m['lightning']}, faiss {m['faiss']}; load average {report['loadavg_start'][0]:.2f} "
        f"at the start, {report['loadavg_end'][0]:.2f} at the end; {report['seconds']:.0f} s.",
        "",
        f"Medians of {report['repeats']} interleaved repeats; the ratio is twotower / reference"
        " (for samples/s higher is better, for seconds lower is better).",
        "",
        "| what | twotower | reference | ratio | target | reference is |",
        "|---|---:|---:|---:|---|---|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['row']} | {r['twotower']:.4g} | {r['reference']:.4g} | {r['ratio']:.2f} | "
            f"{r['target']} | {r['reference_is']} |"
        )
    yard = [r for r in report["rows"] if "yardstick" in r]
    if yard:
        lines += [
            "",
            "Against the yardsticks (plain PyTorch, no twotower code; ../shared/yardstick):",
        ]
        lines += ["", "| row | twotower | yardstick | ratio | target |", "|---|---:|---:|---:|---|"]
        for r in yard:
            lines.append(
                f"| {r['row']} | {r['twotower']:.4g} | {r['yardstick']:.4g} | "
                f"{r['yardstick_ratio']:.2f} | {r['target']} |"
            )
    lines += ["", "Training rows, per epoch (training steps only) and memory:", ""]
    lines += [
        "| row | s/epoch | bare s/epoch | ratio | validation s/epoch | peak MiB | bare peak MiB |"
    ]
    lines += ["|---|---:|---:|---:|---:|---:|---:|"]
    for r in report["rows"]:
        if "epoch_s" in r:
            lines.append(
                f"| {r['row'].split(':')[0]} | {r['epoch_s']:.2f} | {r['bare_epoch_s']:.2f} | "
                f"{r['epoch_ratio']:.2f} | {r['validation_s_per_epoch']:.2f} | "
                f"{r['peak_memory_mib']:.0f} | {r['bare_peak_memory_mib']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gcide", default="data/gcide")
    parser.add_argument("--search-docs", type=int, default=200_000)
    parser.add_argument("--ml100k", default="data/ml-100k/ml-100k.inter")
    parser.add_argument(
        "--yardstick",
        type=Path,
        default=yardstick.DEFAULT_DIR if yardstick.DEFAULT_DIR.is_dir() else None,
        help="the yardstick scripts' directory (default ../shared/yardstick if present)",
    )
    parser.add_argument(
        "--only", default="", help="comma-separated row groups: training,negatives,settings,..."
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    started, load = time.perf_counter(), os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        groups = {
            "training": lambda: training_rows(args, tmp),
            "negatives": lambda: paired_rows(
                args, tmp, [(n, o, []) for n, o in NEGATIVES], ML100K, "in_batch"
            ),
            "settings": lambda: paired_rows(args, tmp, SETTINGS, ML100K, "the default"),
            "threads": lambda: [threads_row(args, tmp)],
            "validation": lambda: [validation_row(args, tmp)],
            "cache": lambda: cache_rows(args, tmp),
            "gflops": lambda: [gflops_row(args, tmp)],
            "search": lambda: [search_row(args, tmp)],
        }
        only = [g for g in args.only.split(",") if g]
        unknown = sorted(set(only) - set(groups))
        if unknown:
            raise SystemExit(f"--only {','.join(unknown)}: not one of {', '.join(groups)}")
        for name, group in groups.items():
            if not only or name in only:
                rows += group()
    report = {
        "command": "python -m bench.speed " + shlex.join(argv or sys.argv[1:]),
        "machine": machine(),
        "repeats": args.repeats,
        "loadavg_start": load,
        "loadavg_end": os.getloadavg(),
        "seconds": time.perf_counter() - started,
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (args.out / "bench.md").write_text(markdown(report))
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
