"""Exact search (torch) against faiss ``IndexFlatIP``: speed, peak memory and agreement.

python -m bench.search_speed --out DIR [--docs 100000 1000000] [--queries 10000]
    [--dim 128] [--k 100] [--threads 2] [--repeats 3]

Random unit vectors (seeded, so every process draws the same ones). Each (method, corpus)
runs in a fresh spawned process with the same thread count: it draws the vectors, builds the
faiss index (not timed), starts the libraries with a 2048-query search, searches once as a
warm-up while measuring the peak RSS increase (``/proc/self/clear_refs`` resets the
high-water mark first), then keeps the best of ``--repeats`` timed searches. Writes
``DIR/bench_eval.md`` and ``DIR/bench_eval.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing as mp
import os
import platform
import resource
import shlex
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

from twotower.retrieval.exact import exact_search, exact_search_bytes
from twotower.retrieval.index import recall_of_exact

METHODS = ("exact", "faiss")
WARM_QUERIES = 2048  # exact_search's default query block; faiss uses BLAS from 20 on


def unit_vectors(n: int, dim: int, seed: int) -> torch.Tensor:
    """``(n, dim)`` float32 unit vectors from a seeded torch generator."""
    x = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.normalize(x, dim=1)


def _peak_kib() -> tuple[int, str]:
    """The process's peak RSS in KiB, and how it was read."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]), "VmHWM"
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "ru_maxrss"


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return _peak_kib()[0]


def _reset_peak() -> bool:
    """Reset the peak RSS to the current RSS (Linux >= 4.0); False if not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measure(method: str, num_docs: int, args: argparse.Namespace) -> dict[str, Any]:
    """One method on one corpus, in this (fresh) process: times, peak memory, results."""
    torch.set_num_threads(args.threads)
    docs = unit_vectors(num_docs, args.dim, args.seed)  # (D, d)
    queries = unit_vectors(args.queries, args.dim, args.seed + 1)  # (Q, d)
    if method == "faiss":
        import faiss  # here, not at the top: the rest of twotower runs without faiss

        faiss.omp_set_num_threads(args.threads)
        index = faiss.IndexFlatIP(args.dim)
        index.add(docs.numpy())

        def search(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            s, i = index.search(q.numpy(), args.k)
            return torch.from_numpy(s), torch.from_numpy(i)
    else:

        def search(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return exact_search(q, docs, args.k)

    # Start the thread pools and let BLAS keep its work buffers first (a search of one query
    # block): that one-off memory stays with the process and is not the search's.
    search(queries[:WARM_QUERIES])
    gc.collect()
    reset = _reset_peak()
    before = _rss_kib() if reset else _peak_kib()[0]
    scores, indices = search(queries)  # the warm-up
    peak, how = _peak_kib()
    times = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        search(queries)
        times.append(time.perf_counter() - started)
    return {
        "seconds": min(times),
        "times": times,
        "peak_mib": max(peak - before, 0) / 1024,
        "peak_method": how + ("" if reset else " (no reset: a lower bound)"),
        "scores": scores,
        "indices": indices,
    }


def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """Every corpus size, both methods in their own processes; returns the report's data."""
    import faiss

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)  # inherited by the spawned processes
    load_start = os.getloadavg()
    rows = []
    ctx = mp.get_context("spawn")
    for num_docs in args.docs:
        result = {}
        for method in METHODS:
            with ctx.Pool(1) as pool:
                result[method] = pool.apply(measure, (method, num_docs, args))
            print(f"  {num_docs} docs, {method}: {result[method]['seconds']:.2f} s", flush=True)
        exact, flat = result["exact"], result["faiss"]
        k = exact["indices"].shape[1]
        rows.append(
            {
                "docs": num_docs,
                "queries": args.queries,
                "exact_s": exact["seconds"],
                "faiss_s": flat["seconds"],
                "exact_times": exact["times"],
                "faiss_times": flat["times"],
                "exact_qps": args.queries / exact["seconds"],
                "faiss_qps": args.queries / flat["seconds"],
                "ratio": exact["seconds"] / flat["seconds"],
                "exact_peak_mib": exact["peak_mib"],
                "faiss_peak_mib": flat["peak_mib"],
                "exact_bound_mib": exact_search_bytes(args.queries, num_docs, args.dim, args.k)
                / 2**20,
                "peak_method": exact["peak_method"],
                "recall_faiss_vs_exact": recall_of_exact(flat["indices"], exact["indices"], k),
                "max_score_diff": float((flat["scores"] - exact["scores"]).abs().max()),
            }
        )
    return {
        "command": command,
        "large": large(args) if args.large else None,
        "cpu_count": os.cpu_count(),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "faiss": faiss.__version__,
        "threads": args.threads,
        "repeats": args.repeats,
        "dim": args.dim,
        "k": args.k,
        "loadavg_start": load_start,
        "loadavg_end": os.getloadavg(),
        "rows": rows,
    }


