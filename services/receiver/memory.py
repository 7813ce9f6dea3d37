"""Keep freed memory for reuse while serving; give it back to the operating system after large requests.

glibc serves a freed multi-megabyte buffer's successors from its heap rather than from fresh mappings
(its mmap threshold rises to the largest size freed), and a heap only shrinks from the top. After a
16 MiB request has been split and sent, its buffers are free but still counted in the process's RSS.
``malloc_trim(0)`` releases those free pages. It is called only after requests that were split (rare,
large), not on the hot path: forcing every large buffer through mmap instead cost about 15% CPU.

On the hot path the opposite matters. With its defaults, glibc hands the top of the heap back whenever a
few hundred kilobytes there are free, and maps buffers over its current threshold afresh: every request's
body, Kafka batch and produce request (tens of kilobytes to a megabyte, copied several times) then lands
on pages the kernel must fault in and zero again, some 30 page faults per request and a tenth of the
process's CPU time in the kernel. ``keep_freed_memory_for_reuse`` sets both thresholds once at start-up
so that buffers up to 32 MiB come from the heap and freed pages stay mapped for the next request; the
heap holds no more than the in-flight limits let requests hold at once, and ``malloc_trim`` still runs
after large requests.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

_TRIM: Callable[[int], int] | None = None


def _load_malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to do
        return None
    return trim


_TRIM = _load_malloc_trim()

# glibc's mallopt parameters (malloc.h) and values: the largest mmap threshold glibc accepts on 64-bit
# (HEAP_MAX_SIZE / 2); a trim threshold above anything the in-flight limits let the heap hold free at its top.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
_TRIM_THRESHOLD_BYTES = 128 * 1024 * 1024


def keep_freed_memory_for_reuse() -> bool:
    """Once, at start-up: large buffers from the heap, freed pages kept; False where this is not glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES))


def release_free_memory() -> None:
    if _TRIM is not None:
        _TRIM(0)
