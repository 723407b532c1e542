"""Opt-in, process-wide CPU allocator setting that makes batched generator calls cheaper.

glibc serves every allocation above 32 MB with a fresh mmap and returns it to the OS on free, so
each step of a batched fit (K latents at 128-256 px: activations of 33-130 MB) faults in and zeroes
its memory again; measured here this made K=4-8 batches cost more than K single calls.
`retain_freed_memory()` makes malloc keep freed blocks for reuse instead. Call it once, from the
application (the engine, a script), not from library code: it changes the whole process, and
freed memory then stays with the process.
"""

from __future__ import annotations

import ctypes
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def retain_freed_memory(trim_threshold: int = 2 ** 31 - 1) -> bool:
    """No mmap for large blocks, trim the heap only above `trim_threshold` bytes free; False if not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)) == 1
