"""Process-wide memory-allocator setting for jobs that churn through large CPU tensors.

PyTorch's CPU allocator asks the C library for every tensor. glibc serves blocks above its mmap
threshold (at most 32 MB) with a fresh ``mmap`` and gives them back with ``munmap`` when freed, so a
training step that creates and frees large intermediates (the chapter-5 volume step: 24.6M ray points,
tensors of 100-400 MB) faults in and zeroes every page again on every step: 2 million minor page faults
and about 3 s of system time per step on our 2-core machine. ``keep_freed_memory`` tells glibc to serve
all blocks from its heap and keep freed memory for reuse (what PyTorch's CUDA caching allocator does on
the GPU); the process's resident memory then stays at its peak instead of shrinking between steps.

It is an opt-in: ``start_run`` calls it (in each Ray Train worker too) when the job's
``RunConfig.keep_freed_memory`` is True (the chapter-5 and NeRF presets set it). It does nothing off glibc
(macOS, Windows, musl).
"""

from __future__ import annotations

import ctypes
import sys

__all__ = ["keep_freed_memory"]

# mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse instead of unmapping it (see the module docstring).

    Sets ``M_MMAP_MAX = 0`` (no per-block ``mmap``), ``M_TRIM_THRESHOLD`` to 2 GiB and ``M_TOP_PAD`` to
    64 MiB. Safe to call more than once.

    Returns:
        True when the setting was applied; False off glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    if not hasattr(libc, "gnu_get_libc_version"):  # not glibc: mallopt may be a stub
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return (mallopt(_M_MMAP_MAX, 0) == 1) & (mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1) == 1) \
        & (mallopt(_M_TOP_PAD, 64 << 20) == 1)
