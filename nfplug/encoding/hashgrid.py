"""Multiresolution hash encoding (Müller et al. 2022, "Instant Neural Graphics Primitives").

A point ``x`` in ``[0, 1]^D`` (D = 2 or 3) is looked up in ``L`` grids of growing
resolution ``N_l = floor(N_min * b^l)``, ``b = exp((ln N_max - ln N_min) / (L - 1))``
(paper eq. 2-3). Level ``l`` has ``(N_l + 1)^D`` vertices; when they fit in the table
(``T = 2^log2_hashmap_size`` entries) they are indexed densely (row-major, x fastest),
otherwise through the spatial hash of eq. 4, ``(g_0 * 1) xor (g_1 * 2654435761) xor
(g_2 * 805459861) mod T`` in uint32 arithmetic. The ``F`` features of the ``2^D``
corners of the cell around ``x * N_l`` are blended with (bi/tri)linear weights and the
levels are concatenated: ``[N, L * F]``.

All levels share one flat parameter table ``[sum_l T_l, F]``; level ``l`` owns rows
``offsets[l] : offsets[l] + T_l``. The cell corner is ``clamp(floor(x * N_l), 0, N_l - 1)``
so ``x = 1`` falls in the last cell (weight 1 on its upper corner) instead of indexing a
vertex past the grid.

Two implementations with the same semantics:

- :func:`hash_encode_reference`: pure PyTorch, differentiable by autograd.
- :func:`hash_encode`: a small C++/OpenMP kernel (:mod:`nfplug.native`: compiled once for
  this CPU with the system ``g++`` into a cache directory, ~1 s, and called through ``ctypes``).
  Its backward parallelises over levels, which own disjoint table rows, so the
  scatter-add of the table gradient needs no atomics. Falls back to the reference when
  the kernel cannot be built or the inputs are not CPU float32.
"""

from __future__ import annotations

import ctypes
import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from nfplug.config import check_memory, require_choice, require_range
from nfplug.profiling import section
from nfplug.native import load_library

PRIMES = (1, 2654435761, 805459861)


@dataclass(frozen=True)
class GridLayout:
    """Where each level lives in the flat table and how it is indexed.

    Attributes:
        dim: input dimension D (2 or 3).
        n_features: features per level F.
        resolutions: ``[L]`` cells per side ``N_l``.
        sizes: ``[L]`` table rows of each level ``T_l``.
        offsets: ``[L]`` first table row of each level.
        dense: ``[L]`` True when the level is indexed densely (no hashing).
    """

    dim: int
    n_features: int
    resolutions: Tuple[int, ...]
    sizes: Tuple[int, ...]
    offsets: Tuple[int, ...]
    dense: Tuple[bool, ...]

    @property
    def n_levels(self) -> int:
        return len(self.resolutions)

    @property
    def n_params(self) -> int:
        return self.offsets[-1] + self.sizes[-1]

    @property
    def out_dim(self) -> int:
        return self.n_levels * self.n_features


def grid_layout(
    dim: int,
    n_levels: int,
    n_features: int,
    log2_hashmap_size: int,
    base_resolution: int,
    max_resolution: int,
) -> GridLayout:
    """The per-level resolutions and table slices (paper eq. 2-3)."""
    if n_levels > 1:
        growth = math.exp((math.log(max_resolution) - math.log(base_resolution)) / (n_levels - 1))
    else:
        growth = 1.0
    table_size = 2**log2_hashmap_size
    resolutions, sizes, offsets, dense = [], [], [], []
    offset = 0
    for level in range(n_levels):
        # The epsilon keeps exact products such as 16 * 2^1 from flooring to 31.
        res = max(1, int(math.floor(base_resolution * growth**level + 1e-6)))
        n_vertices = (res + 1) ** dim
        is_dense = n_vertices <= table_size
        size = n_vertices if is_dense else table_size
        resolutions.append(res)
        sizes.append(size)
        offsets.append(offset)
        dense.append(is_dense)
        offset += size
    return GridLayout(dim, n_features, tuple(resolutions), tuple(sizes), tuple(offsets), tuple(dense))


