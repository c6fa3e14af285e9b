"""This machine's measured limits, for reading a benchmark's rate as a fraction of them.

- ``sgemm_gflops``: single-precision matrix-multiply rate (torch's MKL sgemm, 2048 x 2048, the
  benchmark's thread count), the practical arithmetic peak;
- ``gather_rate``: random 8-byte table reads per second (a C++ loop over random rows of a 16 MB
  ``[2^21, 2]`` float table, about the size of ngp's hash tables, on all threads), the bound of a
  hash-grid lookup.

Each is the best of a few repeats. Imported by ``tools/bench_field.py`` and ``tools/bench_scene.py``.
"""

from __future__ import annotations

import ctypes
import time
from typing import Dict

import torch

from nfplug.native import load_library

_GATHER = r"""
#include <cstdint>
extern "C" float gather_sum(const float* table, const int32_t* rows, int64_t n, int n_threads) {
    float total = 0.f;
#pragma omp parallel for num_threads(n_threads) reduction(+ : total)
    for (int64_t i = 0; i < n; ++i) total += table[2 * (int64_t)rows[i]] + table[2 * (int64_t)rows[i] + 1];
    return total;
}
"""

# Per sample of the ngp field at its defaults (16 levels x 2 features, hidden 64, geometry 15):
MLP_MACS = 32 * 64 + 64 * 16 + 31 * 64 + 64 * 64 + 64 * 3  # forward multiply-adds of the two MLPs
TRAIN_FLOPS_PER_SAMPLE = 3 * 2 * MLP_MACS  # forward, and backward (input and weight gradients): 3x
TRAIN_GATHERS_PER_SAMPLE = 2 * 16 * 8  # 16 levels x 8 corners, read forward and written backward


def _best(fn, repeats: int = 5) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def measure() -> Dict[str, float]:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    gemm = _best(lambda: torch.mm(a, b))
    table = torch.randn(2**21, 2)
    rows = torch.randint(0, 2**21, (2**24,), dtype=torch.int32)
    lib = load_library("gather_probe", _GATHER, "gather probe")
    if lib is None:  # no compiler: torch's index_select (slower per read than a C loop)
        gather = _best(lambda: table.index_select(0, rows))
    else:
        lib.gather_sum.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int]
        lib.gather_sum.restype = ctypes.c_float
        gather = _best(lambda: lib.gather_sum(table.data_ptr(), rows.data_ptr(), rows.numel(), torch.get_num_threads()))
    return {"sgemm_gflops": 2 * 2048**3 / gemm / 1e9, "gather_rate": rows.numel() / gather}


def fractions(samples_per_s: float, peak: Dict[str, float]) -> Dict[str, float]:
    """An ngp training rate as a fraction of the arithmetic and the gather peak."""
    return {
        "of_sgemm": samples_per_s * TRAIN_FLOPS_PER_SAMPLE / (peak["sgemm_gflops"] * 1e9),
        "of_gather": samples_per_s * TRAIN_GATHERS_PER_SAMPLE / peak["gather_rate"],
    }


def describe(peak: Dict[str, float]) -> str:
    return f"machine: sgemm {peak['sgemm_gflops']:.0f} GFLOP/s, random 8-byte gathers {peak['gather_rate'] / 1e6:.0f} M/s ({torch.get_num_threads()} threads)"
