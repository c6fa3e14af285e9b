"""Packed volume rendering (nerfacc's layout), differentiable on the CPU.

Samples are *packed*: ``t_starts [n_samples]``, ``t_ends [n_samples]`` and
``ray_indices [n_samples]`` (long), sorted by ray and, within a ray, by ``t``, as
:func:`nfplug.rendering.marcher.march_rays` returns them. nerfacc computes the
per-ray prefix sums of this layout with CUDA kernels only; here they are a float64
global ``torch.cumsum`` minus each ray's starting value. float64 rather than
padding to ``[n_rays, max_len]``: memory stays linear in ``n_samples`` however
uneven the rays are, and the cancellation error (about ``1e-16`` times the
running total, itself at most millions of ``sigma * dt``) stays far below float32
resolution, which a float32 global cumsum would not.

On the CPU, :func:`render_rays` and :func:`visible_samples_native` run a C++ kernel (one pass
over each ray's samples forward, one backward from the ray's end, accumulating in float64 like
the reference); the PyTorch functions here are its reference (``tests/test_rendering.py``).

Example::

    >>> t_starts = torch.tensor([0.0, 1.0, 0.0])
    >>> t_ends = torch.tensor([1.0, 2.0, 1.0])
    >>> ray_indices = torch.tensor([0, 0, 1])
    >>> weights, trans = render_weights(t_starts, t_ends, torch.ones(3), ray_indices, n_rays=2)
    >>> weights  # 1 - e^-1, e^-1 (1 - e^-1), 1 - e^-1
    tensor([0.6321, 0.2325, 0.6321])
"""

from __future__ import annotations

import ctypes
from typing import Callable, Optional, Tuple

import nerfacc
import torch
from torch import Tensor

from nfplug.native import load_library
from nfplug.rendering.backend import use_nerfacc_kernels

RgbSigmaFn = Callable[[Tensor, Tensor, Tensor], Tuple[Tensor, Tensor]]


def _exclusive_sum_per_ray(values: Tensor, ray_indices: Tensor, n_rays: int) -> Tensor:
    """``out_i = sum of values_j for earlier samples j of the same ray``.

    Args:
        values: ``[n_samples]``.
        ray_indices: ``[n_samples]`` long, non-decreasing.
        n_rays: number of rays.

    Returns:
        ``[n_samples]`` in the dtype of ``values`` (accumulated in float64).
    """
    if ray_indices.numel() > 1 and bool((ray_indices[1:] < ray_indices[:-1]).any()):
        raise ValueError("ray_indices must be sorted (samples packed ray by ray)")
    wide = values.double()
    exclusive = torch.cumsum(wide, dim=0) - wide
    counts = torch.bincount(ray_indices, minlength=n_rays)
    ray_starts = torch.cumsum(counts, dim=0) - counts
    return (exclusive - exclusive[ray_starts[ray_indices]]).to(values.dtype)


def render_transmittance(
    t_starts: Tensor, t_ends: Tensor, sigmas: Tensor, ray_indices: Tensor, n_rays: int
) -> Tuple[Tensor, Tensor]:
    """Transmittance and opacity of packed samples (Max 1995, NeRF eq. 3).

    ``T_i = exp(-sum_{j<i} sigma_j dt_j)`` over the earlier samples of the same ray,
    ``alpha_i = 1 - exp(-sigma_i dt_i)`` with ``dt_i = t_ends_i - t_starts_i``.

    Args:
        t_starts, t_ends: ``[n_samples]`` sample intervals along the ray (world units).
        sigmas: ``[n_samples]`` non-negative densities.
        ray_indices: ``[n_samples]`` long, sorted.
        n_rays: number of rays.

    Returns:
        ``trans [n_samples]``, ``alphas [n_samples]``.
    """
    if use_nerfacc_kernels(sigmas):
        return nerfacc.render_transmittance_from_density(
            t_starts, t_ends, sigmas, ray_indices=ray_indices, n_rays=n_rays
        )
    sigmas_dt = sigmas * (t_ends - t_starts)
    alphas = 1.0 - torch.exp(-sigmas_dt)
    trans = torch.exp(-_exclusive_sum_per_ray(sigmas_dt, ray_indices, n_rays))
    return trans, alphas