def hash_corner(corner: Tensor, table_size: int) -> Tensor:
    """Spatial hash of integer grid vertices (paper eq. 4).

    Args:
        corner: ``[..., D]`` int64 non-negative vertex coordinates.
        table_size: ``T``.

    Returns:
        ``[...]`` int64 in ``[0, T)``.
    """
    h = torch.zeros(corner.shape[:-1], dtype=torch.int64, device=corner.device)
    for d in range(corner.shape[-1]):
        h = h ^ ((corner[..., d] * PRIMES[d]) & 0xFFFFFFFF)
    return h % table_size


REFERENCE_CHUNK = 1 << 16


def hash_encode_reference(x: Tensor, table: Tensor, layout: GridLayout) -> Tensor:
    """Multiresolution hash encoding in plain PyTorch (autograd for all gradients).

    Args:
        x: ``[N, D]`` positions in ``[0, 1]``.
        table: ``[n_params, F]`` the flat feature table of ``layout``.
        layout: see :func:`grid_layout`.

    Returns:
        ``[N, L * F]`` features, level-major. Computed :data:`REFERENCE_CHUNK` points at a time
        (its index tensors take about 1.5 KB per point).
    """
    if x.shape[0] > REFERENCE_CHUNK:
        return torch.cat([hash_encode_reference(x[i : i + REFERENCE_CHUNK], table, layout) for i in range(0, x.shape[0], REFERENCE_CHUNK)])
    n, dim = x.shape
    device = x.device
    res = torch.tensor(layout.resolutions, dtype=x.dtype, device=device)  # [L]
    res_i = torch.tensor(layout.resolutions, dtype=torch.int64, device=device)
    pos = x[:, None, :] * res[None, :, None]  # [N, L, D]
    cell = torch.minimum(pos.detach().floor().long().clamp_min(0), (res_i - 1)[None, :, None])
    frac = pos - cell.to(x.dtype)  # [N, L, D]

    bits = torch.tensor(
        [[(c >> d) & 1 for d in range(dim)] for c in range(2**dim)], dtype=torch.int64, device=device
    )  # [C, D]
    corner = cell[:, :, None, :] + bits[None, None]  # [N, L, C, D]

    strides = torch.stack([(res_i + 1) ** d for d in range(dim)], -1)  # [L, D]
    dense_index = (corner * strides[None, :, None, :]).sum(-1)
    sizes = torch.tensor(layout.sizes, dtype=torch.int64, device=device)
    hashed_index = hash_corner(corner, 2**32) % sizes[None, :, None]
    dense = torch.tensor(layout.dense, device=device)
    index = torch.where(dense[None, :, None], dense_index, hashed_index)
    index = index + torch.tensor(layout.offsets, dtype=torch.int64, device=device)[None, :, None]

    feats = table[index]  # [N, L, C, F]
    w = torch.where(bits.bool()[None, None], frac[:, :, None, :], 1 - frac[:, :, None, :])
    weights = w.prod(-1)  # [N, L, C]
    return (weights[..., None] * feats).sum(2).reshape(n, -1)


# ------------------------------------------------------------------- fast CPU kernel

