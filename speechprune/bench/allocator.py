"""The memory allocator ``bench`` times models under: glibc keeping freed memory for reuse.

glibc returns freed blocks to the operating system by rules that move with the process's
history (its mmap threshold grows with the blocks it has freed; the top of its heap is trimmed
past a threshold). A block taken back must then be faulted in, page by page, by the next call
that allocates it. So a model's time held page faults in some processes and not in others: the
quality benchmark's stock SSL teacher (4 s, 1 thread, AMD EPYC) took 62-63 ms in three `bench`
runs and 44-45 ms with freed memory kept, its 4x smaller student 15-17 ms and 13.2-13.5 ms.
Blocks of over 32 MiB (glibc's largest mmap threshold) are mapped afresh whenever the heap has no
free run that large, which again depends on history: conv layer 0 of a Base model at 10 s (a
65 MB output, 1 thread) took 49 ms with 16,000 page faults per call alone, 23 ms with none after
other shapes had grown the heap, and a cost table priced it by one timing and its steps by the other.

``steady_allocator`` fixes the rules in the process that times (each worker, the cost table's
process): every block comes from the heap (no block is mapped), and the heap is never trimmed.
Allocators people deploy with (jemalloc, tcmalloc) keep freed memory the same way. A user who
sets glibc's own variables, or preloads another allocator, is left as set.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters
TRIM_THRESHOLD = (1 << 31) - 1  # the largest mallopt takes: freed heap memory stays in the process
_USER_SETTINGS = ("MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES")


def allocator_policy() -> str:
    """What ``steady_allocator`` applies in this environment, in words (``bench``'s JSON)."""
    preloaded = [name for name in ("jemalloc", "tcmalloc", "mimalloc") if name in os.environ.get("LD_PRELOAD", "")]
    if preloaded:
        return f"{preloaded[0]} (LD_PRELOAD), as set"
    if not sys.platform.startswith("linux") or _glibc() is None:
        return "the system allocator, as set"
    if any(name in os.environ for name in _USER_SETTINGS):
        return "glibc, as the environment sets it (MALLOC_*, GLIBC_TUNABLES)"
    return "glibc keeping freed memory (no block mapped, heap never trimmed)"


def steady_allocator() -> str:
    """Fix glibc's rules in this process as ``allocator_policy`` says; returns it."""
    policy = allocator_policy()
    if policy.startswith("glibc keeping"):
        libc = _glibc()
        libc.mallopt(M_MMAP_MAX, 0)
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    return policy


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version  # glibc only (musl has no such symbol)
        return libc
    except (OSError, AttributeError):
        return None
