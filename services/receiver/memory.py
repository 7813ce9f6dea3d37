"""Give freed memory back to the operating system after large requests.

glibc serves a freed multi-megabyte buffer's successors from its heap rather than from fresh mappings
(its mmap threshold rises to the largest size freed), and a heap only shrinks from the top. After a
16 MiB request has been split and sent, its buffers are free but still counted in the process's RSS.
``malloc_trim(0)`` releases those free pages. It is called only after requests that were split (rare,
large), not on the hot path: forcing every large buffer through mmap instead cost about 15% CPU.
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


def release_free_memory() -> None:
    if _TRIM is not None:
        _TRIM(0)