_KERNEL_SOURCE = r"""
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>
#include <omp.h>

namespace {

const uint32_t PRIMES[3] = {1u, 2654435761u, 805459861u};

struct Level {
    float scale;
    int32_t res;
    uint32_t stride[3];
    uint32_t size;
    uint32_t mask;
    bool pow2;
    bool dense;
    int64_t offset;
};

void make_levels(int dim, int n_levels, const int32_t* res, const int64_t* sizes,
                 const int64_t* offsets, const int32_t* dense, Level* out) {
    for (int l = 0; l < n_levels; ++l) {
        Level& lv = out[l];
        lv.scale = (float)res[l];
        lv.res = res[l];
        uint32_t s = 1;
        for (int d = 0; d < dim; ++d) { lv.stride[d] = s; s *= (uint32_t)(res[l] + 1); }
        lv.size = (uint32_t)sizes[l];
        lv.pow2 = (lv.size & (lv.size - 1)) == 0;
        lv.mask = lv.size - 1;
        lv.dense = dense[l] != 0;
        lv.offset = offsets[l];
    }
}

template <int D>
inline void locate(const float* x, const Level& lv, uint32_t* cell, float* frac) {
    for (int d = 0; d < D; ++d) {
        float p = x[d] * lv.scale;
        int g = (int)std::floor(p);
        g = g < 0 ? 0 : (g > lv.res - 1 ? lv.res - 1 : g);
        cell[d] = (uint32_t)g;
        frac[d] = p - (float)g;
    }
}

// Table rows and (bi/tri)linear weights of the 2^D corners of x's cell in one level.
template <int D>
inline void corners(const float* x, const Level& lv, int64_t* row, float* w, float* frac) {
    const int C = 1 << D;
    uint32_t cell[D];
    locate<D>(x, lv, cell, frac);
    if (lv.dense) {
        uint32_t base = 0;
        for (int d = 0; d < D; ++d) base += cell[d] * lv.stride[d];
        for (int c = 0; c < C; ++c) {
            uint32_t idx = base;
            for (int d = 0; d < D; ++d) idx += ((c >> d) & 1) ? lv.stride[d] : 0u;
            row[c] = lv.offset + (int64_t)idx;
        }
    } else {
        uint32_t h0[D], h1[D];
        for (int d = 0; d < D; ++d) { h0[d] = cell[d] * PRIMES[d]; h1[d] = (cell[d] + 1u) * PRIMES[d]; }
        for (int c = 0; c < C; ++c) {
            uint32_t h = 0;
            for (int d = 0; d < D; ++d) h ^= ((c >> d) & 1) ? h1[d] : h0[d];
            h = lv.pow2 ? (h & lv.mask) : (h % lv.size);
            row[c] = lv.offset + (int64_t)h;
        }
    }
    for (int c = 0; c < C; ++c) {
        float wc = 1.f;
        for (int d = 0; d < D; ++d) wc *= ((c >> d) & 1) ? frac[d] : 1.f - frac[d];
        w[c] = wc;
    }
}

// Reads one float per 64-byte line of a level's table slice, in address order, when the samples
// will read more corners than the slice has rows. The hardware prefetcher streams the slice into
// this core's cache, so the random corner reads that follow hit instead of each waiting for its own
// miss: on 37k samples of a lego training step, forward 1.3-1.8x and table gradient 1.3-1.7x
// (2^17-row levels, AMD EPYC, 1-2 threads); 1.1x on 260k random points in the box.
inline void warm(const float* slice, const Level& lv, int F, int64_t n_corner_reads) {
    if ((int64_t)lv.size >= n_corner_reads) return;
    const int64_t n_floats = (int64_t)lv.size * F;
    float sum = 0.f;
    for (int64_t k = 0; k < n_floats; k += 16) sum += slice[k];
    volatile float sink = sum;  // keeps the loads
    (void)sink;
}

// Level-major loops: one level's table slice stays in cache while all samples visit it.
template <int D, int F>
void forward(const float* x, const float* table, float* out, int64_t n, int n_levels,
             const Level* levels, int n_threads) {
    const int C = 1 << D;
    const int64_t width = (int64_t)n_levels * F;
#pragma omp parallel num_threads(n_threads)
    for (int l = 0; l < n_levels; ++l) {
        const Level lv = levels[l];
        warm(table + lv.offset * F, lv, F, n * C);
#pragma omp for schedule(static) nowait
        for (int64_t i = 0; i < n; ++i) {
            int64_t row[C];
            float w[C], frac[D];
            corners<D>(x + i * D, lv, row, w, frac);
            float acc[F] = {};
            for (int c = 0; c < C; ++c) {
                const float* t = table + row[c] * F;
                for (int f = 0; f < F; ++f) acc[f] += w[c] * t[f];
            }
            for (int f = 0; f < F; ++f) out[i * width + l * F + f] = acc[f];
        }
    }
}

// Levels own disjoint table rows, so threads split the levels and scatter without atomics.
template <int D, int F>
void backward_table(const float* x, const float* grad_out, float* grad_table, int64_t n,
                    int n_levels, const Level* levels, int n_threads) {
    const int C = 1 << D;
    const int64_t width = (int64_t)n_levels * F;
#pragma omp parallel for num_threads(n_threads) schedule(dynamic, 1)
    for (int l = 0; l < n_levels; ++l) {
        const Level lv = levels[l];
        warm(grad_table + lv.offset * F, lv, F, n * C);
        for (int64_t i = 0; i < n; ++i) {
            int64_t row[C];
            float w[C], frac[D];
            corners<D>(x + i * D, lv, row, w, frac);
            const float* g = grad_out + i * width + l * F;
            for (int c = 0; c < C; ++c) {
                float* t = grad_table + row[c] * F;
                for (int f = 0; f < F; ++f) t[f] += w[c] * g[f];
            }
        }
    }
}

// d w_c / d frac_d for the 2^D corners of a cell (the product of the other axes' weights, signed).
template <int D>
inline void corner_weight_grads(const float* frac, float (*dw)[D]) {
    for (int c = 0; c < (1 << D); ++c)
        for (int d = 0; d < D; ++d) {
            float g = ((c >> d) & 1) ? 1.f : -1.f;
            for (int e = 0; e < D; ++e)
                if (e != d) g *= ((c >> e) & 1) ? frac[e] : 1.f - frac[e];
            dw[c][d] = g;
        }
}

// One sample's backward in one level, from g (its gradient of this level's F outputs): adds
// N_l * d out / d x to gx_out[0..D) and, with TABLE, w_c * g to each corner's row of grad_table.
template <int D, int F, bool TABLE>
inline void sample_backward(const float* xi, const Level& lv, const float* table, const float* g,
                            float* grad_table, float* gx_out) {
    const int C = 1 << D;
    int64_t row[C];
    float w[C], frac[D], dw[C][D];
    corners<D>(xi, lv, row, w, frac);
    corner_weight_grads<D>(frac, dw);
    float gx[D] = {};
    for (int c = 0; c < C; ++c) {
        const float* t = table + row[c] * F;
        float dot = 0.f;
        for (int f = 0; f < F; ++f) dot += g[f] * t[f];
        if (TABLE) {
            float* gt = grad_table + row[c] * F;
            for (int f = 0; f < F; ++f) gt[f] += w[c] * g[f];
        }
        for (int d = 0; d < D; ++d) gx[d] += dot * dw[c][d];
    }
    for (int d = 0; d < D; ++d) gx_out[d] += lv.scale * gx[d];
}

// d out / d x_d = N_l * sum_c <grad, feature_c> * d w_c / d frac_d (grad_x starts at zero).
template <int D, int F>
void backward_input(const float* x, const float* table, const float* grad_out, float* grad_x,
                    int64_t n, int n_levels, const Level* levels, int n_threads) {
    const int C = 1 << D;
    const int64_t width = (int64_t)n_levels * F;
#pragma omp parallel num_threads(n_threads)
    for (int l = 0; l < n_levels; ++l) {
        const Level lv = levels[l];
        warm(table + lv.offset * F, lv, F, n * C);
#pragma omp for schedule(static) nowait
        for (int64_t i = 0; i < n; ++i)
            sample_backward<D, F, false>(x + i * D, lv, table, grad_out + i * width + l * F, nullptr, grad_x + i * D);
    }
}

// Table and input gradients in one pass (what backward_table and backward_input compute, summed
// in another order): each level's corners are located and its table rows read once. Threads take
// the levels in turn (level l to thread l % threads, so the split is fixed for a thread count),
// scatter into their levels' disjoint rows without atomics, and sum their levels' input gradient
// into their own copy; the copies are added in thread order: deterministic for a thread count.
template <int D, int F>
void backward_both(const float* x, const float* table, const float* grad_out, float* grad_table,
                   float* grad_x, int64_t n, int n_levels, const Level* levels, int n_threads) {
    const int C = 1 << D;
    const int64_t width = (int64_t)n_levels * F;
    if (n_threads > n_levels) n_threads = n_levels;
    std::vector<float> copies((size_t)(n_threads - 1) * n * D, 0.f);  // thread 0 adds into grad_x
#pragma omp parallel num_threads(n_threads)
    {
        const int tid = omp_get_thread_num();
        const int team = omp_get_num_threads();
        float* gx_out = tid == 0 ? grad_x : copies.data() + (size_t)(tid - 1) * n * D;
        for (int l = tid; l < n_levels; l += team) {
            const Level lv = levels[l];
            warm(table + lv.offset * F, lv, F, n * C);
            warm(grad_table + lv.offset * F, lv, F, n * C);
            for (int64_t i = 0; i < n; ++i)
                sample_backward<D, F, true>(x + i * D, lv, table, grad_out + i * width + l * F, grad_table, gx_out + i * D);
        }
    }
    for (int t = 1; t < n_threads; ++t) {
        const float* copy = copies.data() + (size_t)(t - 1) * n * D;
#pragma omp parallel for num_threads(n_threads) schedule(static)
        for (int64_t k = 0; k < n * D; ++k) grad_x[k] += copy[k];
    }
}

template <int D, int F>
void run(int op, const float* x, const float* table, const float* grad_out, float* out, float* out2,
         int64_t n, int n_levels, const Level* levels, int n_threads) {
    if (op == 0) forward<D, F>(x, table, out, n, n_levels, levels, n_threads);
    else if (op == 1) backward_table<D, F>(x, grad_out, out, n, n_levels, levels, n_threads);
    else if (op == 2) backward_input<D, F>(x, table, grad_out, out, n, n_levels, levels, n_threads);
    else backward_both<D, F>(x, table, grad_out, out, out2, n, n_levels, levels, n_threads);
}

}  // namespace

// op: 0 forward (out [n, L*F]), 1 table gradient (out [n_params, F], accumulated),
// 2 input gradient (out [n, D], accumulated), 3 both (out the table's, out2 the input's). Returns 0,
// or -1 for an unsupported (dim, F).
extern "C" int nfplug_hash_encode(int op, int dim, int n_features, int n_levels,
                                  const int32_t* res, const int64_t* sizes,
                                  const int64_t* offsets, const int32_t* dense,
                                  const float* x, const float* table, const float* grad_out,
                                  float* out, float* out2, int64_t n, int n_threads) {
    Level levels[64];
    if (n_levels > 64) return -1;
    make_levels(dim, n_levels, res, sizes, offsets, dense, levels);
#define NFPLUG_CASE(DD, FF) \
    if (dim == DD && n_features == FF) { run<DD, FF>(op, x, table, grad_out, out, out2, n, n_levels, levels, n_threads); return 0; }
    NFPLUG_CASE(2, 1) NFPLUG_CASE(2, 2) NFPLUG_CASE(2, 4) NFPLUG_CASE(2, 8)
    NFPLUG_CASE(3, 1) NFPLUG_CASE(3, 2) NFPLUG_CASE(3, 4) NFPLUG_CASE(3, 8)
#undef NFPLUG_CASE
    return -1;
}
"""

