"""Optuna sweeps (conf/sweep/, ``+sweep=<name>``) and the SLURM launcher (conf/launcher/,
``+launcher=slurm``): each composes with train.yaml, every value a search space can draw
builds, and a real two-trial Optuna sweep writes its best value and its runs."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import hydra
import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Transformer
from omegaconf import DictConfig, OmegaConf

from twotower.build import build_for_data
from twotower.config_check import CONF_DIR

OPTUNA_SWEEPER = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
SLURM_LAUNCHER = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
SWEEPS = sorted(p.stem for p in (CONF_DIR / "sweep").glob("*.yaml"))
LAUNCHERS = sorted(p.stem for p in (CONF_DIR / "launcher").glob("*.yaml"))
# Tiny data for building the parts; data.batch_size stays the default the sweeps are bounded by.
TINY_DATA = [
    "data.num_docs=120",
    "data.num_topics=4",
    "data.stems_per_topic=12",
    "data.queries_per_doc=2",
    "data.eval_queries_per_doc=1",
]


@pytest.fixture(autouse=True, scope="module")
def _plugins():
    for module, extra in (
        ("hydra_plugins.hydra_optuna_sweeper", "optuna"),
        ("hydra_plugins.hydra_submitit_launcher", "slurm"),
    ):
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # no hydra_plugins namespace at all
            found = False
        if not found:
            pytest.fail(f"{module} is not installed: pip install -e '.[dev]' (or '.[{extra}]')")


def compose_train(*overrides: str, hydra_node: bool = True) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=hydra_node)


def values(key: str, space: str) -> list[str]:
    """The values a search space can draw, as override values: every choice of a
    ``choice(...)``, both ends of an ``interval(...)``."""
    override = OverridesParser.create().parse_override(f"{key}={space}")
    assert override.is_sweep_override(), f"{key}: {space} is not a search space"
    if override.is_choice_sweep():
        return [str(v) for v in override.sweep_iterator(transformer=Transformer.encode)]
    assert override.is_interval_sweep(), f"{key}: {space}: only choice and interval are used"
    return [str(override.value().start), str(override.value().end)]


def draws(params: DictConfig) -> list[list[str]]:
    """Each value alone (the others at their defaults), all first values, all last values."""
    spaces = {key: values(key, space) for key, space in params.items()}
    one_at_a_time = [[f"{k}={v}"] for k, vs in spaces.items() for v in vs]
    ends = [[f"{k}={vs[i]}" for k, vs in spaces.items()] for i in (0, -1)]
    return one_at_a_time + ends


@pytest.mark.parametrize("name", SWEEPS)
def test_sweep_composes_with_the_optuna_sweeper(name):
    cfg = compose_train(f"+sweep={name}")
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_ == OPTUNA_SWEEPER
    hydra.utils.get_class(sweeper._target_)  # the plugin imports
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler"
    assert isinstance(sweeper.sampler.seed, int)
    assert sweeper.direction == "maximize" and sweeper.n_jobs == 1 and sweeper.n_trials > 0
    assert sweeper.study_name == f"twotower-{name}"
    assert cfg.optimized_metric == "val/ndcg@10"
    subdir = OmegaConf.to_container(cfg.hydra.sweep)["subdir"]  # unresolved: no job yet
    assert subdir.startswith("${hydra.job.num}_")  # trials may draw the same values
    assert sweeper.params
    for key in sweeper.params:
        assert OmegaConf.select(cfg, key, default="<absent>") != "<absent>", f"{name}: {key}"


@pytest.mark.parametrize("name", SWEEPS)
def test_every_value_a_sweep_draws_builds(name, tmp_path):
    params = compose_train(f"+sweep={name}").hydra.sweeper.params
    base = [f"+sweep={name}", *TINY_DATA, f"paths.output_dir={tmp_path}"]
    datamodule = None
    for draw in draws(params):
        cfg = compose_train(*base, *draw, hydra_node=False)  # struct: an unknown key fails
        if datamodule is None:  # the sweeps leave data and tokenizer alone: build them once
            tokenizer = hydra.utils.instantiate(cfg.tokenizer)
            datamodule = hydra.utils.instantiate(cfg.data, tokenizer=tokenizer)
            datamodule.prepare_data()
            datamodule.setup("fit")
        build_for_data(cfg, datamodule)  # a ConfigError names the key and the value


@pytest.mark.parametrize("name", SWEEPS)
def test_sweeps_leave_test_alone_unless_asked(name):
    # Model selection must not peek at the test split: trials score validation only.
    assert compose_train().run_test is True  # a plain run is tested
    assert compose_train(f"+sweep={name}", hydra_node=False).run_test is False
    assert compose_train(f"+sweep={name}", "run_test=true", hydra_node=False).run_test is True


def test_negatives_sweeps_fix_sampled_negatives():
    # num_negatives exists only for sampled / uniform negatives
    for name in ("negatives", "tune"):
        cfg = compose_train(f"+sweep={name}")
        assert cfg.negatives._target_.endswith("SampledNegatives")
        assert "negatives.num_negatives" in cfg.hydra.sweeper.params


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_composes_with_submitit(name):
    cfg = compose_train(f"+launcher={name}")
    launcher = cfg.hydra.launcher
    assert launcher._target_ == SLURM_LAUNCHER
    hydra.utils.get_class(launcher._target_)
    assert launcher.nodes == 1 and launcher.tasks_per_node == cfg.trainer.devices == 1
    assert launcher.timeout_min > 0 and launcher.partition is None
    # with a sweep and the GPU trainer too
    cfg = compose_train(f"+launcher={name}", "+sweep=lr", "trainer=gpu")
    assert cfg.hydra.launcher._target_ == SLURM_LAUNCHER
    assert cfg.hydra.sweeper._target_ == OPTUNA_SWEEPER


def test_slurm_launcher_writes_the_sbatch_script(tmp_path):
    """No cluster here: fake ``srun`` and ``sbatch`` (which keeps the script and fails)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = tmp_path / "job.sbatch"
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncp "$1" "{script}"\necho no cluster >&2\nexit 1\n')
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    cmd = [sys.executable, "-m", "twotower.train", "-m", "+launcher=slurm", "seed=0,1"]
    cmd += ["hydra.launcher.partition=gpu", "trainer=gpu", "trainer.devices=2"]
    cmd += ["hydra.launcher.gpus_per_node=2", "hydra.launcher.tasks_per_node=2"]
    cmd += [f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert out.returncode != 0 and "no cluster" in out.stderr, out.stderr[-3000:]
    lines = script.read_text().splitlines()
    for option in (
        "--array=0-1%2",  # 2 jobs at most at once
        "--partition=gpu",
        "--nodes=1",
        "--ntasks-per-node=2",
        "--gpus-per-node=2",
        "--cpus-per-task=4",
        "--mem=16GB",
        "--time=240",
    ):
        assert f"#SBATCH {option}" in lines, option


def test_real_optuna_sweep(tmp_path):
    """Two trials of +sweep=lr through ``twotower.train -m`` (about 10 s on one core)."""
    sweep = tmp_path / "sweep"
    db = tmp_path / "optuna.db"
    cmd = [sys.executable, "-m", "twotower.train", "-m", "+sweep=lr"]
    cmd += ["hydra.sweeper.n_trials=2", "trainer.max_epochs=1", "data.num_docs=300"]
    cmd += ["trainer.enable_progress_bar=false", "~callbacks.progress_bar"]
    cmd += [f"hydra.sweep.dir={sweep}", f"hydra.sweeper.storage=sqlite:///{db}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]

    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    best = results["best_value"]
    assert results["name"] == "optuna"
    assert isinstance(best, float) and 0.0 <= best <= 1.0
    assert 1e-4 <= results["best_params"]["optimizer.lr"] <= 3e-2

    runs = sorted(p.parent for p in sweep.glob("*/metrics.json"))
    assert [r.name.split("_")[0] for r in runs] == ["0", "1"]
    objective = [json.loads((r / "metrics.json").read_text())["metrics"] for r in runs]
    # the objective is optimized_metric (val/ndcg@10) as train.py's main returns it
    assert best == pytest.approx(max(m["val/ndcg@10"] for m in objective), rel=1e-12)

    import optuna

    study = optuna.load_study(study_name="twotower-lr", storage=f"sqlite:///{db}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    values_told = [t.value for t in sorted(study.trials, key=lambda t: t.number)]
    assert values_told == pytest.approx([m["val/ndcg@10"] for m in objective], rel=1e-12)


def test_values_cover_choices_and_interval_ends():
    assert values("tower.hidden_sizes", "choice([300], [300,300])") == ["[300]", "[300,300]"]
    assert values("optimizer.lr", "tag(log, interval(1e-4, 3e-2))") == ["0.0001", "0.03"]
    params = OmegaConf.create({"a": "choice(1, 2)", "b": "interval(0.5, 1.5)"})
    assert draws(params) == [
        ["a=1"],
        ["a=2"],
        ["b=0.5"],
        ["b=1.5"],
        ["a=1", "b=0.5"],
        ["a=2", "b=1.5"],
    ]
