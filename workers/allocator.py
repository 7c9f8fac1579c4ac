"""A worker process keeps the memory it frees: glibc's malloc tuned for training many small networks.

A training step allocates and frees the same large buffers (activations, gradients, the compiled
graph's intermediates, the stacked evaluation's outputs) hundreds of times a second. By default
glibc serves an allocation above its mmap threshold (dynamic, 128 KiB to 32 MiB) with fresh pages
from ``mmap`` and gives them back on ``free``, and returns the top of its heap to the kernel once
more than its trim threshold is free; every first touch of such a page is then a page fault and a
page the kernel zeroes. Measured on the benchmark's workload (digits / MLP-2, the standard trainer
and the population trainer at K = 8 and 32, a few fits each): 0.7–1.3 million minor page faults per
run, against 68 thousand with `keep_freed_memory`; the compiled population at K = 32 ran 35 → 54 and
47 → 72 evaluations/s (BENCHMARKS.md "Page faults").

`keep_freed_memory` raises both thresholds with ``mallopt`` (M_MMAP_THRESHOLD 256 MiB, M_TRIM_THRESHOLD
1 GiB), so freed buffers are reused instead of unmapped and faulted in again. The price: a worker
process keeps up to 1 GiB of freed heap (at most its own peak) instead of returning it. Every
evoloss worker calls it when it starts (`workers.jobs.JobRunner`); code that calls the trainers
directly may call it once. A no-op where the C library is not glibc (macOS, musl, Windows) and when
the environment sets ``EVOLOSS_KEEP_FREED_MEMORY=0``.
"""
from __future__ import annotations

import ctypes
import os
import platform

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h>
MMAP_THRESHOLD = 256 << 20  # allocations below this come from the heap (reused after free)
TRIM_THRESHOLD = 1 << 30  # free heap kept before any is returned to the kernel
ENV = "EVOLOSS_KEEP_FREED_MEMORY"

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process (once); True when they are set.

    False, and nothing changed, when ``EVOLOSS_KEEP_FREED_MEMORY`` is ``0`` / ``false`` / ``no`` / ``off``,
    when the C library is not glibc, or when ``mallopt`` refuses a value."""
    global _applied
    if _applied is not None:
        return _applied
    if os.environ.get(ENV, "").strip().lower() in ("0", "false", "no", "off"):
        return False  # not remembered: the environment may change before the next call
    _applied = _set_thresholds()
    return _applied


def _set_thresholds() -> bool:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success; set the mmap threshold first (setting either one fixes both)
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
