"""Run twotower's commands as a user does: a subprocess, one thread, in a scratch directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import TINY

REPO = Path(__file__).resolve().parents[1]

# conftest.TINY as command-line overrides; each test sets its own trainer.max_epochs.
TINY_CLI = [o for o in TINY if not o.startswith("trainer.max_epochs=")]


def run(module: str, *args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """``python -m twotower.<module> args...`` in ``cwd``; ``check``: fail on a non-zero exit."""
    path = os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(REPO)]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    done = subprocess.run(
        [sys.executable, "-m", f"twotower.{module}", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check and done.returncode:
        raise AssertionError(
            f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return done


def runs(cwd: Path) -> list[Path]:
    """The run directories under ``cwd/outputs``, oldest first."""
    return sorted(p for p in (cwd / "outputs").iterdir() if (p / ".hydra").is_dir())


def metrics(run_dir: Path) -> dict[str, float]:
    return json.loads((run_dir / "metrics.json").read_text())["metrics"]