_kernel: Optional[ctypes.CDLL] = None


def load_kernel() -> Optional[ctypes.CDLL]:
    """The compiled hash-grid kernel (:func:`nfplug.native.load_library`); None if unavailable.

    Set ``NFPLUG_NO_CPP_KERNEL=1`` to force the pure-PyTorch path.
    """
    global _kernel
    if _kernel is None:
        lib = load_library("hashgrid", _KERNEL_SOURCE, "hash-grid")
        if lib is None:
            return None
        fn = lib.nfplug_hash_encode
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_int] * 4 + [ctypes.c_void_p] * 9 + [ctypes.c_int64, ctypes.c_int]
        _kernel = lib
    return _kernel


class _LayoutTensors:
    """The layout as contiguous arrays the kernel reads (kept alive with the module)."""

    def __init__(self, layout: GridLayout) -> None:
        self.layout = layout
        self.res = torch.tensor(layout.resolutions, dtype=torch.int32)
        self.sizes = torch.tensor(layout.sizes, dtype=torch.int64)
        self.offsets = torch.tensor(layout.offsets, dtype=torch.int64)
        self.dense = torch.tensor(layout.dense, dtype=torch.int32)

    def call(self, op: int, x: Tensor, table: Tensor, grad_out: Optional[Tensor], out: Tensor, out2: Optional[Tensor] = None) -> None:
        kernel = load_kernel()
        assert kernel is not None
        lay = self.layout
        status = kernel.nfplug_hash_encode(
            op,
            lay.dim,
            lay.n_features,
            lay.n_levels,
            self.res.data_ptr(),
            self.sizes.data_ptr(),
            self.offsets.data_ptr(),
            self.dense.data_ptr(),
            x.data_ptr(),
            table.data_ptr(),
            grad_out.data_ptr() if grad_out is not None else None,
            out.data_ptr(),
            out2.data_ptr() if out2 is not None else None,
            x.shape[0],
            torch.get_num_threads(),
        )
        if status != 0:
            raise RuntimeError(f"hash-grid kernel does not support dim={lay.dim}, F={lay.n_features}")


