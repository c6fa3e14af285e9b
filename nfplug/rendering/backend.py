"""Which marcher and renderer run: nerfacc's CUDA kernels, or nfplug's PyTorch ones.

nerfacc's marching and packed-rendering kernels exist only when its CUDA extension is built
(a wheel with compiled kernels, or a JIT build with the CUDA toolkit's ``nvcc``). nfplug
uses them for CUDA tensors when they load, and its own marcher and renderer (same packed
layout, tested against nerfacc) everywhere else: on the CPU (a C++ marcher, with the PyTorch one
as its reference and fallback), and on a GPU without the kernels (PyTorch).
``NFPLUG_NERFACC_CUDA=0`` forces the PyTorch path on a GPU too.
"""

from __future__ import annotations

import functools
import os
from typing import Optional

import torch
from torch import Tensor


@functools.lru_cache(maxsize=None)
def nerfacc_cuda_kernels() -> Optional[str]:
    """``None`` if nerfacc's CUDA kernels are usable here, else why not (one phrase)."""
    if os.environ.get("NFPLUG_NERFACC_CUDA", "1") == "0":
        return "NFPLUG_NERFACC_CUDA=0"
    if not torch.cuda.is_available():
        return "no CUDA device"
    try:
        from nerfacc.cuda._backend import _C
    except Exception as e:  # a failed JIT build raises anything from OSError to RuntimeError
        return f"nerfacc's CUDA extension failed to load ({type(e).__name__})"
    if _C is None:
        return "nerfacc's CUDA extension is not built (no compiled kernels, no nvcc)"
    return None


def use_nerfacc_kernels(tensor: Tensor) -> bool:
    """True if ``tensor``'s rays go through nerfacc's CUDA kernels."""
    return tensor.is_cuda and nerfacc_cuda_kernels() is None


def describe(device: torch.device) -> str:
    """One line saying which marcher and renderer a scene on ``device`` uses."""
    if device.type != "cuda":
        from nfplug.rendering.marcher import native_marcher_available  # (marcher imports this module)

        marcher = "C++" if native_marcher_available(torch.zeros(1, 3, device=device)) else "PyTorch"
        return f"rendering: nfplug's {marcher} marcher and PyTorch renderer on the {device.type.upper()}"
    reason = nerfacc_cuda_kernels()
    if reason is None:
        return f"rendering: nerfacc's CUDA kernels on {device}"
    return f"rendering: nfplug's PyTorch marcher and renderer on {device} ({reason})"
