"""Run directories: names that are valid override values, unique stamps, and resume targets.

A run directory is ``outputs/<date>_<time>-<token>_<overrides>``. Its path can be pasted
into any command (``ckpt=...``, ``ckpt_path=...``): the name holds only characters that
Hydra's override grammar takes unquoted. The random token keeps two runs started in the
same second apart. ``ckpt_path=last`` or ``ckpt_path=<run dir>`` resumes a run in its own
directory (:func:`resume_target`).
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from twotower.errors import ConfigError, DataError

MAX_RUN_NAME = 160  # file systems refuse names over 255 bytes; the date prefix needs room
RUN_ROOTS = ("outputs", "multirun")  # where ckpt_path=last looks for runs
LAST = "last.ckpt"
# Characters that Hydra's override grammar accepts in an unquoted value (no = , [ ] { } ' ").
_UNSAFE = re.compile(r"[^A-Za-z0-9_.+@%-]")
# Hydra joins overrides with ','; a ',' inside a list value is not followed by 'key=' (or by
# a deletion, '~key').
_ITEM = re.compile(r",(?=[+]?[A-Za-z0-9_.@/-]+=|~[A-Za-z0-9_.@/-]+(?:[,=]|$))")


def run_name(overrides: str) -> str:
    """A run directory's name from Hydra's ``override_dirname``.

    ``key=value`` becomes ``key-value`` (``~key``, a deletion, ``del.key``), items are joined
    by ``+``, a path value keeps its last component, and every other character the override
    grammar would refuse becomes ``_``. A long list is cut and ends with a hash of the whole,
    so distinct runs keep distinct names.

    Example:
        >>> run_name("data.dir=/data/gcide,loss=pairwise_hinge,model.recall_at=[1,5]")
        'data.dir-gcide+loss-pairwise_hinge+model.recall_at-_1_5_'
        >>> run_name("seed=1,~callbacks.progress_bar")
        'seed-1+del.callbacks.progress_bar'
        >>> run_name("")
        'defaults'
    """
    if not overrides:
        return "defaults"
    items = []
    for item in _ITEM.split(overrides):
        key, _, value = item.partition("=")
        if key.startswith("~"):
            items.append("del." + _UNSAFE.sub("_", key[1:]))
            continue
        if "/" in value.strip("/"):
            value = value.rstrip("/").rsplit("/", 1)[-1]
        items.append(_UNSAFE.sub("_", key) + "-" + _UNSAFE.sub("_", value))
    name = "+".join(items)
    if len(name) <= MAX_RUN_NAME:
        return name
    digest = hashlib.sha256(overrides.encode()).hexdigest()[:10]
    return name[: MAX_RUN_NAME - 12] + f"..{digest}"


def stamp() -> str:
    """``YYYY-MM-DD_HH-MM-SS-<6 hex>``: the second a run started, and a random token."""
    return time.strftime("%Y-%m-%d_%H-%M-%S") + "-" + os.urandom(3).hex()


@dataclass(frozen=True)
class Resume:
    """A run to continue: its directory and the checkpoint to continue from."""

    run_dir: Path
    ckpt: Path


def _is_run_dir(path: Path) -> bool:
    return (path / ".hydra" / "overrides.yaml").is_file()


def newest_run(roots: tuple[str, ...] = RUN_ROOTS) -> Path | None:
    """The run directory whose ``checkpoints/last.ckpt`` was written last, if any."""
    found = [p for root in roots for p in Path(root).glob(f"**/checkpoints/{LAST}")]
    found = [p for p in found if _is_run_dir(p.parents[1])]
    return max(found, key=lambda p: p.stat().st_mtime).parents[1] if found else None


def resume_target(ckpt_path: str | None) -> Resume | None:
    """What ``ckpt_path`` resumes: ``last`` (the newest run), a run directory, or a
    checkpoint inside one. ``None`` for no ``ckpt_path`` or a checkpoint outside any run
    (training starts a new run from its weights).

    Found once per process and directory: Hydra's run directory, the composed config and
    the fit must name the same run even if another run writes a newer ``last.ckpt``
    meanwhile.
    """
    return _resume_target(str(ckpt_path) if ckpt_path else None, os.getcwd())


@functools.cache
def _resume_target(ckpt_path: str | None, cwd: str) -> Resume | None:
    if not ckpt_path:
        return None
    path = Path(ckpt_path)
    if str(ckpt_path) == "last":
        run = newest_run()
        if run is None:
            roots = " or ".join(f"{r}/" for r in RUN_ROOTS)
            raise ConfigError("ckpt_path", "last", f"no run under {roots} has checkpoints/{LAST}")
        return Resume(run, run / "checkpoints" / LAST)
    if path.is_dir():
        if not _is_run_dir(path):
            raise ConfigError("ckpt_path", str(path), "is a directory but not a twotower run")
        last = path / "checkpoints" / LAST
        if not last.is_file():
            raise ConfigError("ckpt_path", str(path), f"the run has no checkpoints/{LAST}")
        return Resume(path, last)
    if not path.is_file():
        raise ConfigError("ckpt_path", str(path), "no such checkpoint file or run directory")
    run = path.parent.parent
    return Resume(run, path) if path.parent.name == "checkpoints" and _is_run_dir(run) else None


def is_resume(ckpt_path: str | None) -> bool:
    """Whether ``ckpt_path`` continues a run in its own directory (a bad one does not)."""
    try:
        return resume_target(ckpt_path) is not None
    except ConfigError:
        return False


def run_dir(ckpt_path: str | None, fresh: str) -> str:
    """``hydra.run.dir``: the resumed run's own directory, else ``fresh``."""
    try:
        target = resume_target(ckpt_path)
    except ConfigError:
        return fresh  # train() reports the bad ckpt_path with one line
    return str(target.run_dir) if target else fresh


