"""Small C++ kernels, compiled for the machine they run on and loaded through ``ctypes``.

Each kernel is one C++ source string. On first use it is compiled with the system ``g++``
(``$CXX``) and ``-march=native`` into nfplug's cache folder, under a name hashed from the
source, the flags and the CPU's model and flags: a binary built for one instruction set (AVX-512,
say) is never loaded on a CPU without it. Building takes about a second; torch's own
``cpp_extension.load_inline`` needs ~30 s here because of the torch headers.

Without a compiler, or with ``NFPLUG_NO_CPP_KERNEL=1``, :func:`load_library` returns None
(after one warning) and callers use their PyTorch reference path.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Dict, Optional, Tuple

from nfplug.runtime import cache_root

COMPILE_FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c++17")
_loaded: Dict[str, Optional[ctypes.CDLL]] = {}


def cpu_signature() -> str:
    """CPU model and flags: ``-march=native`` binaries must not move to another CPU."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return ""
    return "".join(line for line in lines[:40] if line.startswith(("model name", "flags")))


def load_library(name: str, source: str, what: str, extra_flags: Tuple[str, ...] = ()) -> Optional[ctypes.CDLL]:
    """Build (once, cached by source/flags/CPU hash) and load ``source``; None if unavailable.

    Args:
        name: file name stem of the library in the cache (``kernels/<name>_<hash>.so``).
        source: C++ source with ``extern "C"`` entry points.
        what: what the kernel is, for the warning when it cannot be built.
        extra_flags: compiler flags after :data:`COMPILE_FLAGS`.
    """
    if name in _loaded:
        return _loaded[name]
    if os.environ.get("NFPLUG_NO_CPP_KERNEL") == "1":
        _loaded[name] = None
        return None
    flags = COMPILE_FLAGS + tuple(extra_flags)
    key = hashlib.sha256((source + " ".join(flags) + cpu_signature()).encode()).hexdigest()[:16]
    lib_path = cache_root() / "kernels" / f"{name}_{key}.so"
    lib: Optional[ctypes.CDLL] = None
    try:
        if not lib_path.exists():
            lib_path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory() as tmp:
                src = Path(tmp) / f"{name}.cpp"
                src.write_text(source)
                built = Path(tmp) / f"{name}.so"
                cxx = os.environ.get("CXX", "g++")
                subprocess.run([cxx, *flags, str(src), "-o", str(built)], check=True, capture_output=True, timeout=120)
                # Copy next to the target and rename: concurrent processes never load a
                # half-written library.
                tmp_target = lib_path.with_suffix(f".{os.getpid()}.tmp")
                tmp_target.write_bytes(built.read_bytes())
                os.replace(tmp_target, lib_path)
        lib = ctypes.CDLL(str(lib_path))
    except (OSError, subprocess.SubprocessError) as err:
        stderr = getattr(err, "stderr", None) or b""
        reason = stderr.decode(errors="replace").strip().splitlines()[:1] or [str(err)]
        warnings.warn(f"nfplug: C++ {what} kernel unavailable ({reason[0][:200]}); using the slower PyTorch path")
    _loaded[name] = lib
    return lib
