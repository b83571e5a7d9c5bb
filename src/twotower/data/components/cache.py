"""On-disk cache of prepared data: read and tokenise once per (file contents, settings).

The key hashes the *contents* of every input file (not names or times, so an edited file is
re-read even if its timestamp lies) with every setting that changes the result. Values are
plain data (tensors, lists of strings, JSON-able dicts and lists), saved as one uncompressed
``.npz`` of flat arrays: tensors as arrays, a list of strings as one UTF-8 byte array and its
offsets, the rest as JSON. Nothing is pickled, so loading is a few array reads (GCIDE's
entry: well under a second, where ``torch.load`` of the same lists took 6 s). Entries are
written atomically, one process per key at a time.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

log = logging.getLogger("twotower.data")
VERSION = 3  # bump when the cached layout changes (2: flat .npz arrays instead of torch.save;
# 3: the query texts too)
SUFFIX = ".npz"


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


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path``; the file is removed when released.

    A waiter may wake holding a lock on a file its holder already removed (and a newcomer may
    have locked a new one): it then locks again, so one process at a time holds the live file.
    The kernel releases the lock of a process that dies.
    """
    while True:
        f = open(lock_path, "a")  # closed below, after the unlink
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            if os.stat(lock_path).st_ino == os.fstat(f.fileno()).st_ino:
                break
        except FileNotFoundError:
            pass
        f.close()
    try:
        yield
    finally:
        lock_path.unlink(missing_ok=True)  # before the unlock: no one can lock a dead file
        f.close()


def _identity(path: Path) -> tuple[int, int, int] | None:
    """Which file ``path`` is now (inode, size, mtime); ``None`` if there is none."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _flatten(node: Any, arrays: dict[str, np.ndarray]) -> Any:
    """``node`` as JSON with its tensors and string lists moved into ``arrays``."""
    if isinstance(node, Tensor):
        name = f"a{len(arrays)}"
        arrays[name] = node.detach().cpu().numpy()
        return {"__array__": name}
    if isinstance(node, list) and node and all(isinstance(x, str) for x in node):
        encoded = [x.encode("utf-8", "surrogatepass") for x in node]
        name = f"a{len(arrays)}"
        arrays[name] = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        arrays[name + "_ends"] = np.cumsum([len(b) for b in encoded], dtype=np.int64)
        return {"__strings__": name}
    if isinstance(node, dict):
        if not all(isinstance(k, str) for k in node):
            raise TypeError(f"cache values need string keys, got {sorted(map(type, node))}")
        return {k: _flatten(v, arrays) for k, v in node.items()}
    if isinstance(node, list | tuple):
        return [_flatten(v, arrays) for v in node]
    return node


def _unflatten(node: Any, arrays: Any) -> Any:
    if isinstance(node, dict):
        if "__array__" in node and len(node) == 1:
            return torch.from_numpy(arrays[node["__array__"]])
        if "__strings__" in node and len(node) == 1:
            blob = arrays[node["__strings__"]].tobytes()
            ends = arrays[node["__strings__"] + "_ends"].tolist()
            starts = [0, *ends[:-1]]
            pieces = zip(starts, ends, strict=True)
            return [blob[a:b].decode("utf-8", "surrogatepass") for a, b in pieces]
        return {k: _unflatten(v, arrays) for k, v in node.items()}
    if isinstance(node, list):
        return [_unflatten(v, arrays) for v in node]
    return node


def save_entry(value: dict[str, Any], path: Path) -> None:
    """Write ``value`` to ``path`` atomically (a temporary sibling, then a rename)."""
    arrays: dict[str, np.ndarray] = {}
    tree = _flatten(value, arrays)
    arrays["__tree__"] = np.frombuffer(json.dumps(tree).encode(), dtype=np.uint8)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_entry(path: Path) -> Any:
    """The value :func:`save_entry` wrote (raises on a truncated or foreign file)."""
    with np.load(path, allow_pickle=False) as arrays:
        tree = json.loads(arrays["__tree__"].tobytes())
        return _unflatten(tree, arrays)


def _load(path: Path) -> dict[str, Any] | None:
    """The entry at ``path``, or ``None`` (with a warning) when it is missing or unusable."""
    if not path.is_file():
        return None
    started = time.perf_counter()
    try:
        value = load_entry(path)
    except Exception as e:  # a truncated or foreign file: rebuild it
        log.warning("cache entry %s unreadable (%s): rebuilding it", path, e)
        return None
    if not isinstance(value, dict):
        log.warning("cache entry %s holds a %s, not a dict: rebuilding it", path, type(value))
        return None
    log.info("prepared data from cache %s (%.2f s)", path, time.perf_counter() - started)
    return value


def cached(
    cache_dir: str | Path | None,
    name: str,
    files: Iterable[str | Path],
    settings: dict[str, Any],
    build: Callable[[], dict[str, Any]],
) -> dict[str, Any]:
    """``build()``'s result, from ``cache_dir`` when the same files and settings were seen.

    ``cache_dir=None`` disables the cache. A corrupt or unreadable entry is rebuilt, with a
    warning. Builders of one key in several processes (two runs, DDP ranks) take turns on
    ``<entry>.lock``: the first builds, the others wait and load its entry.
    """
    if cache_dir is None:
        return build()
    files = list(files)
    path = Path(cache_dir) / f"{name}-{cache_key(files, settings)[:24]}{SUFFIX}"
    seen = _identity(path)
    value = _load(path)  # entries are written atomically: no lock needed to read one
    if value is not None:
        return value
    made = [p for p in (path.parent, *path.parent.parents) if not p.exists()]  # leaf first
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _locked(path.with_suffix(".lock")):
            if _identity(path) != seen:  # another process wrote the entry while we waited
                value = _load(path)
                if value is not None:
                    return value
            started = time.perf_counter()
            value = build()
            log.info("prepared data in %.1f s; cached at %s", time.perf_counter() - started, path)
            save_entry(value, path)
    except BaseException:
        for directory in made:  # a run stopped by bad data leaves no empty cache directory
            try:
                directory.rmdir()
            except OSError:  # not empty: another process's entry
                break
        raise
    return value
