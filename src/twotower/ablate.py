"""Run an ablation defined by one file under ``experiments/``, then write its report.

    python -m twotower.ablate experiments/ablate-loss.yaml [--small] [--seeds 0]  # make ablate-loss

An ablation file holds the settings, the seeds, the fixed overrides and the metric::

    name: ablate-loss
    metric: test/ndcg@10
    seeds: [0, 1, 2]
    grid:                       # every combination, with every seed
      loss: [pointwise, pairwise_hinge, pairwise_logistic, listwise_softmax]
    variants:                   # and/or named settings that change several keys together
      lstm_last: {tower: lstm, tower.pooling: last}
      mlp_separate: {tower: mlp, model.share_towers: false}
    overrides: []               # fixed for every run (data=..., trainer.max_epochs=...)
    small: [trainer.max_epochs=2]   # added with --small (make ablate-loss SMALL=1)

The runs are one Hydra multirun under ``multirun/<name>/<time>`` (``<name>-small`` with
``--small``), each run named by its overrides, so TensorBoard groups them under the
ablation's directory; the report goes to ``experiments/reports/<name>.md``. Each variant
becomes a config ``<sweep dir>/conf/variant/<name>.yaml`` (group choices in its defaults
list, values below), swept as ``+variant=<name>,...``; ``ablation.yaml`` beside the runs
keeps the file that defined them.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from twotower.config_check import CONF_DIR
from twotower.errors import ConfigError, user_errors

KEYS = {"name", "description", "metric", "seeds", "grid", "variants", "overrides", "small"}
NAME = re.compile(r"[A-Za-z0-9_.-]+")


def _list(spec: dict[str, Any], key: str) -> list[str]:
    value = spec.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str | int | float) for v in value):
        raise ConfigError(key, value, "must be a list of values")
    return [str(v) for v in value]


def load(path: Path) -> dict[str, Any]:
    """The ablation file, checked: a name, a metric, seeds and a grid and/or variants."""
    if not path.is_file():
        raise ConfigError("ablation", str(path), "no such file (see experiments/*.yaml)")
    spec = yaml.safe_load(path.read_text()) or {}
    unknown = sorted(set(spec) - KEYS)
    if unknown:
        raise ConfigError(f"{path}: {unknown[0]}", spec[unknown[0]], f"keys are {sorted(KEYS)}")
    for key in ("name", "metric"):
        if not isinstance(spec.get(key), str):
            raise ConfigError(f"{path}: {key}", spec.get(key), "must be a string")
    grid, variants = spec.get("grid") or {}, spec.get("variants") or {}
    if not isinstance(grid, dict) or not (grid or variants):
        raise ConfigError(f"{path}: grid", grid, "must map config keys to lists of values")
    for key, values in grid.items():
        _list({key: values}, key)
    if not isinstance(variants, dict):
        raise ConfigError(f"{path}: variants", variants, "must map names to {key: value}")
    fixed = [*_list(spec, "overrides"), *_list(spec, "small")]
    fixed_keys = {o.key_or_group for o in OverridesParser.create().parse_overrides(fixed)}
    for name, overrides in variants.items():
        if not NAME.fullmatch(str(name)):
            raise ConfigError(f"{path}: variants", name, "names are letters, digits, . _ -")
        if not isinstance(overrides, dict) or not overrides:
            raise ConfigError(f"{path}: variants.{name}", overrides, "must map keys to values")
        # A command-line override (fixed or swept) would silently win over the variant's value.
        clash = sorted((fixed_keys | set(grid)) & set(map(str, overrides)))
        if clash:
            where = f"{path}: variants.{name}.{clash[0]}"
            raise ConfigError(where, overrides[clash[0]], "is also in overrides, small or grid")
    if len(_list(spec, "seeds")) < 1:
        raise ConfigError(f"{path}: seeds", spec.get("seeds"), "must list at least one seed")
    return spec


def variant_config(overrides: dict[str, Any], conf_dir: Path = CONF_DIR) -> dict[str, Any]:
    """A variant's overrides as a global config: ``{tower: lstm, tower.pooling: last}`` ->
    ``{defaults: [{override /tower: lstm}], tower: {pooling: last}}``."""
    defaults, values = [], OmegaConf.create()
    for key, value in overrides.items():
        group = str(key).split("@")[0]
        if "." not in group and (conf_dir / group).is_dir():  # a config group: choose an option
            defaults.append({f"override /{key}": value})
        else:
            OmegaConf.update(values, str(key), value, force_add=True)
    config = OmegaConf.to_container(values)
    return {"defaults": [*defaults, "_self_"], **config}


def write_variants(spec: dict[str, Any], sweep_dir: Path) -> None:
    """``<sweep_dir>/conf/variant/<name>.yaml`` per variant, and the ablation file's copy."""
    folder = sweep_dir / "conf" / "variant"
    folder.mkdir(parents=True, exist_ok=True)
    for name, overrides in (spec.get("variants") or {}).items():
        text = yaml.safe_dump(variant_config(overrides), sort_keys=False)
        (folder / f"{name}.yaml").write_text(f"# @package _global_\n{text}")
    (sweep_dir / "ablation.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))


def command(spec: dict[str, Any], small: bool) -> tuple[list[str], Path]:
    """The multirun command line and its sweep directory."""
    name = spec["name"] + ("-small" if small else "")
    # A new directory per invocation: an earlier sweep's runs are never overwritten or mixed.
    sweep_dir = Path("multirun") / name / time.strftime("%Y-%m-%d_%H-%M-%S")
    grid = [
        f"{key}={','.join(map(str, values))}" for key, values in (spec.get("grid") or {}).items()
    ]
    if spec.get("variants"):
        grid += [
            f"hydra.searchpath=[file://{(sweep_dir / 'conf').resolve()}]",
            "+variant=" + ",".join(map(str, spec["variants"])),
        ]
    parse = OverridesParser.create().parse_overrides
    fixed = _list(spec, "overrides")
    if small:  # the small settings replace the full-size values of the same keys
        extra = _list(spec, "small")
        keys = {o.key_or_group for o in parse(extra)}
        fixed = [o for o, p in zip(fixed, parse(fixed), strict=True) if p.key_or_group not in keys]
        fixed += extra
    # Runs are named by what the ablation sweeps: the fixed overrides would only lengthen them.
    hidden = [o.key_or_group for o in parse(fixed)]
    hydra_conf = yaml.safe_load((CONF_DIR / "hydra" / "default.yaml").read_text())
    hidden = [*hydra_conf["job"]["config"]["override_dirname"]["exclude_keys"], *hidden]
    args = [
        "-m",
        f"hydra.sweep.dir={sweep_dir}",
        f"hydra.job.config.override_dirname.exclude_keys=[{','.join(hidden)}]",
        f"seed={','.join(_list(spec, 'seeds'))}",
        *grid,
        *fixed,
    ]
    return [sys.executable, "-m", "twotower.train", *args], sweep_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path, help="experiments/<ablation>.yaml")
    parser.add_argument("--small", action="store_true", help="the minutes-long variant")
    parser.add_argument("--out", type=Path, default=Path("experiments/reports"))
    parser.add_argument("--seeds", nargs="+", type=int, help="instead of the file's seeds")
    args = parser.parse_args(argv)
    with user_errors():
        spec = load(args.file)
        if args.seeds:  # a first pass on fewer seeds (SEEDS="0" in make)
            spec["seeds"] = args.seeds
        cmd, sweep_dir = command(spec, args.small)
        write_variants(spec, sweep_dir)
    print("ablate: " + " ".join(cmd[1:]), flush=True)
    if subprocess.run(cmd).returncode:
        raise SystemExit(f"ablate: a run of {spec['name']} failed (see {sweep_dir})")
    name = sweep_dir.parent.name
    report = [sys.executable, "-m", "twotower.report", str(sweep_dir), "--name", name]
    report += ["--metric", spec["metric"], "--out", str(args.out)]
    raise SystemExit(subprocess.run(report).returncode)


if __name__ == "__main__":
    main()
