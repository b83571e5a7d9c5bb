"""make bench-grad-cache: step time and peak memory against batch size, with and without GradCache.

python -m bench.grad_cache --out experiments/reports/bench-grad-cache [--batches 2048 8192]

Each (recipe, batch size, chunk size) is measured in a fresh process, so that its peak RSS is
its own: the GCIDE data are loaded, the peak is reset, one warm-up step runs, then ``--steps``
training steps (forward, backward, AdamW) are timed on the same batch. ``chunk 0`` is the
uncached step; the peak is the process's RSS high-water mark during the warm-up and timed
steps, above its RSS once the data and the batch are in memory.
Needs ``make data-gcide``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

RECIPES = {"dssm": ["experiment=gcide_dssm"], "lstm": ["experiment=gcide_lstm"]}


def one(recipe: str, batch: int, chunk: int, steps: int, gcide: str) -> dict:
    """Measure in this process (run by :func:`main` through a subprocess)."""
    import torch

    from bench import search_speed
    from bench.bare import prepared
    from bench.speed import config
    from twotower.grad_cache import GradCache

    overrides = [*RECIPES[recipe], f"data.dir={gcide}", f"data.batch_size={batch}"]
    datamodule, module = prepared(config(overrides, Path("/tmp/bench-grad-cache")))
    module.train()
    optimizer = module.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    batch_rows = next(iter(datamodule.train_dataloader()))
    cache = GradCache(chunk) if chunk else None

    def step():
        optimizer.zero_grad(set_to_none=True)
        if cache is None:
            loss = module.model_step(batch_rows)[0]
            loss.backward()
        else:
            loss, _ = cache.backward(module, batch_rows)
        optimizer.step()
        return float(loss)

    search_speed._reset_peak()  # the peak counts from here: data loaded, the batch built
    before = search_speed._rss_kib()
    step()  # warm-up: allocator pools and the optimizer's state
    seconds = []
    for _ in range(steps):
        started = time.perf_counter()
        loss = step()
        seconds.append(time.perf_counter() - started)
    peak = search_speed._peak_kib()[0]
    return {
        "recipe": recipe,
        "batch": len(batch_rows["doc_id"]),
        "chunk": chunk,
        "step_s": statistics.median(seconds),
        "peak_extra_mib": (peak - before) / 1024,
        "peak_mib": peak / 1024,
        "loss": loss,
        "threads": torch.get_num_threads(),
    }


def markdown(report: dict) -> str:
    lines = [
        "# make bench-grad-cache: GradCache's step time and memory against batch size",
        "",
        f"`{report['command']}`; {report['cpu']}, {os.cpu_count()} cores; {report['seconds']:.0f}"
        " s. One fresh process per row; medians of the timed steps; `chunk 0`: no GradCache.",
        "",
        "| recipe | batch | chunk | s/step | peak MiB above the loaded data | peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        if "error" in r:
            lines.append(f"| {r['recipe']} | {r['batch']} | {r['chunk']} | {r['error']} | | |")
            continue
        lines.append(
            f"| {r['recipe']} | {r['batch']} | {r['chunk']} | {r['step_s']:.3f} | "
            f"{r['peak_extra_mib']:.0f} | {r['peak_mib']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--batches", nargs="+", type=int, default=[2048, 8192, 16384])
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--gcide", default="data/gcide")
    parser.add_argument("--one", nargs=3, metavar=("RECIPE", "BATCH", "CHUNK"))
    args = parser.parse_args(argv)
    if args.one:  # the child process
        recipe, batch, chunk = args.one
        print(json.dumps(one(recipe, int(batch), int(chunk), args.steps, args.gcide)))
        return {}
    from bench import search_speed

    started, rows = time.perf_counter(), []
    for recipe in args.recipes:
        for batch in args.batches:
            for chunk in (0, args.chunk):
                cmd = [sys.executable, "-m", "bench.grad_cache", "--one", recipe, str(batch)]
                cmd += [str(chunk), "--steps", str(args.steps), "--gcide", args.gcide]
                out = subprocess.run(cmd, capture_output=True, text=True)
                if out.returncode:  # e.g. killed for memory: the row says so
                    err = (out.stderr.strip().splitlines() or ["?"])[-1][:120]
                    rows.append({"recipe": recipe, "batch": batch, "chunk": chunk, "error": err})
                else:
                    rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(rows[-1], flush=True)
    report = {
        "command": "python -m bench.grad_cache " + shlex.join(argv or sys.argv[1:]),
        "cpu": search_speed._cpu_model(),
        "seconds": time.perf_counter() - started,
        "rows": rows,
    }
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "bench_grad_cache.json").write_text(json.dumps(report, indent=2) + "\n")
        (args.out / "bench_grad_cache.md").write_text(markdown(report))
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
