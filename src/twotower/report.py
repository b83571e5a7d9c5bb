"""Summarise a sweep: a Markdown table of mean ± std over seeds per setting, with plots.

python -m twotower.report multirun/2024-05-01_12-00-00 --name loss_ablation
python -m twotower.report RUN_DIR --metric test/mrr@10 --expect 3   # -> outputs/reports/

A run is any directory under RUN_DIR with ``.hydra/overrides.yaml``; it is finished when it
also has ``metrics.json``. Runs that differ only in ``seed`` (and in keys that do not change
the model) form one setting. Missing or unfinished runs are an error unless ``--allow-missing``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import shlex
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser

# Keys that say where a run writes or how it prints, not what it trains.
IGNORED_KEYS = (
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "~callbacks.progress_bar",
    "~callbacks.model_summary",
)
IGNORED_PREFIXES = ("hydra.", "paths.")


class ReportError(ValueError):
    """A sweep that cannot be reported as asked: the message says what and where."""


@dataclass
class Run:
    """One run directory: its overrides (as written by Hydra) and its metrics, if finished."""

    path: Path
    overrides: list[str]
    metrics: dict[str, float] | None = None
    seed: str | None = None
    params: dict[str, str] = field(default_factory=dict)  # override key -> value, for matching

    @property
    def finished(self) -> bool:
        return self.metrics is not None


@dataclass
class Row:
    """One setting of the table: its swept values, ``(mean, std)`` per metric and its runs."""

    label: str
    values: dict[str, str]
    stats: dict[str, tuple[float, float]]
    runs: list[Run]


_parser = OverridesParser.create()


def parse_overrides(overrides: list[str]) -> dict[str, str]:
    """``["loss=a", "~callbacks.x"]`` -> ``{"loss": "a", "~callbacks.x": "null"}``."""
    return {
        o.get_key_element(): o.get_value_element_as_str()
        for o in _parser.parse_overrides(overrides)
    }


def ignored(key: str) -> bool:
    """Keys left out of a setting: the seed, and keys that do not change the model."""
    return key == "seed" or key in IGNORED_KEYS or key.lstrip("~+").startswith(IGNORED_PREFIXES)


def _natural(path: Path) -> list:
    # Hydra numbers jobs 0..N: 10 sorts after 9, not after 1
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def find_runs(run_dir: Path) -> list[Run]:
    """Every run under ``run_dir`` (itself included), in natural order of their paths."""
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir}: no such directory")
    runs = []
    for file in sorted(run_dir.glob("**/.hydra/overrides.yaml"), key=_natural):
        path = file.parent.parent
        overrides = [str(o) for o in yaml.safe_load(file.read_text()) or []]
        params = parse_overrides(overrides)
        run = Run(path, overrides, seed=params.get("seed"), params=params)
        if (path / "metrics.json").is_file():
            result = json.loads((path / "metrics.json").read_text())
            run.metrics = result["metrics"]
            run.seed = str(result.get("seed", run.seed))
        runs.append(run)
    if not runs:
        raise ReportError(f"{run_dir}: no runs found (no */.hydra/overrides.yaml)")
    return runs


def setting_of(run: Run) -> tuple[str, ...]:
    """The overrides that define a run's setting: all but the seed and the ignored keys."""
    return tuple(sorted(f"{k}={v}" for k, v in run.params.items() if not ignored(k)))


def group_runs(runs: list[Run]) -> dict[tuple[str, ...], list[Run]]:
    """Runs by setting, in order of first appearance."""
    groups: dict[tuple[str, ...], list[Run]] = {}
    for run in runs:
        groups.setdefault(setting_of(run), []).append(run)
    return groups


def swept_keys(runs: list[Run]) -> list[str]:
    """Setting keys whose value differs between runs (the table's leading columns)."""
    keys = dict.fromkeys(k for r in runs for k in r.params if not ignored(k))
    return [k for k in keys if len({r.params.get(k) for r in runs}) > 1]


def expected_grid(multirun_yaml: Path) -> list[dict[str, str]]:
    """The runs a sweep asked for: the product of its swept task overrides (seed included)."""
    task = yaml.safe_load(multirun_yaml.read_text())["hydra"]["overrides"]["task"] or []
    axes = {
        o.get_key_element(): list(o.sweep_string_iterator())
        for o in _parser.parse_overrides([str(t) for t in task])
        if o.is_sweep_override()
        and (o.get_key_element() == "seed" or not ignored(o.get_key_element()))
    }
    return [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())]