def render_weights(
    t_starts: Tensor, t_ends: Tensor, sigmas: Tensor, ray_indices: Tensor, n_rays: int
) -> Tuple[Tensor, Tensor]:
    """Packed rendering weights ``w_i = T_i (1 - exp(-sigma_i dt_i))``.

    Args:
        t_starts, t_ends: ``[n_samples]``.
        sigmas: ``[n_samples]``.
        ray_indices: ``[n_samples]`` long, sorted.
        n_rays: number of rays.

    Returns:
        ``weights [n_samples]``, ``trans [n_samples]``; differentiable w.r.t. ``sigmas``
        (and ``t_starts`` / ``t_ends``).
    """
    trans, alphas = render_transmittance(t_starts, t_ends, sigmas, ray_indices, n_rays)
    return trans * alphas, trans


def accumulate(weights: Tensor, values: Optional[Tensor], ray_indices: Tensor, n_rays: int) -> Tensor:
    """Per-ray weighted sum ``sum_i w_i v_i``.

    Args:
        weights: ``[n_samples]``.
        values: ``[n_samples, C]``, or None to accumulate the weights themselves (opacity).
        ray_indices: ``[n_samples]`` long (need not be sorted).
        n_rays: number of rays.

    Returns:
        ``[n_rays, C]`` (``C = 1`` for ``values=None``); rays without samples get 0.
    """
    src = weights[:, None] if values is None else weights[:, None] * values
    out = torch.zeros((n_rays, src.shape[-1]), dtype=src.dtype, device=src.device)
    return out.index_add(0, ray_indices, src)


def distortion(weights: Tensor, t_starts: Tensor, t_ends: Tensor, ray_indices: Tensor, n_rays: int) -> Tensor:
    """mip-NeRF 360's distortion loss per ray, on packed samples (sorted by ray, then ``t``):
    ``sum_ij w_i w_j |m_i - m_j| + 1/3 sum_i w_i^2 (t_end_i - t_start_i)`` with midpoints ``m``.

    The double sum is ``2 sum_i w_i (m_i W_i - S_i)`` with ``W_i``, ``S_i`` the sums of ``w_j`` and
    ``w_j m_j`` over the ray's earlier samples (``m`` grows along a ray): O(samples), not O(samples^2).
    Small when each ray's weight sits in one short interval; large for weight spread along the ray
    (floaters, fog). Returns ``[n_rays]``; rays without samples give 0.
    """
    if weights.shape[0] == 0:
        return torch.zeros(n_rays, dtype=weights.dtype, device=weights.device)
    mids = (t_starts + t_ends) / 2
    starts = torch.searchsorted(ray_indices, ray_indices)  # first sample of each sample's ray
    cw = torch.cumsum(weights, 0) - weights  # exclusive, over all rays
    cwm = torch.cumsum(weights * mids, 0) - weights * mids
    before_w = cw - cw[starts]
    before_wm = cwm - cwm[starts]
    pairs = 2 * weights * (mids * before_w - before_wm)
    own = weights**2 * (t_ends - t_starts) / 3
    out = torch.zeros(n_rays, dtype=weights.dtype, device=weights.device)
    return out.index_add(0, ray_indices, pairs + own)


# ----------------------------------------------------------------------------- C++ kernel

