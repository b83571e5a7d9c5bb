"""What a run records to be reproduced: the code's git commit, package versions, platform."""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

# The packages a result depends on (numerics, training loop, config, search).
PACKAGES = (
    "twotower",
    "torch",
    "pytorch-lightning",
    "hydra-core",
    "omegaconf",
    "torchmetrics",
    "numpy",
    "faiss-cpu",
)
REPO = Path(__file__).resolve().parents[2]


def git_state(repo: Path = REPO) -> dict[str, Any]:
    """``{"commit": sha or None, "dirty": bool or None}`` of the source tree ``repo``."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):  # no git here
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    if not (repo / "src" / "twotower").is_dir():  # an installed copy, not this source tree
        return {"commit": None, "dirty": None}
    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each package (``None`` if absent)."""
    out: dict[str, str | None] = {}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def provenance() -> dict[str, Any]:
    """The record ``metrics.json`` keeps beside the resolved config and the seed."""
    return {
        "git": git_state(),
        "packages": versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }
