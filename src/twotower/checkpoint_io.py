"""Checkpoints written so that a crash mid-write never leaves a corrupt file as the only copy."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, flushed to disk, then renamed.

    ``os.replace`` within one directory is atomic: ``path`` holds either the previous
    complete checkpoint or the new complete one. (Lightning's own writer stages the file in
    the system temp directory, whose move onto another file system is a plain copy.)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:  # the rename itself survives a power cut once the directory is synced
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint I/O with :func:`atomic_torch_save` for local paths."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        atomic_torch_save(checkpoint, path)