_SOURCE = r"""
#include <cmath>
#include <cstdint>

// Packed samples sorted by ray: a ray's samples are contiguous, in order of t. Each pass walks
// them once, restarting its per-ray sums where the ray index changes. Transmittance accumulates
// sigma * dt in double, as the PyTorch reference's float64 cumsum does.

extern "C" int nfplug_volrend_forward(
    int64_t n, const int64_t* ray, const float* t0, const float* t1, const float* sigma, const float* rgb,
    float* weight, float* trans, float* color, float* opacity, float* depth_num) {
    int64_t current = -1;
    double optical = 0.0;
    for (int64_t i = 0; i < n; ++i) {
        const int64_t r = ray[i];
        if (r != current) {
            if (r < current) return 1;  // not sorted by ray
            current = r;
            optical = 0.0;
        }
        const float sdt = sigma[i] * (t1[i] - t0[i]);
        const float t = std::exp(-static_cast<float>(optical));
        const float w = t * (1.0f - std::exp(-sdt));
        optical += static_cast<double>(sdt);
        weight[i] = w;
        trans[i] = t;
        for (int c = 0; c < 3; ++c) color[3 * r + c] += w * rgb[3 * i + c];
        opacity[r] += w;
        depth_num[r] += w * ((t0[i] + t1[i]) / 2.0f);
    }
    return 0;
}

// d loss / d w_i = g_w[i] + g_color[r] . rgb_i + g_opacity[r] + g_depth_num[r] * t_mid_i; then
// d loss / d sigma_i = dt_i * (g_i * T_{i+1} - sum_{k > i} g_k w_k) and d loss / d rgb_i = w_i g_color[r].
extern "C" void nfplug_volrend_backward(
    int64_t n, const int64_t* ray, const float* t0, const float* t1, const float* sigma, const float* rgb,
    const float* weight, const float* trans, const float* g_color, const float* g_opacity, const float* g_depth_num,
    const float* g_weight, float* d_sigma, float* d_rgb) {
    int64_t current = -1;
    double later = 0.0;  // sum over the ray's later samples of g_k w_k
    for (int64_t i = n - 1; i >= 0; --i) {
        const int64_t r = ray[i];
        if (r != current) {
            current = r;
            later = 0.0;
        }
        const float dt = t1[i] - t0[i];
        const float w = weight[i];
        float g = g_opacity[r] + g_depth_num[r] * ((t0[i] + t1[i]) / 2.0f);
        for (int c = 0; c < 3; ++c) g += g_color[3 * r + c] * rgb[3 * i + c];
        if (g_weight) g += g_weight[i];
        if (d_rgb)
            for (int c = 0; c < 3; ++c) d_rgb[3 * i + c] = w * g_color[3 * r + c];
        if (d_sigma) {
            const float after = trans[i] * std::exp(-sigma[i] * dt);  // T_{i+1}
            d_sigma[i] = dt * static_cast<float>(static_cast<double>(g * after) - later);
        }
        later += static_cast<double>(g * w);
    }
}

// The samples a marcher keeps after its density test: transmittance at least eps and opacity at
// least alpha_thre; a ray ends at its first sample below eps. Writes their indices, returns the count.
extern "C" int64_t nfplug_visible(
    int64_t n, const int64_t* ray, const float* t0, const float* t1, const float* sigma, float alpha_thre, float eps,
    int64_t* kept) {
    int64_t current = -1, count = 0;
    double optical = 0.0;
    bool done = false;
    for (int64_t i = 0; i < n; ++i) {
        const int64_t r = ray[i];
        if (r != current) {
            if (r < current) return -1;  // not sorted by ray
            current = r;
            optical = 0.0;
            done = false;
        }
        if (done) continue;
        const float sdt = sigma[i] * (t1[i] - t0[i]);
        const float t = std::exp(-static_cast<float>(optical));
        optical += static_cast<double>(sdt);
        if (t < eps) {
            done = true;  // transmittance only falls along a ray
            continue;
        }
        if (alpha_thre > 0.0f && 1.0f - std::exp(-sdt) < alpha_thre) continue;
        kept[count++] = i;
    }
    return count;
}
"""

_lib: Optional[ctypes.CDLL] = None
_UNSORTED = "ray_indices must be sorted (samples packed ray by ray)"


def _native() -> Optional[ctypes.CDLL]:
    """The compiled kernel; None if it cannot be built (:func:`nfplug.native.load_library`)."""
    global _lib
    if _lib is None:
        lib = load_library("volrend", _SOURCE, "volume-rendering", ("-ffp-contract=off",))
        if lib is None:
            return None
        ptr, i64, c_float = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
        lib.nfplug_volrend_forward.argtypes = [i64] + [ptr] * 10
        lib.nfplug_volrend_forward.restype = ctypes.c_int
        lib.nfplug_volrend_backward.argtypes = [i64] + [ptr] * 13
        lib.nfplug_volrend_backward.restype = None
        lib.nfplug_visible.argtypes = [i64, ptr, ptr, ptr, ptr, c_float, c_float, ptr]
        lib.nfplug_visible.restype = i64
        _lib = lib
    return _lib


