"""The on-disk data cache: concurrent builders of one key build once; bad entries rebuild."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from twotower.data.components.cache import cache_key, cached, load_entry, save_entry

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
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f"test-{key}.npz"]


def entry(tmp_path: Path) -> Path:
    (tmp_path / "input.txt").write_text("some text\n")
    cached(tmp_path / "cache", "test", [tmp_path / "input.txt"], {}, lambda: {"x": 1})
    (path,) = (tmp_path / "cache").glob("*.npz")
    return path


def test_a_truncated_or_foreign_entry_is_rebuilt_with_a_warning(tmp_path, caplog):
    path = entry(tmp_path)
    good, files = path.read_bytes(), [tmp_path / "input.txt"]
    for bad in (good[: len(good) // 2], b"not an npz file", None):
        if bad is None:  # loads fine but is not what cached() writes
            save_entry([1, 2, 3], path)
        else:
            path.write_bytes(bad)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="twotower.data"):
            value = cached(tmp_path / "cache", "test", files, {}, lambda: {"x": 2})
        assert value == {"x": 2}
        assert f"cache entry {path}" in caplog.text and "rebuilding it" in caplog.text
        assert load_entry(path) == {"x": 2}  # the rebuilt entry replaced it


def test_a_good_entry_is_loaded_not_rebuilt(tmp_path):
    entry(tmp_path)

    def fail() -> dict:
        raise AssertionError("rebuilt a good entry")

    assert cached(tmp_path / "cache", "test", [tmp_path / "input.txt"], {}, fail) == {"x": 1}


def test_an_entry_round_trips_tensors_strings_and_json(tmp_path):
    """Tensors keep dtype and values; string lists (surrogates too) and nested JSON come back."""
    value = {
        "ids": torch.tensor([3, 1, 2], dtype=torch.int32),
        "scores": torch.tensor([[0.5, -1.0]], dtype=torch.float64),
        "mask": torch.tensor([True, False]),
        "texts": ["été", "", "a\nb", "\udcff"],
        "qrels": {"q1": {"d1": 2, "d2": 0}},
        "nested": [{"t": torch.arange(2)}, None, 1.5, [], ["x", 1]],
    }
    save_entry(value, tmp_path / "e.npz")
    back = load_entry(tmp_path / "e.npz")
    for key in ("ids", "scores", "mask"):
        assert back[key].dtype == value[key].dtype and torch.equal(back[key], value[key])
    assert back["texts"] == value["texts"] and back["qrels"] == value["qrels"]
    assert torch.equal(back["nested"][0]["t"], torch.arange(2))
    assert back["nested"][1:] == [None, 1.5, [], ["x", 1]]