VARIANT = "+variant"  # the key twotower.ablate sweeps its named variants with


def label(params: dict[str, str], keys: list[str]) -> str:
    """``loss=hinge,lstm_last``: a setting's swept values (a variant by its name)."""
    parts = [params[k] if k == VARIANT else f"{k}={params[k]}" for k in keys if k in params]
    return ",".join(parts) or "defaults"


def missing_runs(
    runs: list[Run], grid: list[dict[str, str]], expect: int | None
) -> tuple[int, list[str], list[str]]:
    """``(runs expected, missing, short)``: unfinished runs and grid points with no run, and
    the settings with a number of finished seeds other than ``expect``."""
    keys = [*swept_keys(runs), "seed"]
    missing = [f"{label(r.params, keys)} ({r.path})" for r in runs if not r.finished]
    not_started = [
        f"{label(point, list(point))} (not started)"
        for point in grid
        if not any(all(r.params.get(k) == v for k, v in point.items()) for r in runs)
    ]
    short = []
    for runs_of in group_runs(runs).values() if expect is not None else []:
        n = sum(r.finished for r in runs_of)
        if n != expect:
            setting = label(runs_of[0].params, keys[:-1])
            short.append(f"{setting} has {n} finished seeds, expected {expect}")
    return len(runs) + len(not_started), missing + not_started, short


NOT_COMPARABLE = ("/accuracy",)


def metric_names(runs: list[Run], primary: str) -> list[str]:
    """The primary metric, then every other metric of its stage that all finished runs share."""
    finished = [r for r in runs if r.finished]
    shared = set.intersection(*(set(r.metrics) for r in finished))
    if primary not in shared:
        stage = sorted(m for m in shared if "/" in m)
        raise ReportError(
            f"metric {primary} is not in every metrics.json; shared: {', '.join(stage)}"
        )
    stage = primary.split("/")[0] + "/"
    # accuracy ranks the candidates the negatives strategy built and the in-batch metrics the
    # batch's documents (as many as data.batch_size): neither compares across settings.
    other = (m for m in shared if m.startswith(stage) and m != primary)
    # The primary's cut-off only (ndcg@10: recall@10, mrr@10, ...): a readable table.
    cut = "@" + primary.split("@")[1] if "@" in primary else None
    same_cut = [m for m in other if "@" not in m or cut is None or m.endswith(cut)]
    return [
        primary,
        *sorted(m for m in same_cut if not m.endswith(NOT_COMPARABLE) and "/batch/" not in m),
    ]


def summarise(runs: list[Run], metrics: list[str]) -> list[Row]:
    """One row per setting with a finished run: mean and sample std over its seeds."""
    keys = swept_keys(runs)
    rows = []
    for runs_of in group_runs(runs).values():
        done = [r for r in runs_of if r.finished]
        if not done:
            continue
        stats = {}
        for m in metrics:
            xs = [r.metrics[m] for r in done]
            stats[m] = (statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0)
        values = {k: done[0].params.get(k, "(default)") for k in keys}
        rows.append(Row(label(done[0].params, keys), values, stats, done))
    return rows


def loss_settings(runs: list[Run]) -> set[str]:
    """The runs' distinct loss and negatives configs (from their ``.hydra/config.yaml``):
    a loss value only compares between runs with the same loss over the same candidates."""
    found = set()
    for run in runs:
        config = run.path / ".hydra" / "config.yaml"
        if config.is_file():
            cfg = yaml.safe_load(config.read_text())
            found.add(json.dumps([cfg.get("loss"), cfg.get("negatives")], sort_keys=True))
    return found


def grid_position(row: Row, grid: list[dict[str, str]]) -> int:
    """Where a setting's first run comes in the sweep (the ablation file's order)."""
    params = row.runs[0].params
    for i, point in enumerate(grid):
        if all(params.get(k) == v for k, v in point.items() if k != "seed"):
            return i
    return len(grid)


def lower_is_better(metric: str) -> bool:
    return "loss" in metric