def native_available(ray_indices: Tensor, *values: Tensor) -> bool:
    """Whether the C++ kernel takes these packed samples: on the CPU, ``ray_indices`` int64 and
    ``values`` float32 without gradients of their own (the kernel differentiates only ``sigmas``
    and ``rgbs``), and the kernel built."""
    return (
        ray_indices.device.type == "cpu" and ray_indices.dtype == torch.int64
        and all(v.device.type == "cpu" and v.dtype == torch.float32 and not v.requires_grad for v in values)
        and _native() is not None
    )


def _ptr(t: Optional[Tensor]) -> Optional[int]:
    return None if t is None else t.data_ptr()


class _VolumeRender(torch.autograd.Function):
    """``(sigmas, rgbs)`` -> per ray ``sum w c``, ``sum w``, ``sum w t_mid`` and per sample ``w``."""

    @staticmethod
    def forward(ctx, sigmas: Tensor, rgbs: Tensor, t_starts: Tensor, t_ends: Tensor, ray_indices: Tensor, n_rays: int):  # type: ignore[override]
        n = sigmas.shape[0]
        sigmas, rgbs = sigmas.contiguous(), rgbs.contiguous()
        t_starts, t_ends, ray_indices = t_starts.contiguous(), t_ends.contiguous(), ray_indices.contiguous()
        weights, trans = torch.empty(n), torch.empty(n)
        colors, opacities, depth_num = torch.zeros(n_rays, 3), torch.zeros(n_rays, 1), torch.zeros(n_rays, 1)
        status = _native().nfplug_volrend_forward(
            n, ray_indices.data_ptr(), t_starts.data_ptr(), t_ends.data_ptr(), sigmas.data_ptr(), rgbs.data_ptr(),
            weights.data_ptr(), trans.data_ptr(), colors.data_ptr(), opacities.data_ptr(), depth_num.data_ptr(),
        )
        if status != 0:
            raise ValueError(_UNSORTED)
        ctx.save_for_backward(sigmas, rgbs, t_starts, t_ends, ray_indices, weights, trans)
        ctx.mark_non_differentiable(trans)
        ctx.set_materialize_grads(False)  # an unused output's gradient stays None (weights: a null pointer)
        ctx.n_rays = n_rays
        return colors, opacities, depth_num, weights, trans

    @staticmethod
    def backward(ctx, g_colors: Optional[Tensor], g_opacities: Optional[Tensor], g_depth_num: Optional[Tensor], g_weights: Optional[Tensor], _g_trans):  # type: ignore[override]
        sigmas, rgbs, t_starts, t_ends, ray_indices, weights, trans = ctx.saved_tensors
        n_rays = ctx.n_rays
        g_colors = g_colors.contiguous() if g_colors is not None else torch.zeros(n_rays, 3)
        g_opacities = g_opacities.contiguous() if g_opacities is not None else torch.zeros(n_rays, 1)
        g_depth_num = g_depth_num.contiguous() if g_depth_num is not None else torch.zeros(n_rays, 1)
        g_weights = g_weights.contiguous() if g_weights is not None else None
        d_sigmas = torch.empty_like(sigmas) if ctx.needs_input_grad[0] else None
        d_rgbs = torch.empty_like(rgbs) if ctx.needs_input_grad[1] else None
        _native().nfplug_volrend_backward(
            sigmas.shape[0], ray_indices.data_ptr(), t_starts.data_ptr(), t_ends.data_ptr(), sigmas.data_ptr(), rgbs.data_ptr(),
            weights.data_ptr(), trans.data_ptr(), g_colors.data_ptr(), g_opacities.data_ptr(), g_depth_num.data_ptr(),
            _ptr(g_weights), _ptr(d_sigmas), _ptr(d_rgbs),
        )
        return d_sigmas, d_rgbs, None, None, None, None


