"""The Instant-NGP scene field's two small MLPs in one C++ kernel (forward and backward).

The ``ngp`` field maps hash-grid features ``feat [N, L*F]`` and spherical-harmonics view
features ``sh [N, 16]`` to colour and density (nerfacc's instant-ngp layout, no biases)::

    h1  = relu(feat @ W1^T)                 density MLP, hidden layer   [N, H]
    h   = h1 @ W2^T                         raw density + geometry      [N, 1 + G]
    cin = [h[:, 1:], sh]                                                [N, G + 16]
    c1  = relu(cin @ Wc1^T)                 colour MLP                  [N, H]
    c2  = relu(c1 @ Wc2^T)                                              [N, H]
    rgb = sigmoid(c2 @ Wc3^T)                                           [N, 3]
    sigma = trunc_exp(h[:, 0] - 1)   (or softplus)

In PyTorch each of these is a separate pass over memory (a matmul, a ReLU, a concatenation,
their backward passes, autograd bookkeeping). The kernel runs them on blocks of 32 samples whose
activations stay in the L1 cache, with register-tiled matrix products the compiler vectorises
for the CPU it is built on (AVX-512 or AVX2, :mod:`nfplug.native`). Every width is padded to a
multiple of 16 with zero weights, which changes nothing: a zero row gives a zero activation.

Three operations:

- :func:`ngp_density`: ``feat -> sigma`` without gradients (occupancy-grid updates, the
  density test while marching); only the first output of the second layer is computed.
- :func:`ngp_mlps`: ``(feat, sh) -> (rgb, sigma)``, differentiable with respect to the
  features, ``sh`` and all five weight matrices. Training saves each block's activations
  (about 1 KB per sample); without gradients nothing is saved.
- weight gradients are summed per thread and then across threads in a fixed order, so a
  run is deterministic for a given thread count.

The PyTorch reference is the field's own modules (``NGPField`` with ``fused = False``);
``tests/test_fused_ngp.py`` checks values and every gradient against it.
"""

from __future__ import annotations

import ctypes
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from nfplug.native import load_library

PAD = 16  # every width is padded to a multiple of this (one AVX-512 vector of floats)
BLOCK = 32  # samples per block (the kernel's B)

