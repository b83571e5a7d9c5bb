"""The on-disk data cache: concurrent builders of one key build once; bad entries rebuild."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from twotower.data.components.cache import cache_key, cached

# A builder process: waits for the "go" file so both processes race into cached() together,
# builds slowly (so the other one arrives mid-build), and logs each build to builds.log.
BUILDER = """
import os, sys, time
from pathlib import Path
import torch
from twotower.data.components.cache import cached

root, name = Path(sys.argv[1]), sys.argv[2]
(root / f"ready-{name}").touch()
while not (root / "go").exists():
    time.sleep(0.005)

def build():
    with open(root / "builds.log", "a") as f:
        f.write(name + "\\n")
    time.sleep(0.5)
    return {"ids": torch.arange(100_000), "name": "built"}

value = cached(root / "cache", "test", [root / "input.txt"], {"n": 1}, build)
assert torch.equal(value["ids"], torch.arange(100_000)) and value["name"] == "built"
print("ok")
"""


def test_two_processes_building_one_key_build_it_once(tmp_path):
    (tmp_path / "input.txt").write_text("some text\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", BUILDER, str(tmp_path), name],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for name in ("a", "b")
    ]
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"ready-{n}").exists() for n in "ab"):
        assert time.monotonic() < deadline, "builder processes did not start"
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.01)
    (tmp_path / "go").touch()
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0 and out.strip() == "ok", err
    assert len((tmp_path / "builds.log").read_text().split()) == 1  # the second one waited
    key = cache_key([tmp_path / "input.txt"], {"n": 1})[:24]
    # one entry; no temporary or lock file left behind
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f"test-{key}.pt"]


def entry(tmp_path: Path) -> Path:
    (tmp_path / "input.txt").write_text("some text\n")
    cached(tmp_path / "cache", "test", [tmp_path / "input.txt"], {}, lambda: {"x": 1})
    (path,) = (tmp_path / "cache").glob("*.pt")
    return path


def test_a_truncated_or_foreign_entry_is_rebuilt_with_a_warning(tmp_path, caplog):
    path = entry(tmp_path)
    good, files = path.read_bytes(), [tmp_path / "input.txt"]
    for bad in (good[: len(good) // 2], b"not a torch file", None):
        if bad is None:  # loads fine but is not what cached() writes
            torch.save([1, 2, 3], path)
        else:
            path.write_bytes(bad)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="twotower.data"):
            value = cached(tmp_path / "cache", "test", files, {}, lambda: {"x": 2})
        assert value == {"x": 2}
        assert f"cache entry {path}" in caplog.text and "rebuilding it" in caplog.text
        assert torch.load(path, weights_only=True) == {"x": 2}  # the rebuilt entry replaced it


def test_a_good_entry_is_loaded_not_rebuilt(tmp_path):
    entry(tmp_path)

    def fail() -> dict:
        raise AssertionError("rebuilt a good entry")

    assert cached(tmp_path / "cache", "test", [tmp_path / "input.txt"], {}, fail) == {"x": 1}