def markdown_table(rows: list[Row], metrics: list[str]) -> str:
    """The settings table: mean ± std per metric (a setting of one run: its value alone);
    the best mean of each metric column in bold."""
    keys = list(rows[0].values) or ["setting"]
    best = {m: (min if lower_is_better(m) else max)(r.stats[m][0] for r in rows) for m in metrics}
    lines = [
        "| " + " | ".join([*(k.lstrip("+") for k in keys), *metrics, "seeds"]) + " |",
        "|" + "---|" * len(keys) + "---:|" * (len(metrics) + 1),
    ]
    for row in rows:
        cells = list(row.values.values()) or [row.label]
        for m in metrics:
            mean, std = row.stats[m]
            # One run has no spread: "± 0.0000" would read as a measured zero.
            cell = f"{mean:.4f}" if len(row.runs) == 1 else f"{mean:.4f} ± {std:.4f}"
            cells.append(f"**{cell}**" if mean == best[m] else cell)
        lines.append("| " + " | ".join([*cells, str(len(row.runs))]) + " |")
    return "\n".join(lines)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and in CI
    import matplotlib.pyplot as plt

    return plt


def plot_bars(rows: list[Row], metric: str, path: Path, title: str) -> None:
    """Mean of ``metric`` per setting with std error bars."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(rows) + 2), 4.5))
    means = [r.stats[metric][0] for r in rows]
    stds = [r.stats[metric][1] for r in rows]
    bars = ax.bar(range(len(rows)), means, yerr=stds, capsize=4, color="tab:blue", alpha=0.8)
    for bar, mean, std, row in zip(bars, means, stds, rows, strict=True):
        ax.annotate(
            f"{mean:.3f}\nn={len(row.runs)}",
            (bar.get_x() + bar.get_width() / 2, mean + std),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.margins(y=0.15)  # room for the labels above the error bars
    ax.set_xticks(range(len(rows)), [r.label for r in rows], rotation=30, ha="right")
    ax.set_ylabel(f"{metric} (mean ± std over seeds)")
    ax.set_xlabel("setting")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def read_curve(run_dir: Path, tag: str) -> dict[int, float]:
    """``step -> value`` of ``tag`` from the run's event file with the most points of it (the
    training one; ``validate``/``test`` calls write their own short files)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    best: dict[int, float] = {}
    for file in sorted(run_dir.glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(file), size_guidance={"scalars": 0})
        acc.Reload()
        if tag in acc.Tags()["scalars"]:
            points = {e.step: e.value for e in acc.Scalars(tag)}
            if len(points) > len(best):
                best = points
    return best


def plot_curves(rows: list[Row], tag: str, path: Path, title: str) -> bool:
    """Mean over seeds of ``tag`` per step for each setting (band: ± std); False if no run
    logged ``tag``, and then no file is written."""
    curves = {}
    for row in rows:
        per_run = [c for c in (read_curve(r.path, tag) for r in row.runs) if c]
        steps = sorted({s for c in per_run for s in c})
        if steps:
            ys = [[c[s] for c in per_run if s in c] for s in steps]
            curves[row.label] = (steps, ys)
    if not curves:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, (steps, ys) in curves.items():
        mean = [statistics.fmean(y) for y in ys]
        std = [statistics.stdev(y) if len(y) > 1 else 0.0 for y in ys]
        (line,) = ax.plot(steps, mean, marker="o", markersize=3, label=name)
        lo = [m - s for m, s in zip(mean, std, strict=True)]
        hi = [m + s for m, s in zip(mean, std, strict=True)]
        ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.15)
    ax.set_xlabel("step")
    ax.set_ylabel(f"{tag} (mean ± std over seeds)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def slug(metric: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", metric).strip("_")


def yaml_value(value: object) -> str:
    """``None`` -> ``null``, ``False`` -> ``false``: values as a Hydra override writes them."""
    return yaml.safe_dump(value, default_flow_style=True).removesuffix("\n...\n").strip()


def variant_lines(variants: dict[str, dict]) -> list[str]:
    """What each named variant of an ablation sets (``+variant=<name>`` in the runs)."""
    if not variants:
        return []
    lines = ["Variants:", ""]
    for name, overrides in variants.items():
        sets = (f"`{k}={yaml_value(v)}`" for k, v in overrides.items())
        lines.append(f"- `{name}`: " + " ".join(sets))
    return [*lines, ""]


