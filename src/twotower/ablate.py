"""Run an ablation defined by one file under ``experiments/``, then write its report.

    python -m twotower.ablate experiments/ablate-loss.yaml [--small]     # make ablate-loss

An ablation file holds the grid, the seeds, the fixed settings and the metric to compare::

    name: ablate-loss
    metric: test/ndcg@10
    seeds: [0, 1, 2]
    grid:                       # every combination, with every seed
      loss: [pointwise, pairwise_hinge, pairwise_logistic, listwise_softmax]
    overrides: []               # fixed for every run (data=..., trainer.max_epochs=...)
    small: [trainer.max_epochs=2]   # added with --small (make ablate-loss SMALL=1)

The runs are one Hydra multirun under ``multirun/<name>/<time>`` (``<name>-small`` with
``--small``), each run named by its overrides, so TensorBoard groups them under the
ablation's directory; the report goes to ``experiments/reports/<name>.md``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from twotower.errors import ConfigError, user_errors

KEYS = {"name", "description", "metric", "seeds", "grid", "overrides", "small"}


def _list(spec: dict[str, Any], key: str) -> list[str]:
    value = spec.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str | int | float) for v in value):
        raise ConfigError(key, value, "must be a list of values")
    return [str(v) for v in value]


def load(path: Path) -> dict[str, Any]:
    """The ablation file, checked: a name, a metric, seeds and a non-empty grid."""
    if not path.is_file():
        raise ConfigError("ablation", str(path), "no such file (see experiments/*.yaml)")
    spec = yaml.safe_load(path.read_text()) or {}
    unknown = sorted(set(spec) - KEYS)
    if unknown:
        raise ConfigError(f"{path}: {unknown[0]}", spec[unknown[0]], f"keys are {sorted(KEYS)}")
    for key in ("name", "metric"):
        if not isinstance(spec.get(key), str):
            raise ConfigError(f"{path}: {key}", spec.get(key), "must be a string")
    grid = spec.get("grid")
    if not isinstance(grid, dict) or not grid:
        raise ConfigError(f"{path}: grid", grid, "must map config keys to lists of values")
    for key, values in grid.items():
        _list({key: values}, key)
    if len(_list(spec, "seeds")) < 1:
        raise ConfigError(f"{path}: seeds", spec.get("seeds"), "must list at least one seed")
    return spec


def command(spec: dict[str, Any], small: bool) -> tuple[list[str], Path]:
    """The multirun command line and its sweep directory."""
    name = spec["name"] + ("-small" if small else "")
    # A new directory per invocation: an earlier sweep's runs are never overwritten or mixed.
    sweep_dir = Path("multirun") / name / time.strftime("%Y-%m-%d_%H-%M-%S")
    grid = [f"{key}={','.join(map(str, values))}" for key, values in spec["grid"].items()]
    args = [
        "-m",
        f"hydra.sweep.dir={sweep_dir}",
        f"seed={','.join(_list(spec, 'seeds'))}",
        *grid,
        *_list(spec, "overrides"),
        *(_list(spec, "small") if small else []),
    ]
    return [sys.executable, "-m", "twotower.train", *args], sweep_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path, help="experiments/<ablation>.yaml")
    parser.add_argument("--small", action="store_true", help="the minutes-long variant")
    parser.add_argument("--out", type=Path, default=Path("experiments/reports"))
    args = parser.parse_args(argv)
    with user_errors():
        spec = load(args.file)
        cmd, sweep_dir = command(spec, args.small)
    print("ablate: " + " ".join(cmd[1:]), flush=True)
    if subprocess.run(cmd).returncode:
        raise SystemExit(f"ablate: a run of {spec['name']} failed (see {sweep_dir})")
    name = sweep_dir.parent.name
    report = [sys.executable, "-m", "twotower.report", str(sweep_dir), "--name", name]
    report += ["--metric", spec["metric"], "--out", str(args.out)]
    raise SystemExit(subprocess.run(report).returncode)


if __name__ == "__main__":
    main()
