"""On-disk cache of prepared data: read and tokenise once per (file contents, settings).

The key hashes the *contents* of every input file (not names or times, so an edited file is
re-read even if its timestamp lies) with every setting that changes the result. Values are
plain data (tensors, lists, dicts, str), saved with ``torch.save`` and loaded with
``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("twotower.data")
VERSION = 1  # bump when the cached layout changes


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def cache_key(files: Iterable[str | Path], settings: dict[str, Any]) -> str:
    """A key for the contents of ``files`` prepared with ``settings`` (JSON-able)."""
    parts = {
        "version": VERSION,
        "files": [file_digest(p) for p in files],
        "settings": settings,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def cached(
    cache_dir: str | Path | None,
    name: str,
    files: Iterable[str | Path],
    settings: dict[str, Any],
    build: Callable[[], dict[str, Any]],
) -> dict[str, Any]:
    """``build()``'s result, from ``cache_dir`` when the same files and settings were seen.

    ``cache_dir=None`` disables the cache. A corrupt or unreadable entry is rebuilt.
    """
    if cache_dir is None:
        return build()
    files = list(files)
    path = Path(cache_dir) / f"{name}-{cache_key(files, settings)[:24]}.pt"
    if path.is_file():
        started = time.perf_counter()
        try:
            value = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # a half-written or foreign file: rebuild it
            log.warning("cache entry %s unreadable (%s): rebuilding it", path, e)
        else:
            log.info("prepared data from cache %s (%.1f s)", path, time.perf_counter() - started)
            return value
    started = time.perf_counter()
    value = build()
    log.info("prepared data in %.1f s; cached at %s", time.perf_counter() - started, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename: a crash or a concurrent run never leaves a half-written entry.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(value, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return value