_SOURCE = r"""
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>
#include <omp.h>

namespace {

constexpr int B = 32;   // samples per block
constexpr int P = 16;   // every width is padded to a multiple of P (the Python side's PAD)
#ifdef __AVX512F__
constexpr int V = 16;   // floats in one vector register (zmm)
constexpr int RB = 4;   // register tile: RB rows x NV_MAX vectors of accumulators (16 of 32 zmm)
constexpr int NV_MAX = 4;
#else
// AVX2 (ymm). A 16-float vector type here is split by GCC's generic vector lowering into halves
// kept on the stack: the products ran 10-20x slower than with one register's width.
constexpr int V = 8;
constexpr int RB = 2;   // 16 ymm registers: 2 rows x 4 vectors of accumulators (8 ymm) plus the loaded row
constexpr int NV_MAX = 4;
#endif
// One vector of V floats (GCC's vector extension), kept in a register. Memory is read and written
// through the unaligned, may-alias twin ``vec_u`` (like the intrinsics' __m256_u): a local array of an
// under-aligned vector type, or a memcpy into one, made GCC keep the accumulators on the stack and
// reload them through 16-byte halves (store-forwarding stalls, 10x slower on AVX2).
typedef float vec __attribute__((vector_size(V * sizeof(float))));
typedef float vec_u __attribute__((vector_size(V * sizeof(float)), aligned(4), may_alias));
inline vec loadu(const float* p) { return *reinterpret_cast<const vec_u*>(p); }
inline void storeu(float* p, vec x) { *reinterpret_cast<vec_u*>(p) = x; }

// C[r][n0 + n] (+)= sum_k A[r * ars + k * acs] * M[k * ldm + n0 + n] for r in [r0, r0 + RB), n < NV * V.
template <int NV, bool ACC>
inline void panel(const float* A, int ars, int acs, int r0, int K, const float* M, int ldm, int n0,
                  float* C, int ldc) {
    vec acc[RB][NV];
    for (int r = 0; r < RB; ++r)
        for (int v = 0; v < NV; ++v) acc[r][v] = vec{};
    const float* a0 = A + (int64_t)r0 * ars;
    for (int k = 0; k < K; ++k) {
        vec m[NV];
        const float* row = M + (int64_t)k * ldm + n0;
        for (int v = 0; v < NV; ++v) m[v] = loadu(row + v * V);
        const float* a = a0 + (int64_t)k * acs;
        for (int r = 0; r < RB; ++r) {
            const float s = a[(int64_t)r * ars];
            for (int v = 0; v < NV; ++v) acc[r][v] += s * m[v];
        }
    }
    for (int r = 0; r < RB; ++r) {
        float* c = C + (int64_t)(r0 + r) * ldc + n0;
        for (int v = 0; v < NV; ++v) {
            vec out = acc[r][v];
            if (ACC) out += loadu(c + v * V);
            storeu(c + v * V, out);
        }
    }
}

// C [R, N] (+)= A [R, K] @ M [K, N]; A's element (r, k) is A[r * ars + k * acs]; R a multiple of
// RB, N a multiple of V.
template <bool ACC>
void mm(const float* A, int ars, int acs, int R, int K, const float* M, int N, float* C, int ldc) {
    for (int r0 = 0; r0 < R; r0 += RB) {
        int n0 = 0;
        for (; n0 + NV_MAX * V <= N; n0 += NV_MAX * V) panel<NV_MAX, ACC>(A, ars, acs, r0, K, M, N, n0, C, ldc);
        switch ((N - n0) / V) {
            case 3: panel<3, ACC>(A, ars, acs, r0, K, M, N, n0, C, ldc); break;
            case 2: panel<2, ACC>(A, ars, acs, r0, K, M, N, n0, C, ldc); break;
            case 1: panel<1, ACC>(A, ars, acs, r0, K, M, N, n0, C, ldc); break;
            default: break;
        }
    }
}

inline void relu(float* x, int n) {
    for (int i = 0; i < n; ++i) x[i] = x[i] > 0.f ? x[i] : 0.f;
}

inline void relu_backward(float* g, const float* y, int n) {
    for (int i = 0; i < n; ++i) g[i] = y[i] > 0.f ? g[i] : 0.f;
}

inline float activation(float raw, int act) {
    if (act == 0) return std::exp(raw);                              // trunc_exp
    return raw > 20.f ? raw : std::log1p(std::exp(raw));             // softplus (torch's threshold)
}

inline float activation_grad(float raw, int act) {
    if (act == 0) return std::exp(std::min(raw, 15.f));
    if (raw > 20.f) return 1.f;
    const float z = std::exp(raw);
    return z / (z + 1.f);
}

struct Net {
    int fin, fp, h, gp, g, cp;       // feature width and padded, hidden, 1+G padded, G, colour input padded
    const float *w1, *w1t, *w2, *w2t, *c1, *c1t, *c2, *c2t, *c3, *c3t;  // padded, [out][in] and [in][out]
    int act;
};

// Per-sample floats of a block's saved activations: h1, h, cin, c1, c2.
inline int saved_width(const Net& n) { return 3 * n.h + n.gp + n.cp; }

inline void load_features(const Net& n, const float* feat, int64_t i0, int rows, float* tile) {
    std::memset(tile, 0, sizeof(float) * B * n.fp);
    for (int b = 0; b < rows; ++b) std::memcpy(tile + b * n.fp, feat + (i0 + b) * n.fin, sizeof(float) * n.fin);
}

// One block forward. tiles: h1 [B][h], hh [B][gp], cin [B][cp], c1 [B][h], c2 [B][h]; z [B][P].
void block_forward(const Net& n, const float* ft, const float* sh, int64_t i0, int rows, float* h1, float* hh,
                   float* cin, float* c1, float* c2, float* z, float* rgb, float* sigma) {
    mm<false>(ft, n.fp, 1, B, n.fp, n.w1t, n.h, h1, n.h);
    relu(h1, B * n.h);
    mm<false>(h1, n.h, 1, B, n.h, n.w2t, n.gp, hh, n.gp);
    std::memset(cin, 0, sizeof(float) * B * n.cp);
    for (int b = 0; b < rows; ++b) {
        for (int j = 0; j < n.g; ++j) cin[b * n.cp + j] = hh[b * n.gp + 1 + j];
        for (int j = 0; j < 16; ++j) cin[b * n.cp + n.g + j] = sh[(i0 + b) * 16 + j];
    }
    mm<false>(cin, n.cp, 1, B, n.cp, n.c1t, n.h, c1, n.h);
    relu(c1, B * n.h);
    mm<false>(c1, n.h, 1, B, n.h, n.c2t, n.h, c2, n.h);
    relu(c2, B * n.h);
    mm<false>(c2, n.h, 1, B, n.h, n.c3t, P, z, P);
    for (int b = 0; b < rows; ++b) {
        for (int c = 0; c < 3; ++c) rgb[(i0 + b) * 3 + c] = 1.f / (1.f + std::exp(-z[b * P + c]));
        sigma[i0 + b] = activation(hh[b * n.gp] - 1.f, n.act);
    }
}

}  // namespace

// feat [n, fin], sh [n, 16] -> rgb [n, 3], sigma [n]; saved [n_blocks * B * saved_width] or null.
extern "C" void nfplug_ngp_forward(const int* dims, const float* const* w, int act, const float* feat,
                                   const float* sh, float* rgb, float* sigma, float* saved, int64_t n,
                                   int n_threads) {
    Net net{dims[0], dims[1], dims[2], dims[3], dims[4], dims[5],
            w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7], w[8], w[9], act};
    const int64_t n_blocks = (n + B - 1) / B;
    const int sw = saved_width(net);
#pragma omp parallel num_threads(n_threads)
    {
        std::vector<float> scratch((size_t)B * (net.fp + sw + P));
        float* ft = scratch.data();
        float* own = ft + B * net.fp;
        float* z = own + B * sw;
#pragma omp for schedule(static)
        for (int64_t blk = 0; blk < n_blocks; ++blk) {
            const int64_t i0 = blk * B;
            const int rows = (int)std::min<int64_t>(B, n - i0);
            float* s = saved ? saved + blk * B * sw : own;
            float* h1 = s;
            float* hh = h1 + B * net.h;
            float* cin = hh + B * net.gp;
            float* c1 = cin + B * net.cp;
            float* c2 = c1 + B * net.h;
            load_features(net, feat, i0, rows, ft);
            block_forward(net, ft, sh, i0, rows, h1, hh, cin, c1, c2, z, rgb, sigma);
        }
    }
}

// Gradients from grad_rgb [n, 3], grad_sigma [n]: grad_feat [n, fin], grad_sh [n, 16] (either may be
// null) and the padded weight gradients dw[0..4] (same shapes as w[0], w[2], w[4], w[6], w[8]; overwritten).
extern "C" void nfplug_ngp_backward(const int* dims, const float* const* w, int act, const float* feat,
                                    const float* rgb, const float* saved, const float* grad_rgb,
                                    const float* grad_sigma, float* grad_feat, float* grad_sh,
                                    float* const* dw, int64_t n, int n_threads) {
    Net net{dims[0], dims[1], dims[2], dims[3], dims[4], dims[5],
            w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7], w[8], w[9], act};
    const int64_t n_blocks = (n + B - 1) / B;
    const int sw = saved_width(net);
    const int sizes[5] = {net.h * net.fp, net.gp * net.h, net.h * net.cp, net.h * net.h, P * net.h};
    int total = 0;
    for (int i = 0; i < 5; ++i) total += sizes[i];
    std::vector<float> partial((size_t)n_threads * total, 0.f);
#pragma omp parallel num_threads(n_threads)
    {
        const int tid = omp_get_thread_num();
        float* d1 = partial.data() + (size_t)tid * total;
        float* d2 = d1 + sizes[0];
        float* dc1 = d2 + sizes[1];
        float* dc2 = dc1 + sizes[2];
        float* dc3 = dc2 + sizes[3];
        std::vector<float> scratch((size_t)B * (net.fp * 2 + 2 * net.h + net.gp + net.cp + P));
        float* ft = scratch.data();
        float* gft = ft + B * net.fp;
        float* ga = gft + B * net.fp;       // [B][h]
        float* gb = ga + B * net.h;         // [B][h]
        float* gh = gb + B * net.h;         // [B][gp]
        float* gcin = gh + B * net.gp;      // [B][cp]
        float* gz = gcin + B * net.cp;      // [B][P]
#pragma omp for schedule(static)
        for (int64_t blk = 0; blk < n_blocks; ++blk) {
            const int64_t i0 = blk * B;
            const int rows = (int)std::min<int64_t>(B, n - i0);
            const float* h1 = saved + blk * B * sw;
            const float* hh = h1 + B * net.h;
            const float* cin = hh + B * net.gp;
            const float* c1 = cin + B * net.cp;
            const float* c2 = c1 + B * net.h;
            std::memset(gz, 0, sizeof(float) * B * P);
            std::memset(gh, 0, sizeof(float) * B * net.gp);
            for (int b = 0; b < rows; ++b) {
                for (int c = 0; c < 3; ++c) {
                    const float y = rgb[(i0 + b) * 3 + c];
                    gz[b * P + c] = grad_rgb[(i0 + b) * 3 + c] * y * (1.f - y);
                }
                gh[b * net.gp] = grad_sigma[i0 + b] * activation_grad(hh[b * net.gp] - 1.f, act);
            }
            // colour MLP, last layer to first
            // Only the first 3 of the P padded outputs carry a gradient: rows (a multiple of RB) and
            // the inner dimension stop there.
            mm<true>(gz, 1, P, RB * ((3 + RB - 1) / RB), B, c2, net.h, dc3, net.h);  // dWc3 += gz^T c2
            mm<false>(gz, P, 1, B, 3, net.c3, net.h, ga, net.h);                     // g c2 = gz Wc3
            relu_backward(ga, c2, B * net.h);
            mm<true>(ga, 1, net.h, net.h, B, c1, net.h, dc2, net.h);
            mm<false>(ga, net.h, 1, B, net.h, net.c2, net.h, gb, net.h);  // g c1
            relu_backward(gb, c1, B * net.h);
            mm<true>(gb, 1, net.h, net.h, B, cin, net.cp, dc1, net.cp);
            mm<false>(gb, net.h, 1, B, net.h, net.c1, net.cp, gcin, net.cp);
            for (int b = 0; b < rows; ++b) {
                for (int j = 0; j < net.g; ++j) gh[b * net.gp + 1 + j] = gcin[b * net.cp + j];
                if (grad_sh)
                    for (int j = 0; j < 16; ++j) grad_sh[(i0 + b) * 16 + j] = gcin[b * net.cp + net.g + j];
            }
            // density MLP
            mm<true>(gh, 1, net.gp, net.gp, B, h1, net.h, d2, net.h);
            mm<false>(gh, net.gp, 1, B, net.gp, net.w2, net.h, ga, net.h);  // g h1
            relu_backward(ga, h1, B * net.h);
            load_features(net, feat, i0, rows, ft);
            mm<true>(ga, 1, net.h, net.h, B, ft, net.fp, d1, net.fp);
            if (grad_feat) {
                mm<false>(ga, net.h, 1, B, net.h, net.w1, net.fp, gft, net.fp);
                for (int b = 0; b < rows; ++b)
                    std::memcpy(grad_feat + (i0 + b) * net.fin, gft + b * net.fp, sizeof(float) * net.fin);
            }
        }
    }
    // Threads' partial sums in thread order: deterministic for a thread count.
    int off = 0;
    for (int m = 0; m < 5; ++m) {
        float* out = dw[m];
        for (int i = 0; i < sizes[m]; ++i) {
            float s = 0.f;
            for (int t = 0; t < n_threads; ++t) s += partial[(size_t)t * total + off + i];
            out[i] = s;
        }
        off += sizes[m];
    }
}

// Density only (no gradients): feat [n, fin] -> sigma [n].
extern "C" void nfplug_ngp_density(const int* dims, const float* const* w, int act, const float* feat,
                                   float* sigma, int64_t n, int n_threads) {
    Net net{dims[0], dims[1], dims[2], dims[3], dims[4], dims[5],
            w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7], w[8], w[9], act};
    const int64_t n_blocks = (n + B - 1) / B;
#pragma omp parallel num_threads(n_threads)
    {
        std::vector<float> scratch((size_t)B * (net.fp + net.h));
        float* ft = scratch.data();
        float* h1 = ft + B * net.fp;
        const float* w2 = net.w2;  // row 0: the raw density
#pragma omp for schedule(static)
        for (int64_t blk = 0; blk < n_blocks; ++blk) {
            const int64_t i0 = blk * B;
            const int rows = (int)std::min<int64_t>(B, n - i0);
            load_features(net, feat, i0, rows, ft);
            mm<false>(ft, net.fp, 1, B, net.fp, net.w1t, net.h, h1, net.h);
            for (int b = 0; b < rows; ++b) {
                float raw = 0.f;
                const float* x = h1 + b * net.h;
                for (int j = 0; j < net.h; ++j) raw += (x[j] > 0.f ? x[j] : 0.f) * w2[j];
                sigma[i0 + b] = activation(raw - 1.f, act);
            }
        }
    }
}
"""