def memmapped_corpus(path: Path, n: int, dim: int, seed: int, chunk: int = 1_000_000):
    """``(n, dim)`` seeded unit vectors in a float32 file at ``path`` (written once, in chunks
    of ``chunk`` rows), returned memory-mapped read-only as a tensor: the OS pages it in."""
    import numpy as np

    try:
        ready = np.load(path, mmap_mode="r").shape == (n, dim)
    except (OSError, ValueError):
        ready = False
    if not ready:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, dim))
        for start in range(0, n, chunk):
            rows = min(chunk, n - start)
            out[start : start + rows] = unit_vectors(rows, dim, seed + start // chunk).numpy()
        out.flush()
        del out
        tmp.rename(path)
    return torch.from_numpy(np.load(path, mmap_mode="r+"))  # r+: torch wants writable memory


def _memory_kib() -> dict[str, int]:
    """VmHWM (peak resident), RssAnon (heap) and RssFile (mapped file pages) now, in KiB."""
    wanted = ("VmHWM", "RssAnon", "RssFile")
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name = line.split(":", 1)[0]
        if name in wanted:
            out[name] = int(line.split()[1])
    return out


def large(args: argparse.Namespace) -> dict[str, Any]:
    """Exact search over a memory-mapped corpus of ``--large`` documents, and an IVF-PQ index
    beside it (recall of the exact top-k, QPS, build time, index size)."""
    import faiss

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    n, d, k = args.large, args.dim, args.k
    path = Path(args.large_dir) / f"docs-{n}x{d}-seed{args.seed}.npy"
    started = time.perf_counter()
    docs = memmapped_corpus(path, n, d, args.seed)
    write_s = time.perf_counter() - started
    queries = unit_vectors(args.large_queries, d, args.seed + 1)
    gc.collect()
    before = _memory_kib()
    peak = {"RssAnon": before["RssAnon"]}
    done = threading.Event()

    def sample() -> None:  # /proc has no peak of the heap alone: poll it
        while not done.wait(0.02):
            peak["RssAnon"] = max(peak["RssAnon"], _memory_kib()["RssAnon"])

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    scores, indices = exact_search(queries, docs, k)
    exact_s = time.perf_counter() - started
    done.set()
    sampler.join()
    after = _memory_kib()
    bound = exact_search_bytes(len(queries), n, d, k) / 2**20
    index = faiss.index_factory(d, args.ivf, faiss.METRIC_INNER_PRODUCT)
    started = time.perf_counter()
    index.train(docs[: args.ivf_train].numpy())
    for start in range(0, n, 1_000_000):
        index.add(docs[start : start + 1_000_000].numpy())
    build_s = time.perf_counter() - started
    faiss.extract_index_ivf(index).nprobe = args.nprobe
    started = time.perf_counter()
    _, approx = index.search(queries.numpy(), k)
    ivf_s = time.perf_counter() - started
    return {
        "docs": n,
        "queries": len(queries),
        "file": str(path),
        "file_gib": n * d * 4 / 2**30,
        "write_s": write_s,
        "exact_s": exact_s,
        "exact_qps": len(queries) / exact_s,
        "exact_peak_anon_mib": (peak["RssAnon"] - before["RssAnon"]) / 1024,
        "exact_file_pages_mib": after["RssFile"] / 1024,
        "exact_bound_mib": bound,
        "ivf": args.ivf,
        "nprobe": args.nprobe,
        "ivf_build_s": build_s,
        "ivf_s": ivf_s,
        "ivf_qps": len(queries) / ivf_s,
        "ivf_recall_of_exact": recall_of_exact(torch.from_numpy(approx), indices, k),
        "ivf_index_mib": faiss.serialize_index(index).nbytes / 2**20,
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def markdown(report: dict[str, Any]) -> str:
    """The report as a markdown table with the machine and versions above it."""
    lines = [
        "# Exact search vs faiss IndexFlatIP",
        "",
        f"- command: `{report['command']}`",
        f"- machine: {report['cpu_count']} CPUs ({report['cpu']}); threads: {report['threads']}",
        f"- torch {report['torch']}, faiss {report['faiss']}, python {report['python']}",
        f"- d={report['dim']}, k={report['k']}; time: best of {report['repeats']} after a "
        "warm-up (every repeat is in bench_eval.json); peak: RSS increase during the first "
        "full search (outputs included)",
        "- load average (1, 5, 15 min) at start: "
        + ", ".join(f"{x:.2f}" for x in report["loadavg_start"])
        + "; at end: "
        + ", ".join(f"{x:.2f}" for x in report["loadavg_end"]),
        "",
        "| docs | queries | exact s | faiss s | exact QPS | faiss QPS | exact / faiss "
        "| exact peak MiB | exact bound MiB | faiss peak MiB | recall of faiss | max score diff |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['docs']:,} | {r['queries']:,} | {r['exact_s']:.2f} | {r['faiss_s']:.2f} "
            f"| {r['exact_qps']:,.0f} | {r['faiss_qps']:,.0f} | {r['ratio']:.2f} "
            f"| {r['exact_peak_mib']:.0f} | {r['exact_bound_mib']:.0f} "
            f"| {r['faiss_peak_mib']:.0f} | {r['recall_faiss_vs_exact']:.6f} "
            f"| {r['max_score_diff']:.1e} |"
        )
    if report.get("large"):
        r = report["large"]
        lines += [
            "",
            f"Past memory: {r['docs']:,} documents x {report['dim']} (a {r['file_gib']:.1f} GiB "
            f"float32 file, memory-mapped; written in {r['write_s']:.0f} s), {r['queries']:,} "
            f"queries, k={report['k']}:",
            "",
            "| search | s | QPS | memory | recall of exact |",
            "|---|---:|---:|---|---:|",
            f"| exact (blocked, memory-mapped) | {r['exact_s']:.1f} | {r['exact_qps']:,.0f} "
            f"| peak heap +{r['exact_peak_anon_mib']:.0f} MiB "
            f"(bound {r['exact_bound_mib']:.0f} MiB); "
            f"{r['exact_file_pages_mib']:.0f} MiB of file pages resident | 1 |",
            f"| faiss {r['ivf']}, nprobe {r['nprobe']} | {r['ivf_s']:.2f} | {r['ivf_qps']:,.0f} "
            f"| index {r['ivf_index_mib']:.0f} MiB; built in {r['ivf_build_s']:.0f} s "
            f"| {r['ivf_recall_of_exact']:.3f} |",
        ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for the reports")
    parser.add_argument("--docs", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="timed searches; the best counts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--large", type=int, default=0, help="also a memory-mapped corpus")
    parser.add_argument("--large-queries", type=int, default=1000)
    parser.add_argument("--large-dir", default="data/bench", help="where its file is kept")
    parser.add_argument("--ivf", default="IVF4096,PQ32", help="faiss factory string")
    parser.add_argument("--ivf-train", type=int, default=200_000)
    parser.add_argument("--nprobe", type=int, default=64)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    given = sys.argv[1:] if argv is None else argv
    report = run(args, "python -m bench.search_speed " + shlex.join(given))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_eval.json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    (args.out / "bench_eval.md").write_text(table)
    print(table)
    return report


if __name__ == "__main__":
    main()
