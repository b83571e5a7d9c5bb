"""glibc's malloc and a training step's big tensors: keep freed memory for the next step.

glibc serves an allocation above its mmap threshold (128 KiB, raised as big blocks are freed,
to 32 MiB at most) with a fresh mapping, unmaps it when freed, and returns the heap's free
top to the kernel above its trim threshold. A step's padded batches and ``(B, B)`` score
matrices are allocated and freed every step, so each step faulted their pages in again, the
kernel zeroing every one: 20% of a text DSSM step on GCIDE (batch 2,048, AMD EPYC). Raising
both thresholds keeps that memory in the heap for the next step, as jemalloc or tcmalloc
would. The cost: memory freed late in a run stays resident until the process ends.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h>


def keep_freed_memory(mib: int) -> bool:
    """Serve allocations up to ``mib`` MiB from the heap and keep up to twice that freed in
    it (glibc only; ``0`` keeps malloc's defaults). Returns whether the settings took."""
    if mib <= 0 or not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt  # absent from musl
    except (OSError, AttributeError):
        return False
    size = min(mib * 2**20, 2**30)  # an int for mallopt
    return bool(mallopt(M_MMAP_THRESHOLD, size)) and bool(mallopt(M_TRIM_THRESHOLD, 2 * size))