_lib: Optional[ctypes.CDLL] = None


def load_kernel() -> Optional[ctypes.CDLL]:
    """The compiled kernel (:func:`nfplug.native.load_library`); None if it cannot be built."""
    global _lib
    if _lib is None:
        lib = load_library("ngp_mlps", _SOURCE, "fused ngp MLP")
        if lib is None:
            return None
        ptr, i64, c_int = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
        lib.nfplug_ngp_forward.argtypes = [ptr, ptr, c_int, ptr, ptr, ptr, ptr, ptr, i64, c_int]
        lib.nfplug_ngp_backward.argtypes = [ptr, ptr, c_int, ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr, i64, c_int]
        lib.nfplug_ngp_density.argtypes = [ptr, ptr, c_int, ptr, ptr, i64, c_int]
        for fn in (lib.nfplug_ngp_forward, lib.nfplug_ngp_backward, lib.nfplug_ngp_density):
            fn.restype = None
        _lib = lib
    return _lib


def _padded(n: int) -> int:
    return -(-n // PAD) * PAD


def _pad(w: Tensor, rows: int, cols: int) -> Tensor:
    """``w [out, in]`` in the top-left corner of a zero ``[rows, cols]``."""
    out = torch.zeros(rows, cols, dtype=torch.float32)
    out[: w.shape[0], : w.shape[1]] = w.detach()
    return out


class _Weights:
    """The five weight matrices padded (``[out][in]`` and transposed) as the kernel reads them."""

    def __init__(self, weights: Sequence[Tensor], feat_dim: int) -> None:
        w1, w2, c1, c2, c3 = weights
        hidden, geo = w1.shape[0], w2.shape[0] - 1
        self.fin, self.fp, self.h, self.gp, self.g = feat_dim, _padded(feat_dim), _padded(hidden), _padded(1 + geo), geo
        self.cp = _padded(geo + 16)
        self.shapes = [tuple(w.shape) for w in weights]
        padded = [
            _pad(w1, self.h, self.fp),
            _pad(w2, self.gp, self.h),
            _pad(c1, self.h, self.cp),
            _pad(c2, self.h, self.h),
            _pad(c3, PAD, self.h),
        ]
        self.tensors: List[Tensor] = []
        for w in padded:
            self.tensors += [w, w.t().contiguous()]
        self.dims = torch.tensor([self.fin, self.fp, self.h, self.gp, self.g, self.cp], dtype=torch.int32)
        self.ptrs = (ctypes.c_void_p * 10)(*[t.data_ptr() for t in self.tensors])

    @property
    def saved_width(self) -> int:
        return 3 * self.h + self.gp + self.cp

    def unpad(self, grads: Sequence[Tensor]) -> List[Tensor]:
        return [g[: s[0], : s[1]] for g, s in zip(grads, self.shapes)]


def _threads() -> int:
    return max(1, torch.get_num_threads())


def _forward(feat: Tensor, sh: Tensor, act: int, weights: Sequence[Tensor], save: bool) -> Tuple[Tensor, Tensor, Optional[Tensor], "_Weights"]:
    """Run the kernel's forward: ``rgb``, ``sigma``, the saved activations (``save``) and the padded weights."""
    lib = load_kernel()
    assert lib is not None
    feat, sh = feat.detach().contiguous(), sh.detach().contiguous()
    w = _Weights(weights, feat.shape[1])
    n = feat.shape[0]
    rgb = torch.empty(n, 3)
    sigma = torch.empty(n)
    saved = torch.empty(-(-n // BLOCK) * BLOCK * w.saved_width) if save else None
    lib.nfplug_ngp_forward(
        w.dims.data_ptr(), w.ptrs, act, feat.data_ptr(), sh.data_ptr(), rgb.data_ptr(), sigma.data_ptr(),
        saved.data_ptr() if saved is not None else None, n, _threads(),
    )
    return rgb, sigma, saved, w


class _NGPMLPs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, feat: Tensor, sh: Tensor, act: int, *weights: Tensor) -> Tuple[Tensor, Tensor]:  # type: ignore[override]
        rgb, sigma, saved, w = _forward(feat, sh, act, weights, save=True)
        ctx.save_for_backward(feat.contiguous(), rgb, saved)
        ctx.w = w
        ctx.act = act
        return rgb, sigma

    @staticmethod
    def backward(ctx, grad_rgb: Tensor, grad_sigma: Tensor):  # type: ignore[override]
        lib = load_kernel()
        feat, rgb, saved = ctx.saved_tensors
        w: _Weights = ctx.w
        n = feat.shape[0]
        grad_rgb = grad_rgb.contiguous() if grad_rgb is not None else torch.zeros(n, 3)
        grad_sigma = grad_sigma.contiguous() if grad_sigma is not None else torch.zeros(n)
        grad_feat = torch.empty_like(feat) if ctx.needs_input_grad[0] else None
        grad_sh = torch.empty(n, 16) if ctx.needs_input_grad[1] else None
        dw = [torch.empty_like(w.tensors[2 * i]) for i in range(5)]
        dw_ptrs = (ctypes.c_void_p * 5)(*[g.data_ptr() for g in dw])
        lib.nfplug_ngp_backward(
            w.dims.data_ptr(), w.ptrs, ctx.act, feat.data_ptr(), rgb.data_ptr(), saved.data_ptr(),
            grad_rgb.data_ptr(), grad_sigma.data_ptr(),
            grad_feat.data_ptr() if grad_feat is not None else None,
            grad_sh.data_ptr() if grad_sh is not None else None,
            dw_ptrs, n, _threads(),
        )
        grads = w.unpad(dw)
        return (grad_feat, grad_sh, None, *[g if need else None for g, need in zip(grads, ctx.needs_input_grad[3:])])


ACTIVATIONS = {"trunc_exp": 0, "softplus": 1}


def supported(feat: Tensor, weights: Sequence[Tensor]) -> bool:
    """Whether the kernel can run these inputs (CPU float32, kernel built)."""
    tensors = [feat, *weights]
    return all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors) and load_kernel() is not None


def ngp_mlps(feat: Tensor, sh: Tensor, weights: Sequence[Tensor], activation: str) -> Tuple[Tensor, Tensor]:
    """``(feat [N, L*F], sh [N, 16]) -> (rgb [N, 3], sigma [N])`` (module docstring).

    ``weights``: ``W1 [H, L*F]``, ``W2 [1+G, H]``, ``Wc1 [H, G+16]``, ``Wc2 [H, H]``, ``Wc3 [3, H]``.
    Differentiable with respect to ``feat``, ``sh`` and the weights (first order).
    """
    act = ACTIVATIONS[activation]
    if torch.is_grad_enabled() and any(t.requires_grad for t in (feat, sh, *weights)):
        return _NGPMLPs.apply(feat, sh, act, *weights)
    return _forward(feat, sh, act, weights, save=False)[:2]


@torch.no_grad()
def ngp_density(feat: Tensor, weights: Sequence[Tensor], activation: str) -> Tensor:
    """``feat [N, L*F] -> sigma [N]`` with the density MLP ``(W1, W2)`` only; no gradients."""
    lib = load_kernel()
    assert lib is not None
    feat = feat.contiguous()
    w1, w2 = weights[0], weights[1]
    hidden, geo = w1.shape[0], w2.shape[0] - 1
    unused = [torch.zeros(hidden, geo + 16), torch.zeros(hidden, hidden), torch.zeros(3, hidden)]  # the colour MLP
    w = _Weights([w1, w2, *unused], feat.shape[1])
    sigma = torch.empty(feat.shape[0])
    lib.nfplug_ngp_density(w.dims.data_ptr(), w.ptrs, ACTIVATIONS[activation], feat.data_ptr(), sigma.data_ptr(), feat.shape[0], _threads())
    return sigma
