"""``python -m twotower.mine --help``: what ``source`` takes and every key with its default."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from twotower.config_check import CONF_DIR


def override_value(value: object) -> str:
    """A value as the command line writes it: ``None`` -> ``null``, ``False`` -> ``false``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def shown(text: str, key: str, value: str) -> bool:
    """Whether a line of ``text`` begins with ``key=value``, as the help lists a key."""
    return re.search(rf"^  {re.escape(key)}={re.escape(value)}(\s|$)", text, re.M) is not None


def test_mine_help_says_what_source_takes_and_lists_the_keys():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "twotower.mine", "--help"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout
    assert "Powered by Hydra" not in text  # not Hydra's generic dump
    for source in ("RUN/checkpoints/best.ckpt", "an export directory", "bm25"):
        assert source in text, source
    assert "python -m twotower.mine source=bm25 data=beir data.dir=" in text  # an example
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("mine", return_hydra_config=True)
    # Each key with the default conf/mine.yaml gives it: the help and the file agree.
    required = [k for k in cfg if OmegaConf.is_missing(cfg, k)]
    assert required == ["source", "out"]
    assert "source (required)" in text and re.search(r"^  out=FILE +\(required\)", text, re.M)
    keys = [k for k in cfg if k not in (*required, "hydra", "data", "tokenizer")]
    assert {"num_negatives", "sample", "rank_min", "rank_max", "margin"} <= set(keys)
    for key in keys:
        assert shown(text, key, override_value(cfg[key])), key
    for group in ("data", "tokenizer"):
        choice = cfg.hydra.runtime.choices[group]
        assert shown(text, group, choice or "..."), group
