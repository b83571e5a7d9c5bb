"""The yardsticks: plain-PyTorch scripts of two recipes, written without twotower, Lightning
or Hydra (``../shared/yardstick/``), run as they are, in a subprocess of their own.

``make bench`` times twotower against them beside its bare loop (:mod:`bench.bare`): the bare
loop trains twotower's own parts on twotower's batches (the framework's overhead), a
yardstick trains the same model written plainly (whether twotower's parts are as fast).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "shared" / "yardstick"

# The overrides under which twotower does each script's work (the yardstick README's).
TEXT = ["experiment=gcide_dssm", "tower.dropout=0", "model.share_towers=false"]
ML100K_ID = ["experiment=ml100k_id"]


def run(directory: Path, script: str, data: str, threads: int, *args: str) -> dict:
    """``python <directory>/<script> <data> --threads N ...``: the JSON it writes."""
    path = Path(directory) / script
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no yardstick (--yardstick names their directory)")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        cmd = [sys.executable, str(path), data, "--threads", str(threads), "--json", str(out)]
        subprocess.run([*cmd, *args], check=True, env=env, capture_output=True, text=True)
        return json.loads(out.read_text())


def text(directory: Path, gcide: str, threads: int) -> dict:
    """The DSSM yardstick on ``gcide``: training ``samples_per_s`` and ``val_pass_s``."""
    return run(directory, "dssm_text.py", gcide, threads)


def ml100k(directory: Path, inter: str, threads: int, epochs: int) -> dict:
    """The ID two-tower yardstick: ``epoch_s_median`` and ``val_pass_s_median``."""
    return run(directory, "id_two_tower.py", inter, threads, "--epochs", str(epochs))