class _HashEncode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, table: Tensor, lt: _LayoutTensors) -> Tensor:  # type: ignore[override]
        x = x.contiguous()
        table = table.contiguous()
        out = torch.empty(x.shape[0], lt.layout.out_dim, dtype=x.dtype)
        lt.call(0, x, table, None, out)
        ctx.save_for_backward(x, table)
        ctx.lt = lt
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        x, table = ctx.saved_tensors
        lt: _LayoutTensors = ctx.lt
        grad_out = grad_out.contiguous()
        grad_x = grad_table = None
        with section("backward: hash encoding"):
            if ctx.needs_input_grad[1]:
                grad_table = torch.zeros_like(table)
            if ctx.needs_input_grad[0]:
                grad_x = torch.zeros_like(x)
            if grad_table is not None and grad_x is not None:
                lt.call(3, x, table, grad_out, grad_table, grad_x)  # one pass for both
            elif grad_table is not None:
                lt.call(1, x, table, grad_out, grad_table)
            elif grad_x is not None:
                lt.call(2, x, table, grad_out, grad_x)
        return grad_x, grad_table, None


class _HashEncodeGiven(_HashEncode):
    """The encoding of ``x`` already computed (``out``, by an earlier no-grad pass over the same
    points): returned as it is, with the kernel's backward."""

    @staticmethod
    def forward(ctx, x: Tensor, table: Tensor, lt: _LayoutTensors, out: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x.contiguous(), table.contiguous())
        ctx.lt = lt
        return out.view_as(out)

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        return (*_HashEncode.backward(ctx, grad_out), None)


