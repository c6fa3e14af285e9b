"""Process-level settings: the cache folder and CPU memory behaviour."""

from __future__ import annotations

import ctypes
import os
import platform
from pathlib import Path

_malloc_tuned = False


def cache_root() -> Path:
    """nfplug's cache (demo scene, compiled kernels): ``$NFPLUG_CACHE``, else ``~/.cache/nfplug``."""
    root = os.environ.get("NFPLUG_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "nfplug")
    return Path(root).expanduser()


def retain_freed_memory() -> bool:
    """Make glibc keep freed memory in the process instead of returning it to the OS.

    PyTorch's CPU allocator is plain ``malloc``: every activation of a 2^18-sample batch
    (tens of MB) is a fresh ``mmap`` whose pages fault in again on each step. On a
    2-core machine this was measured at ~150k page faults and ~0.3 s of system time per
    ngp training step, as long as the arithmetic itself (``tools/bench_field.py``:
    0.59 -> 0.92 M samples/s). Serving large blocks from the heap (``M_MMAP_MAX = 0``)
    and never trimming it (``M_TRIM_THRESHOLD``) removes them; the cost is that the
    process keeps its peak memory. Called once by the engine at start-up;
    ``NFPLUG_KEEP_MALLOC=1`` leaves malloc alone. Returns whether it is applied.
    """
    global _malloc_tuned
    if _malloc_tuned or os.environ.get("NFPLUG_KEEP_MALLOC") == "1" or platform.libc_ver()[0] != "glibc":
        return _malloc_tuned
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    _malloc_tuned = bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))
    return _malloc_tuned