def write_report(
    run_dir: Path,
    out_dir: Path,
    name: str,
    metric: str = "test/ndcg@10",
    expect: int | None = None,
    allow_missing: bool = False,
    command: str = "",
) -> Path:
    """Find, check, group, tabulate and plot the runs under ``run_dir``; returns the .md path."""
    runs = find_runs(run_dir)
    multirun = run_dir / "multirun.yaml"
    grid = expected_grid(multirun) if multirun.is_file() else []
    total, missing, short = missing_runs(runs, grid, expect)
    if (missing or short) and not allow_missing:
        parts = list(short)
        if missing:
            head = f"{len(missing)} of {total} runs have no metrics.json (unfinished?): "
            parts.insert(0, head + ", ".join(missing))
        raise ReportError("; ".join(parts) + " (--allow-missing reports anyway)")
    if not any(r.finished for r in runs):
        raise ReportError(f"{run_dir}: no run has a metrics.json yet")
    metrics = metric_names(runs, metric)
    if len(loss_settings(runs)) > 1:  # values of different losses do not compare
        metrics = [m for m in metrics if m == metric or not m.endswith("/loss")]
    rows = sorted(summarise(runs, metrics), key=lambda row: grid_position(row, grid))
    keys = swept_keys(runs)
    fixed = [o for o in runs[0].overrides if all(o in r.overrides for r in runs)]

    out_dir.mkdir(parents=True, exist_ok=True)
    bars = out_dir / f"{name}_{slug(metric)}.png"
    plot_bars(rows, metric, bars, f"{name}: {metric}")
    tag = "val/" + metric.split("/", 1)[-1]
    curves = out_dir / f"{name}_curves.png"
    has_curves = plot_curves(rows, tag, curves, f"{name}: {tag} during training")

    ablation = run_dir / "ablation.yaml"
    spec = yaml.safe_load(ablation.read_text()) if ablation.is_file() else {}
    single = " (one run: its value alone)" if any(len(r.runs) == 1 for r in rows) else ""
    lines = [
        f"# {name}",
        "",
        spec.get("description", ""),
        "",
        f"`{command}`" if command else "",
        "",
        f"Runs: `{run_dir}` ({sum(r.finished for r in runs)} finished, "
        f"{len(rows)} settings). Mean ± sample std over seeds{single}; best mean in **bold** "
        "(lower is better only for losses).",
        "",
        "Fixed overrides: " + (" ".join(f"`{o}`" for o in fixed) or "none"),
        "",
        *variant_lines(spec.get("variants") or {}),
        markdown_table(rows, metrics),
        "",
        f"![{metric}]({bars.name})",
        "",
        f"![{tag}]({curves.name})" if has_curves else f"No learning curves: no run logged `{tag}`.",
        "",
    ]
    if missing or short:
        lines += ["## Missing runs", "", *(f"- {p}" for p in missing + short), ""]
    lines += ["## Runs", "", f"| run | setting | seed | {metric} |", "|---|---|---:|---:|"]
    for r in runs:
        value = f"{r.metrics[metric]:.4f}" if r.finished and metric in r.metrics else "missing"
        rel = r.path.relative_to(run_dir).as_posix() or "."
        lines.append(f"| `{rel}` | {label(r.params, keys)} | {r.seed} | {value} |")
    path = out_dir / f"{name}.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> Path:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m twotower.report", description=__doc__)
    parser.add_argument("run_dir", type=Path, help="a run or a sweep directory (multirun/...)")
    parser.add_argument("--name", help="report name (default: RUN_DIR's last component)")
    parser.add_argument("--metric", default="test/ndcg@10", help="primary metric")
    parser.add_argument("--out", type=Path, default=Path("outputs/reports"))
    parser.add_argument("--expect", type=int, help="expected finished runs (seeds) per setting")
    parser.add_argument("--allow-missing", action="store_true", help="report despite gaps")
    args = parser.parse_args(argv)
    try:
        path = write_report(
            args.run_dir,
            args.out,
            args.name or args.run_dir.resolve().name,
            metric=args.metric,
            expect=args.expect,
            allow_missing=args.allow_missing,
            command=shlex.join(["python", "-m", "twotower.report", *argv]),
        )
    except ReportError as e:
        print(f"twotower: report error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"report: {path}")
    return path


if __name__ == "__main__":
    main()