_SUPPORTED = {(d, f) for d in (2, 3) for f in (1, 2, 4, 8)}


def _kernel_runs(x: Tensor, table: Tensor, layout: GridLayout) -> bool:
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and table.dtype == torch.float32
        and (layout.dim, layout.n_features) in _SUPPORTED
        and layout.n_levels <= 64
        and load_kernel() is not None
    )


def hash_encode(
    x: Tensor, table: Tensor, layout: GridLayout, _lt: Optional[_LayoutTensors] = None
) -> Tensor:
    """Multiresolution hash encoding, C++ kernel when possible (same result as the reference).

    Args:
        x: ``[N, D]`` positions in ``[0, 1]``.
        table: ``[n_params, F]`` the flat feature table of ``layout``.
        layout: see :func:`grid_layout`.

    Returns:
        ``[N, L * F]`` features, level-major. Differentiable with respect to ``x`` and
        ``table`` (first order only).
    """
    if not _kernel_runs(x, table, layout):
        return hash_encode_reference(x, table, layout)
    return _HashEncode.apply(x, table, _lt if _lt is not None else _LayoutTensors(layout))


class HashGrid(nn.Module):
    """A learnable multiresolution hash grid: ``[N, D]`` in ``[0, 1]`` -> ``[N, L * F]``.

    Table entries start uniform in ``[-1e-4, 1e-4]`` as in instant-ngp.
    """

    def __init__(
        self,
        dim: int,
        n_levels: int = 16,
        n_features: int = 2,
        log2_hashmap_size: int = 19,
        base_resolution: int = 16,
        max_resolution: int = 2048,
        use_kernel: bool = True,
    ) -> None:
        super().__init__()
        self.layout = grid_layout(dim, n_levels, n_features, log2_hashmap_size, base_resolution, max_resolution)
        self.use_kernel = use_kernel
        self.table = nn.Parameter(torch.empty(self.layout.n_params, n_features).uniform_(-1e-4, 1e-4))
        self._lt = _LayoutTensors(self.layout)
        self.log2_hashmap_size = log2_hashmap_size

    @property
    def out_dim(self) -> int:
        return self.layout.out_dim

    def extra_repr(self) -> str:
        lay = self.layout
        return (
            f"{lay.dim}D, {lay.n_levels} levels of {lay.n_features} features, {lay.resolutions[0]} to "
            f"{lay.resolutions[-1]} cells a side, at most 2^{self.log2_hashmap_size} rows a level"
        )

    def forward(self, x: Tensor, features: Optional[Tensor] = None) -> Tensor:
        """``features``: this encoding of ``x``, computed earlier without gradients (by the same
        kernel): reused, with gradients flowing to the table (and ``x``) as if it were computed here."""
        with section("hash encoding forward"):
            if features is not None and self.use_kernel and self.kernel_runs(x):
                return _HashEncodeGiven.apply(x, self.table, self._lt, features)
            if self.use_kernel:
                return hash_encode(x, self.table, self.layout, self._lt)
            return hash_encode_reference(x, self.table, self.layout)

    def kernel_runs(self, x: Tensor) -> bool:
        """Whether :func:`hash_encode` runs the C++ kernel on ``x`` (else the reference)."""
        return _kernel_runs(x, self.table, self.layout)