def config_subdir(ckpt_path: str | None) -> str:
    """``hydra.output_subdir``: a resume keeps the run's first ``.hydra`` files intact."""
    return f".hydra/resume-{stamp()}" if run_dir(ckpt_path, "") else ".hydra"


@contextmanager
def nothing_left_on_error(out_dir: str | Path, fresh: bool = True) -> Iterator[None]:
    """On a config or data error, remove what this command wrote into ``out_dir``, then the
    directory if that leaves it empty.

    A typo then leaves no run directory behind (nor an empty ``outputs/``). A directory that
    held only Hydra's ``.hydra/`` and log file when the command began is this run's own, and
    goes whole; in one that held anything else (``hydra.run.dir`` named a directory of the
    user's) only the entries made since are removed, Hydra's files kept, since they may be an
    earlier run's. A resumed run (``fresh=False``) keeps everything.
    """
    out = Path(out_dir)
    hydra = {out / ".hydra", *out.glob("*.log")}
    before = set(out.iterdir()) if out.is_dir() else set()
    if not before - hydra:  # nothing but what Hydra wrote for this command
        before = set()
    try:
        yield
    except (ConfigError, DataError):
        if fresh and out.is_dir():
            for path in set(out.iterdir()) - before:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
            # the directory, then empty run roots above it (outputs/, outputs/evaluate/)
            for path in [out, *out.resolve().parents]:
                if any(path.iterdir()) or (path != out and not _in_run_root(path)):
                    break
                path.rmdir()
        raise


def _in_run_root(path: Path) -> bool:
    """Whether ``path`` is a run root (``outputs``, ``multirun``) or inside one."""
    return any(p.name in RUN_ROOTS for p in (path, *path.parents))


def keep_previous(path: Path) -> None:
    """Move an existing ``path`` aside (``name.<time>.ext``) before it is written again."""
    if path.exists():
        path.rename(path.with_name(f"{path.stem}.{stamp()}{path.suffix}"))


for _name, _fn in {
    "run_name": run_name,
    "stamp": stamp,
    "run_dir": run_dir,
    "config_subdir": config_subdir,
}.items():
    # Cached like Hydra's ${now:}: every read of hydra.run.dir in a process gives one value,
    # and Hydra copies the cache into each job of a sweep.
    OmegaConf.register_new_resolver(_name, _fn, replace=True, use_cache=_name != "run_name")


def resumed_config(cfg: DictConfig) -> DictConfig:
    """A resume's config: the run's own overrides, then this command's (``trainer.max_epochs``
    extends a run); so ``ckpt_path=last`` alone continues the newest run as it was."""
    resume = resume_target(cfg.get("ckpt_path"))
    if resume is None:
        return cfg
    saved = OmegaConf.load(resume.run_dir / ".hydra" / "overrides.yaml")
    merged: dict[str, str] = {}
    for override in [*saved, *HydraConfig.get().overrides.task]:
        key = override.split("=", 1)[0].lstrip("+~")
        if key != "ckpt_path":
            merged[key] = override
    merged["ckpt_path"] = f"ckpt_path='{resume.ckpt}'"
    return hydra.compose(config_name="train", overrides=list(merged.values()))