def visible_samples_native(
    t_starts: Tensor, t_ends: Tensor, sigmas: Tensor, ray_indices: Tensor, alpha_thre: float, early_stop_eps: float
) -> Tensor:
    """Indices ``[n_kept]`` (long, ascending) of the samples whose transmittance is at least
    ``early_stop_eps`` and opacity at least ``alpha_thre`` (0: no opacity test), in one C++ pass;
    the reference is ``render_transmittance`` and the two comparisons (:func:`nfplug.rendering.marcher.visible_samples`).
    Requires :func:`native_available`."""
    tensors = [x.contiguous() for x in (ray_indices, t_starts, t_ends, sigmas.detach())]
    kept = torch.empty(t_starts.shape[0], dtype=torch.int64)
    count = _native().nfplug_visible(t_starts.shape[0], *(x.data_ptr() for x in tensors), alpha_thre, early_stop_eps, kept.data_ptr())
    if count < 0:
        raise ValueError(_UNSORTED)
    return kept[:count]


def render_rays(
    t_starts: Tensor,
    t_ends: Tensor,
    ray_indices: Tensor,
    n_rays: int,
    rgb_sigma_fn: RgbSigmaFn,
    render_bkgd: Optional[Tensor] = None,
    *,
    with_weights: bool = False,
) -> Tuple[Tensor, ...]:
    """Render packed samples through a radiance field, like ``nerfacc.rendering``.

    Args:
        t_starts, t_ends: ``[n_samples]``.
        ray_indices: ``[n_samples]`` long, sorted.
        n_rays: number of rays.
        rgb_sigma_fn: ``(t_starts, t_ends, ray_indices) -> (rgbs [n_samples, 3],
            sigmas [n_samples])``; not called when there are no samples.
        render_bkgd: ``[3]`` background colour composited behind each ray, or None.

    Returns:
        ``colors [n_rays, 3]``, ``opacities [n_rays, 1]`` and ``depths [n_rays, 1]``
        (and the samples' ``weights [n_samples]`` if ``with_weights``). Depth is nerfacc 0.5's: the weighted sum of sample midpoints divided by the
        opacity (clamped to float eps), i.e. the expected depth of the visible part.
        A ray without samples gets the background colour, opacity 0 and depth 0.
    """
    if t_starts.shape[0] == 0:
        rgbs = torch.empty((0, 3), dtype=t_starts.dtype, device=t_starts.device)
        sigmas = torch.empty((0,), dtype=t_starts.dtype, device=t_starts.device)
    else:
        rgbs, sigmas = rgb_sigma_fn(t_starts, t_ends, ray_indices)
    if rgbs.shape != (t_starts.shape[0], 3) or sigmas.shape != t_starts.shape:
        raise ValueError(
            f"rgb_sigma_fn must return rgbs [{t_starts.shape[0]}, 3] and sigmas [{t_starts.shape[0]}], "
            f"got {tuple(rgbs.shape)} and {tuple(sigmas.shape)}"
        )
    if t_starts.shape[0] > 0 and rgbs.dtype == sigmas.dtype == torch.float32 and native_available(ray_indices, t_starts, t_ends):
        colors, opacities, depth_sum, weights, _ = _VolumeRender.apply(sigmas, rgbs, t_starts, t_ends, ray_indices, n_rays)
    else:  # the reference
        weights, _ = render_weights(t_starts, t_ends, sigmas, ray_indices, n_rays)
        colors = accumulate(weights, rgbs, ray_indices, n_rays)
        opacities = accumulate(weights, None, ray_indices, n_rays)
        depth_sum = accumulate(weights, (t_starts + t_ends)[:, None] / 2.0, ray_indices, n_rays)
    depths = depth_sum / opacities.clamp_min(torch.finfo(opacities.dtype).eps)
    if render_bkgd is not None:
        colors = colors + render_bkgd * (1.0 - opacities)
    if with_weights:
        return colors, opacities, depths, weights
    return colors, opacities, depths