MAX_LEVELS = 128  # tiny-cuda-nn's limit on hash-grid levels
MAX_RESOLUTION = 2**24  # finer cells than float32 positions in [0, 1] can tell apart
FEATURES_PER_LEVEL = (1, 2, 4, 8)  # the kernel's
MAX_LOG2_HASHMAP_SIZE = 31  # the kernel indexes a level's table with uint32


def validate_hash_grid(c: object, grids: Tuple[Tuple[str, int, int, int], ...]) -> None:
    """The hash-grid options of a field's Config (``ngp`` and ``streamable``) (``c.n_features_per_level``,
    ``c.log2_hashmap_size``, ``c.base_resolution``), and the memory of the largest of ``grids``
    (``(task, dim, n_levels, max_resolution)``): its float32 tables, their gradients and Adam's
    two moments must fit in the machine's memory."""
    for _, _, n_levels, _ in grids:
        require_range(n_levels, "--field.n-levels", 1, MAX_LEVELS)
    require_choice(c.n_features_per_level, "--field.n-features-per-level", FEATURES_PER_LEVEL)
    require_range(c.base_resolution, "--field.base-resolution", 1, MAX_RESOLUTION)
    log2 = min(max(c.log2_hashmap_size, 0), 64)  # the estimate must not build a huge integer
    tables = []
    for task, dim, n_levels, max_res in grids:
        layout = grid_layout(dim, n_levels, c.n_features_per_level, log2, c.base_resolution, max_res)
        tables.append((layout.n_params * c.n_features_per_level * 4, task))
    table, task = max(tables)
    what = f"a {task}'s hash tables ({table / 1e9:.1f} GB), with their gradients and Adam's moments,"
    check_memory(4 * table, "--field.log2-hashmap-size", what)
    require_range(c.log2_hashmap_size, "--field.log2-hashmap-size", 1, MAX_LOG2_HASHMAP_SIZE)
