"""Ray marching through a nerfacc occupancy grid, with a vectorized CPU path.

``nerfacc.OccGridEstimator.sampling`` runs a CUDA kernel only. :func:`march_rays`
calls it on CUDA tensors when nerfacc's kernels are built (:mod:`nfplug.rendering.backend`)
and otherwise, on any device, reproduces it in PyTorch:

- samples lie on a lattice ``t_0 = near_plane`` (plus a per-ray offset in
  ``[0, step)`` when stratified), ``t_{k+1} = t_k + clamp(t_k * cone_angle,
  render_step_size, 1e10)``; sample ``k`` is the interval ``[t_k, t_{k+1}]``;
- a sample is kept when its midpoint lies in ``[max(near, t_enter), min(far,
  t_exit))`` of the (outermost) grid box and in an occupied cell, looked up in the
  finest level containing it (level ``k`` covers the base box scaled by ``2^k``
  about its centre);
- with a ``sigma_fn``, samples whose opacity is below ``alpha_thre`` (capped at the
  mean occupancy, as nerfacc does) or whose transmittance has fallen below
  ``early_stop_eps`` are dropped (``nerfacc.render_visibility_from_density``).

Example::

    >>> estimator = nerfacc.OccGridEstimator(roi_aabb=[-1.5] * 3 + [1.5] * 3, resolution=128)
    >>> estimator.binaries.fill_(True)
    >>> ray_indices, t_starts, t_ends = march_rays(
    ...     estimator, rays_o, rays_d, near_plane=2.0, far_plane=6.0, render_step_size=5e-3)
    >>> x = rays_o[ray_indices] + (t_starts + t_ends)[:, None] / 2 * rays_d[ray_indices]
"""

from __future__ import annotations

import ctypes
import math
from typing import Callable, Optional, Tuple

import nerfacc
import torch
from torch import Tensor

from nfplug.native import load_library
from nfplug.rendering.volrend import native_available, render_transmittance, visible_samples_native
from nfplug.rendering.backend import use_nerfacc_kernels

SigmaFn = Callable[[Tensor, Tensor, Tensor], Tensor]

# Candidate samples materialised at once: at ~60 bytes of temporaries each, a chunk
# stays in cache; tools/bench_marcher.py ran fastest at 2^16-2^18 (2^22: 1.6x slower).
_MAX_CANDIDATES = 1 << 17
# The C++ marcher's room for candidates per pass (two floats each): 2^25 is 256 MB.
_MAX_ROOM = 1 << 25


def ray_aabb_intersect(rays_o: Tensor, rays_d: Tensor, aabb: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Slab-method ray / box intersection.

    Args:
        rays_o: ``[n_rays, 3]`` origins.
        rays_d: ``[n_rays, 3]`` directions (need not be unit; ``t`` is in their units).
        aabb: ``[6]`` box ``[xmin, ymin, zmin, xmax, ymax, zmax]``.

    Returns:
        ``t_min [n_rays]``, ``t_max [n_rays]`` (entry and exit along the whole line,
        possibly negative) and ``hit [n_rays]`` bool: the line meets the closed box and
        the exit is in front of the origin (``t_max > 0``).
    """
    lo, hi = aabb[:3], aabb[3:]
    parallel = rays_d == 0
    # An axis the ray does not move along constrains nothing if the origin is inside
    # that slab and excludes everything otherwise; dividing would give 0 * inf = nan.
    safe_d = torch.where(parallel, torch.ones_like(rays_d), rays_d)
    t1 = (lo - rays_o) / safe_d
    t2 = (hi - rays_o) / safe_d
    in_slab = (rays_o >= lo) & (rays_o <= hi)
    inf = torch.full_like(t1, math.inf)
    t_near = torch.where(parallel, torch.where(in_slab, -inf, inf), torch.minimum(t1, t2))
    t_far = torch.where(parallel, torch.where(in_slab, inf, -inf), torch.maximum(t1, t2))
    t_min = t_near.amax(dim=-1)
    t_max = t_far.amin(dim=-1)
    return t_min, t_max, (t_min <= t_max) & (t_max > 0)


def query_occupancy(binaries: Tensor, base_aabb: Tensor, x: Tensor) -> Tensor:
    """Occupancy of points in a multi-level grid (same rule as ``nerfacc.grid._query``).

    Args:
        binaries: ``[levels, resx, resy, resz]`` bool; level ``k`` covers ``base_aabb``
            scaled by ``2^k`` about its centre.
        base_aabb: ``[6]`` box of level 0.
        x: ``[..., 3]`` world points.

    Returns:
        ``[...]`` bool: the cell of the finest level containing the point is occupied;
        False outside the coarsest level.
    """
    levels = binaries.shape[0]
    res = binaries.shape[1:]
    lo, hi = base_aabb[:3], base_aabb[3:]
    centred = (x - lo) / (hi - lo) - 0.5  # base box is [-0.5, 0.5]^3
    # The finest level containing a point has |centred| < 2^(k-1); frexp gives that k
    # as an exponent (0.1 floor: frexp(0) has exponent 0, which would mean level 1).
    max_abs = centred.abs().amax(dim=-1).clamp_min(0.1)
    mip = (torch.frexp(max_abs).exponent + 1).clamp_min(0)
    inside = mip < levels
    mip = mip.clamp_max(levels - 1)
    unit = centred * torch.exp2(-mip.to(centred.dtype))[..., None] + 0.5  # [0, 1]^3 in its level
    flat = mip.long()
    for axis in range(3):
        cell = (unit[..., axis] * res[axis]).long().clamp_(0, res[axis] - 1)
        flat = flat * res[axis] + cell
    return binaries.reshape(-1)[flat] & inside


def _arithmetic_part(near: Tensor, step: float, cone_angle: float) -> Tuple[Tensor, Tensor]:
    """Lattice steps are ``step`` while ``t_k <= step / cone_angle`` and ``t_k * cone_angle``
    after: returns the index ``n_flat`` where the lattice turns geometric and ``t_{n_flat}``."""
    n_flat = (torch.floor((step / cone_angle - near) / step) + 1.0).clamp_min(0.0)
    return n_flat, near + n_flat * step


def _lattice(near: Tensor, k: Tensor, step: float, cone_angle: float) -> Tensor:
    """``t_k`` of the marching lattice started at ``near [n_rays, 1]`` for ``k [n_rays, m]``:
    arithmetic, then (``cone_angle > 0``) geometric with ratio ``1 + cone_angle``."""
    if cone_angle == 0.0:
        return near + k * step
    n_flat, t_switch = _arithmetic_part(near, step, cone_angle)
    return torch.where(k <= n_flat, near + k * step, t_switch * (1.0 + cone_angle) ** (k - n_flat))


def _lattice_index(near: Tensor, t: Tensor, step: float, cone_angle: float) -> Tensor:
    """Real-valued inverse of :func:`_lattice`: ``k`` with ``t_k = t`` (``[n_rays, 1]``)."""
    k_flat = (t - near) / step
    if cone_angle == 0.0:
        return k_flat
    n_flat, t_switch = _arithmetic_part(near, step, cone_angle)
    k_geom = n_flat + torch.log(t.clamp_min(t_switch) / t_switch) / math.log1p(cone_angle)
    return torch.where(t <= t_switch, k_flat, k_geom)


def _block_factor(resolution: Tuple[int, ...]) -> int:
    """Largest of 4, 2 dividing every grid resolution (1 if none)."""
    for factor in (4, 2):
        if all(r % factor == 0 for r in resolution):
            return factor
    return 1


def _coarse_occupancy(binaries: Tensor, factor: int, radius: Tuple[int, int, int]) -> Tensor:
    """``binaries [X, Y, Z]`` max-pooled over ``factor^3`` blocks, then dilated by
    ``radius`` blocks per axis -> ``[X / factor, Y / factor, Z / factor]`` bool."""
    x, y, z = binaries.shape
    blocks = binaries.reshape(x // factor, factor, y // factor, factor, z // factor, factor).amax(dim=(1, 3, 5))
    for axis, r in enumerate(radius):
        source = blocks.clone()
        n = blocks.shape[axis]
        for shift in range(1, min(r, n - 1) + 1):
            blocks.narrow(axis, shift, n - shift).logical_or_(source.narrow(axis, 0, n - shift))
            blocks.narrow(axis, 0, n - shift).logical_or_(source.narrow(axis, shift, n - shift))
    return blocks


def _cell_index(origin: Tensor, direction: Tensor, t: Tensor, aabb: Tensor, resolution: Tuple[int, ...]) -> Tensor:
    """Flat cell index (clamped into the grid) of ``origin + t * direction``.

    ``origin``, ``direction`` ``[n, 3]``; ``t [n, m]`` -> ``[n, m]`` long. One fused
    multiply-add per axis in cell units: this runs on millions of candidates.
    """
    lo, hi = aabb[:3], aabb[3:]
    scale = torch.tensor(resolution, dtype=t.dtype, device=t.device) / (hi - lo)
    offset = (origin - lo) * scale
    slope = direction * scale
    flat = None
    for axis, res in enumerate(resolution):
        cell = torch.addcmul(offset[:, axis : axis + 1], t, slope[:, axis : axis + 1]).long().clamp_(0, res - 1)
        flat = cell if flat is None else flat.mul_(res).add_(cell)
    return flat


def _occupied_samples(
    binaries: Tensor,
    base_aabb: Tensor,
    rays_o: Tensor,
    rays_d: Tensor,
    near: Tensor,
    lo: Tensor,
    hi: Tensor,
    k_first: Tensor,
    width: int,
    step: float,
    cone_angle: float,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Occupied samples among lattice indices ``k_first + [0, width)`` of each row.

    Rows are rays or pieces of rays: ``rays_o``, ``rays_d`` ``[n, 3]``; ``near, lo, hi,
    k_first`` ``[n, 1]``. Candidates are laid out densely as ``[n, width]``. Returns
    row indices, ``t_starts`` and ``t_ends``, sorted by row then ``t``.
    """
    k = k_first + torch.arange(width, dtype=near.dtype, device=near.device)
    t_starts = _lattice(near, k, step, cone_angle)
    t_ends = t_starts + step if cone_angle == 0.0 else _lattice(near, k + 1.0, step, cone_angle)
    t_mids = (t_starts + t_ends) * 0.5
    keep = (t_mids >= lo) & (t_mids < hi)
    if binaries.shape[0] == 1:
        # Midpoints are inside the box by construction; clamping the cell index
        # settles rounding at its faces.
        keep &= binaries.reshape(-1)[_cell_index(rays_o, rays_d, t_mids, base_aabb, binaries.shape[1:])]
    else:
        x = rays_o[:, None, :] + t_mids[..., None] * rays_d[:, None, :]
        keep &= query_occupancy(binaries, base_aabb, x)
    flat = keep.view(-1).nonzero().squeeze(1)
    return flat // width, t_starts.reshape(-1)[flat], t_ends.reshape(-1)[flat]


def _ray_ranges(
    estimator: nerfacc.OccGridEstimator,
    rays_o: Tensor,
    rays_d: Tensor,
    near_plane: float,
    far_plane: float,
    step: float,
    stratified: bool,
    cone_angle: float,
    generator: Optional[torch.Generator],
) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Each ray's lattice start ``near``, kept range ``[lo, hi)`` (``lo = inf`` for a miss), ``hit``,
    and the lattice indices ``k_first + [0, n_candidates)`` whose midpoints can fall in the range
    (``[n_rays, 1]`` each, ``hit [n_rays]``)."""
    n_rays = rays_o.shape[0]
    dtype, device = rays_o.dtype, rays_o.device
    outer_aabb = estimator.aabbs[-1].to(dtype)
    t_min, t_max, hit = ray_aabb_intersect(rays_o, rays_d, outer_aabb)

    near = torch.full((n_rays,), float(near_plane), dtype=dtype, device=device)
    if stratified:
        # Drawn on the CPU (the generator's device) and moved: the same jitter on every device.
        near = near + torch.rand(n_rays, generator=generator, dtype=dtype).to(device) * step
    lo = torch.maximum(near, t_min)
    hi = torch.minimum(torch.full_like(near, float(far_plane)), t_max)
    hit &= lo < hi
    lo = torch.where(hit, lo, torch.full_like(lo, math.inf))[:, None]
    hi = torch.where(hit, hi, near)[:, None]
    near = near[:, None]

    # Lattice indices whose midpoint can fall in [lo, hi), one index of slack on each
    # side for rounding; the exact test is done on the midpoints themselves.
    k_first = (torch.floor(_lattice_index(near, torch.where(hit[:, None], lo, near), step, cone_angle)) - 1.0).clamp_min(0.0)
    k_last = torch.ceil(_lattice_index(near, hi, step, cone_angle)) + 1.0
    n_candidates = torch.where(hit[:, None], k_last - k_first + 1.0, torch.zeros_like(k_first))
    return near, lo, hi, hit, k_first, n_candidates


@torch.no_grad()
def _march_rays_cpu(
    estimator: nerfacc.OccGridEstimator,
    rays_o: Tensor,
    rays_d: Tensor,
    near_plane: float,
    far_plane: float,
    render_step_size: float,
    stratified: bool,
    cone_angle: float,
    generator: Optional[torch.Generator],
) -> Tuple[Tensor, Tensor, Tensor]:
    """Occupied lattice samples of every ray (no density test); see :func:`march_rays`.

    With a single-level grid, runs of ``m`` lattice steps are first tested against
    a block-pooled, dilated copy of the grid, so that only runs that can hold an
    occupied sample are expanded; the result is the same as testing every step.
    """
    n_rays = rays_o.shape[0]
    dtype, device = rays_o.dtype, rays_o.device
    step = float(render_step_size)
    binaries = estimator.binaries
    near, lo, hi, hit, k_first, n_candidates = _ray_ranges(
        estimator, rays_o, rays_d, near_plane, far_plane, step, stratified, cone_angle, generator
    )
    width = int(n_candidates.max().item()) if n_rays > 0 else 0

    empty = torch.empty(0, dtype=dtype, device=device)
    if width == 0 or not bool(binaries.any()):
        return torch.empty(0, dtype=torch.long, device=device), empty, empty.clone()

    base_aabb = estimator.aabbs[0].to(dtype)
    resolution = tuple(binaries.shape[1:])
    factor = _block_factor(resolution)
    block_size = (base_aabb[3:] - base_aabb[:3]) / torch.tensor(resolution, dtype=dtype, device=device) * factor
    # Runs of m steps about 1.8 blocks long, so that dilating blocks by one covers them.
    run = int(1.8 * block_size.min().item() / step)
    row_ray = torch.arange(n_rays, device=device)
    if binaries.shape[0] == 1 and factor > 1 and run > 1 and width >= 4 * run:
        k_run = k_first + torch.arange(0, width, run, dtype=dtype, device=device)
        t_a = _lattice(near, k_run, step, cone_angle)
        t_b = _lattice(near, k_run + run, step, cone_angle)
        in_range = (t_b > lo) & (t_a < hi)
        half = ((t_b - t_a) * 0.5)[in_range].max()
        reach = half * rays_d.abs().amax(dim=0) / block_size
        radius = tuple(int(math.ceil(r + 0.05)) for r in reach.tolist())
        coarse = _coarse_occupancy(binaries[0], factor, radius)
        cells = _cell_index(rays_o, rays_d, (t_a + t_b) * 0.5, base_aabb, tuple(coarse.shape))
        row_ray, run_index = (in_range & coarse.reshape(-1)[cells]).nonzero().unbind(dim=1)
        k_first = k_first[row_ray] + (run_index * run).to(dtype)[:, None]
        width = run
        rays_o, rays_d, near, lo, hi = rays_o[row_ray], rays_d[row_ray], near[row_ray], lo[row_ray], hi[row_ray]
        if row_ray.numel() == 0:  # every run of every ray lies far from the occupied blocks
            return torch.empty(0, dtype=torch.long, device=device), empty, empty.clone()

    chunk = max(1, _MAX_CANDIDATES // width)
    indices, starts, ends = [], [], []
    for s in range(0, row_ray.shape[0], chunk):
        e = s + chunk
        rows, t_s, t_e = _occupied_samples(
            binaries, base_aabb, rays_o[s:e], rays_d[s:e], near[s:e], lo[s:e], hi[s:e], k_first[s:e],
            width, step, cone_angle,
        )
        indices.append(row_ray[rows + s])
        starts.append(t_s)
        ends.append(t_e)
    return torch.cat(indices), torch.cat(starts), torch.cat(ends)

# ---------------------------------------------------------------- native CPU marcher

_MARCH_SOURCE = r"""
#include <algorithm>
#include <cmath>
#include <cstdint>

namespace {

struct Grid {
    int levels, res[3];
    const uint64_t* bits;  // [levels, res0, res1, res2] one bit per cell (a 128^3 level: 256 KB, in L2)
    int blk;               // block size in cells of the coarse grid (single level only)
    const uint8_t* coarse; // [res0 / blk, res1 / blk, res2 / blk]: any cell of the block occupied; or null
    float lo[3], size[3];  // level 0's box: lo and hi - lo
    float scale[3];        // res / (hi - lo)
};

// Multi-level grid: occupancy of the midpoint t of ray (o, d) in the finest level containing it
// (nerfacc's rule, the same float operations as the PyTorch reference's query_occupancy).
inline bool occupied(const Grid& g, const float* o, const float* d, float t) {
    float centred[3], max_abs = 0.f;
    for (int a = 0; a < 3; ++a) {
        const float x = o[a] + t * d[a];
        centred[a] = (x - g.lo[a]) / g.size[a] - 0.5f;
        max_abs = std::max(max_abs, std::fabs(centred[a]));
    }
    int e;
    std::frexp(std::max(max_abs, 0.1f), &e);
    int mip = std::max(e + 1, 0);
    if (mip >= g.levels) return false;
    const float shrink = std::ldexp(1.f, -mip);
    int64_t flat = mip;
    for (int a = 0; a < 3; ++a) {
        const float unit = centred[a] * shrink + 0.5f;
        int64_t c = (int64_t)(unit * (float)g.res[a]);
        c = c < 0 ? 0 : (c > g.res[a] - 1 ? g.res[a] - 1 : c);
        flat = flat * g.res[a] + c;
    }
    return (g.bits[flat >> 6] >> (flat & 63)) & 1;
}

struct Lattice {
    float step, cone, ratio;
};

// t_k of a ray's lattice (see _lattice): arithmetic up to index n_flat, then geometric.
inline float lattice(const Lattice& L, float near, float n_flat, float t_switch, float k) {
    if (L.cone == 0.f || k <= n_flat) return near + k * L.step;
    return t_switch * std::pow(L.ratio, k - n_flat);
}

// Real-valued lattice index of t (inverse of lattice()).
inline float lattice_index(const Lattice& L, float near, float n_flat, float t_switch, float t) {
    if (L.cone == 0.f || t <= t_switch) return (t - near) / L.step;
    return n_flat + std::log(t / t_switch) / std::log(L.ratio);
}

// A ray in the cell units of a single-level grid: position off + t * slope (as _cell_index).
struct CellRay {
    float off[3], slope[3];
};

// Single-level grid: whether the midpoint t is occupied (clamped cell, as the reference). When it
// lies inside the grid in an empty block of blk^3 cells, *skip_to is set to t a margin of 1% of a
// cell short of where the ray leaves that block (rounding never carries a skipped midpoint across
// a face); otherwise it is left alone.
inline bool occupied_cells(const Grid& g, const CellRay& r, float t, float* skip_to) {
    int64_t c[3];
    bool inside = true;
    for (int a = 0; a < 3; ++a) {
        const float v = std::fma(t, r.slope[a], r.off[a]);  // torch's addcmul fuses it
        inside &= v >= 0.f && v < (float)g.res[a];
        c[a] = (int64_t)v;
        c[a] = c[a] < 0 ? 0 : (c[a] > g.res[a] - 1 ? g.res[a] - 1 : c[a]);
    }
    if (g.coarse && inside) {
        const int64_t b0 = c[0] / g.blk, b1 = c[1] / g.blk, b2 = c[2] / g.blk;
        if (!g.coarse[(b0 * (g.res[1] / g.blk) + b1) * (g.res[2] / g.blk) + b2]) {
            const int64_t b[3] = {b0, b1, b2};
            float leave = INFINITY, speed = 0.f;
            for (int a = 0; a < 3; ++a) {
                const float slope = r.slope[a];
                if (slope == 0.f) continue;
                const float face = (float)((slope > 0.f ? b[a] + 1 : b[a]) * g.blk);
                leave = std::min(leave, (face - r.off[a]) / slope);
                speed = std::max(speed, std::fabs(slope));
            }
            if (speed > 0.f) *skip_to = leave - 0.01f / speed;
            return false;
        }
    }
    const int64_t flat = (c[0] * g.res[1] + c[1]) * g.res[2] + c[2];
    return (g.bits[flat >> 6] >> (flat & 63)) & 1;
}

// Visits a ray's kept samples in order: fn(t_start, t_end). With a single-level grid, when a
// tested midpoint lies in an empty block of blk^3 cells, the following samples that end inside
// that block are skipped: every cell they could be tested against is empty.
template <class Fn>
inline void walk(const Grid& g, const Lattice& L, const float* o, const float* d, const float* ray, Fn fn) {
    const float near = ray[0], lo = ray[1], hi = ray[2], k_first = ray[3], n_flat = ray[5], t_switch = ray[6];
    const int64_t count = (int64_t)ray[4];
    CellRay cr;
    for (int a = 0; a < 3; ++a) {
        cr.off[a] = (o[a] - g.lo[a]) * g.scale[a];
        cr.slope[a] = d[a] * g.scale[a];
    }
    int64_t j = 0, next = -1;  // next: the index whose start is t_next (the previous sample's end)
    float t_next = 0.f;
    while (j < count) {
        const float k = k_first + (float)j;
        // (A uniform lattice starts each sample at near + k step, not at the previous end.)
        const float t0 = j == next && L.cone != 0.f ? t_next : lattice(L, near, n_flat, t_switch, k);
        const float t1 = L.cone == 0.f ? t0 + L.step : lattice(L, near, n_flat, t_switch, k + 1.f);
        next = j + 1;
        t_next = t1;
        const float mid = (t0 + t1) * 0.5f;
        if (mid >= lo && mid < hi) {
            if (g.levels == 1) {
                float skip_to = -INFINITY;
                if (occupied_cells(g, cr, mid, &skip_to)) {
                    fn(t0, t1);
                } else if (skip_to > mid) {
                    // Samples k' with t_{k'+1} <= skip_to end in the empty block; two indices of slack.
                    const int64_t last = (int64_t)std::floor(lattice_index(L, near, n_flat, t_switch, skip_to) - k_first) - 2;
                    if (last >= j + 1) { j = last + 1; continue; }
                }
            } else if (occupied(g, o, d, mid)) {
                fn(t0, t1);
            }
        }
        ++j;
    }
}

}  // namespace

// Side of the blocks for skipping empty space in a single-level grid: 8 (or 4, 2) cells if the
// resolution divides; 1: no blocks.
inline int block_side(int levels, const int* res) {
    if (levels != 1) return 1;
    for (int f : {8, 4, 2})
        if (res[0] % f == 0 && res[1] % f == 0 && res[2] % f == 0) return f;
    return 1;
}

// The grid's bits (one bool byte per cell) packed 64 to a word, and for a single-level grid which
// blocks of block_side^3 cells hold any occupied cell. Done once per grid (the marcher caches it).
extern "C" void nfplug_pack_grid(int levels, const int* res, const uint8_t* bits, uint64_t* packed,
                                 uint8_t* coarse, int n_threads) {
    const int64_t n_cells = (int64_t)levels * res[0] * res[1] * res[2];
    const int64_t n_words = (n_cells + 63) / 64;
#pragma omp parallel for num_threads(n_threads) schedule(static)
    for (int64_t w = 0; w < n_words; ++w) {
        uint64_t word = 0;
        const int64_t end = std::min<int64_t>(64, n_cells - w * 64);
        for (int64_t i = 0; i < end; ++i) word |= (uint64_t)(bits[w * 64 + i] != 0) << i;
        packed[w] = word;
    }
    const int blk = block_side(levels, res);
    if (blk == 1) return;
    const int c0 = res[0] / blk, c1 = res[1] / blk, c2 = res[2] / blk;
    std::fill(coarse, coarse + (size_t)c0 * c1 * c2, 0);
#pragma omp parallel for num_threads(n_threads)
    for (int bx = 0; bx < c0; ++bx)
        for (int x = bx * blk; x < (bx + 1) * blk; ++x)
            for (int y = 0; y < res[1]; ++y) {
                const uint8_t* row = bits + ((int64_t)x * res[1] + y) * res[2];
                uint8_t* out = coarse + ((int64_t)bx * c1 + y / blk) * c2;
                for (int bz = 0; bz < c2; ++bz) {
                    uint8_t any = 0;
                    for (int z = 0; z < blk; ++z) any |= row[bz * blk + z];
                    out[bz] |= any;
                }
            }
}

// rays: [n, 7] per ray (near, lo, hi, k_first, n_candidates, n_flat, t_switch); packed, coarse:
// the grid from nfplug_pack_grid.
// Pass 0: walks every ray, writing its samples to t_starts / t_ends from bound[r] (the exclusive
// prefix sum of n_candidates, room for all of them) and their number to counts[r].
// Pass 1: moves them to first[r] (the exclusive prefix sum of counts) in out_starts / out_ends and
// fills ray_index.
extern "C" void nfplug_march(int pass, int64_t n, const float* rays_o, const float* rays_d, const float* rays,
                             int levels, const int* res, const uint64_t* packed, const uint8_t* coarse,
                             const float* aabb, float step, float cone, const int64_t* bound, int64_t* counts,
                             float* t_starts, float* t_ends, const int64_t* first, int64_t* ray_index,
                             float* out_starts, float* out_ends, int n_threads) {
    if (pass == 1) {
#pragma omp parallel for num_threads(n_threads) schedule(static)
        for (int64_t r = 0; r < n; ++r) {
            const int64_t src = bound[r], dst = first[r], m = counts[r];
            for (int64_t j = 0; j < m; ++j) {
                ray_index[dst + j] = r;
                out_starts[dst + j] = t_starts[src + j];
                out_ends[dst + j] = t_ends[src + j];
            }
        }
        return;
    }
    Grid g;
    g.levels = levels;
    for (int a = 0; a < 3; ++a) {
        g.res[a] = res[a];
        g.lo[a] = aabb[a];
        g.size[a] = aabb[3 + a] - aabb[a];
        g.scale[a] = (float)res[a] / g.size[a];
    }
    g.bits = packed;
    const Lattice L{step, cone, 1.f + cone};
    g.blk = block_side(levels, res);
    g.coarse = g.blk > 1 ? coarse : nullptr;
#pragma omp parallel for num_threads(n_threads) schedule(dynamic, 64)
    for (int64_t r = 0; r < n; ++r) {
        int64_t at = bound[r];
        walk(g, L, rays_o + 3 * r, rays_d + 3 * r, rays + 7 * r, [&](float a, float b) {
            t_starts[at] = a;
            t_ends[at] = b;
            ++at;
        });
        counts[r] = at - bound[r];
    }
}
"""
_march_lib: Optional[ctypes.CDLL] = None


def _native_marcher() -> Optional[ctypes.CDLL]:
    """The compiled marcher; None if it cannot be built. ``-ffp-contract=off`` keeps every
    multiply and add rounded separately, as in the PyTorch reference."""
    global _march_lib
    if _march_lib is None:
        lib = load_library("marcher", _MARCH_SOURCE, "ray-marching", ("-ffp-contract=off",))
        if lib is None:
            return None
        ptr, i64, c_int, c_float = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_float
        lib.nfplug_march.argtypes = [c_int, i64, ptr, ptr, ptr, c_int, ptr, ptr, ptr, ptr, c_float, c_float] + [ptr] * 8 + [c_int]
        lib.nfplug_march.restype = None
        lib.nfplug_pack_grid.argtypes = [c_int, ptr, ptr, ptr, ptr, c_int]
        lib.nfplug_pack_grid.restype = None
        _march_lib = lib
    return _march_lib


def _packed_grid(estimator: nerfacc.OccGridEstimator, lib: ctypes.CDLL, threads: int) -> Tuple[Tensor, Tensor, Tensor]:
    """``(res int32 [3], packed bits, coarse blocks)`` of the estimator's grid for the C++ marcher,
    cached on the estimator until its ``binaries`` are replaced or changed in place (the grid
    changes once per update; packing took 1.1-1.8 ms of each 4096-ray march of lego)."""
    binaries = estimator.binaries
    cached = getattr(estimator, "_nfplug_packed", None)
    if cached is not None and cached[0] is binaries and cached[1] == binaries._version:
        return cached[2]
    flat = binaries.contiguous()
    res = torch.tensor(flat.shape[1:], dtype=torch.int32)
    packed = torch.empty((flat.numel() + 63) // 64, dtype=torch.int64)
    coarse = torch.empty(flat[0].numel() if flat.shape[0] == 1 else 0, dtype=torch.uint8)
    lib.nfplug_pack_grid(flat.shape[0], res.data_ptr(), flat.view(torch.uint8).data_ptr(), packed.data_ptr(), coarse.data_ptr(), threads)
    # The tensor itself is kept: a replacement can never be mistaken for it (same address, version 0).
    estimator._nfplug_packed = (binaries, binaries._version, (res, packed, coarse))
    return res, packed, coarse


@torch.no_grad()
def _march_rays_native(
    estimator: nerfacc.OccGridEstimator,
    rays_o: Tensor,
    rays_d: Tensor,
    near_plane: float,
    far_plane: float,
    render_step_size: float,
    stratified: bool,
    cone_angle: float,
    generator: Optional[torch.Generator],
) -> Tuple[Tensor, Tensor, Tensor]:
    """:func:`_march_rays_cpu` in C++: each ray walks its lattice indices and tests each midpoint
    (the same ranges, lattice and occupancy rule) against a bit-packed copy of the grid, writing
    its samples into room for all its candidates; a second pass packs them."""
    lib = _native_marcher()
    assert lib is not None
    n_rays = rays_o.shape[0]
    step = float(render_step_size)
    near, lo, hi, _, k_first, n_candidates = _ray_ranges(
        estimator, rays_o, rays_d, near_plane, far_plane, step, stratified, cone_angle, generator
    )
    if cone_angle > 0.0:
        n_flat, t_switch = _arithmetic_part(near, step, cone_angle)
    else:
        n_flat, t_switch = torch.zeros_like(near), near
    rays = torch.cat([near, lo, hi, k_first, n_candidates, n_flat, t_switch], dim=1).contiguous()
    rays_o, rays_d = rays_o.contiguous(), rays_d.contiguous()
    levels = estimator.binaries.shape[0]
    aabb = estimator.aabbs[0].to(torch.float32).contiguous()
    threads = max(1, torch.get_num_threads())
    res, packed, coarse = _packed_grid(estimator, lib, threads)
    n_cand = n_candidates.reshape(-1).long()
    bound_end = torch.cumsum(n_cand, 0)
    indices, starts, ends = [], [], []
    first_ray = 0
    while first_ray < n_rays:
        # Rays whose candidates fit in _MAX_ROOM (at least one ray): tiny steps on long rays
        # must not allocate room for billions of candidates at once.
        before = int(bound_end[first_ray - 1].item()) if first_ray > 0 else 0
        last = int(torch.searchsorted(bound_end, before + _MAX_ROOM, right=True).item())
        last = min(n_rays, max(last, first_ray + 1))
        chunk = slice(first_ray, last)
        bound = bound_end[chunk] - n_cand[chunk]
        bound -= before
        room = int(bound_end[last - 1].item()) - before
        scratch_s, scratch_e = torch.empty(room), torch.empty(room)
        counts = torch.zeros(last - first_ray, dtype=torch.int64)

        def run(pass_: int, first: Tensor, ray_index: Tensor, t_s: Tensor, t_e: Tensor) -> None:
            lib.nfplug_march(
                pass_, last - first_ray, rays_o[chunk].data_ptr(), rays_d[chunk].data_ptr(), rays[chunk].data_ptr(),
                levels, res.data_ptr(), packed.data_ptr(), coarse.data_ptr(), aabb.data_ptr(), step, float(cone_angle),
                bound.data_ptr(), counts.data_ptr(), scratch_s.data_ptr(), scratch_e.data_ptr(), first.data_ptr(),
                ray_index.data_ptr(), t_s.data_ptr(), t_e.data_ptr(), threads,
            )

        nothing = torch.empty(0)
        run(0, counts, nothing, nothing, nothing)
        stops = torch.cumsum(counts, 0)
        total = int(stops[-1].item())
        ray_index = torch.empty(total, dtype=torch.int64)
        t_starts, t_ends = torch.empty(total), torch.empty(total)
        if total > 0:
            run(1, stops - counts, ray_index, t_starts, t_ends)
        indices.append(ray_index + first_ray)
        starts.append(t_starts)
        ends.append(t_ends)
        first_ray = last
    if not indices:
        empty = torch.empty(0)
        return torch.empty(0, dtype=torch.int64), empty, empty.clone()
    ray_index, t_starts, t_ends = torch.cat(indices), torch.cat(starts), torch.cat(ends)
    return ray_index, t_starts, t_ends


def native_marcher_available(rays_o: Tensor) -> bool:
    """Whether :func:`march_rays` runs these rays on the C++ marcher (CPU float32, kernel built)."""
    return rays_o.device.type == "cpu" and rays_o.dtype == torch.float32 and _native_marcher() is not None


@torch.no_grad()
def march_rays(
    estimator: nerfacc.OccGridEstimator,
    rays_o: Tensor,
    rays_d: Tensor,
    *,
    near_plane: float,
    far_plane: float,
    render_step_size: float,
    sigma_fn: Optional[SigmaFn] = None,
    alpha_thre: float = 0.0,
    early_stop_eps: float = 1e-4,
    stratified: bool = False,
    cone_angle: float = 0.0,
    generator: Optional[torch.Generator] = None,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Samples in occupied space along each ray (``OccGridEstimator.sampling``).

    Args:
        estimator: nerfacc occupancy grid (``binaries [levels, R, R, R]``, ``aabbs``,
            ``occs``) on the same device as the rays.
        rays_o: ``[n_rays, 3]`` origins, world units.
        rays_d: ``[n_rays, 3]`` unit directions.
        near_plane, far_plane: ray range (world units).
        render_step_size: lattice step (world units), > 0.
        sigma_fn: ``(t_starts, t_ends, ray_indices) -> sigmas [n_samples]``, called
            without grad on the occupied samples to drop invisible ones; None skips that.
        alpha_thre: drop samples with opacity below ``min(alpha_thre, occs.mean())``.
        early_stop_eps: drop samples whose transmittance is below this.
        stratified: jitter each ray's lattice by a uniform offset in ``[0, step)``
            (from ``generator`` in PyTorch; nerfacc's own RNG in its CUDA kernel).
        cone_angle: step growth ``dt = clamp(t * cone_angle, step, 1e10)``; 0 = uniform.
        generator: CPU RNG for ``stratified`` in the PyTorch path (any device).

    Returns:
        ``ray_indices [n_samples]`` long, ``t_starts [n_samples]``, ``t_ends [n_samples]``,
        sorted by ray, then ``t``. Not differentiable.
    """
    if render_step_size <= 0:
        raise ValueError(f"render_step_size must be > 0, got {render_step_size}")
    if cone_angle < 0:
        raise ValueError(f"cone_angle must be >= 0, got {cone_angle}")
    if use_nerfacc_kernels(rays_o):
        return estimator.sampling(
            rays_o,
            rays_d,
            sigma_fn=sigma_fn,
            near_plane=near_plane,
            far_plane=far_plane,
            render_step_size=render_step_size,
            early_stop_eps=early_stop_eps,
            alpha_thre=alpha_thre,
            stratified=stratified,
            cone_angle=cone_angle,
        )
    march = _march_rays_native if native_marcher_available(rays_o) else _march_rays_cpu
    ray_indices, t_starts, t_ends = march(
        estimator, rays_o, rays_d, near_plane, far_plane, render_step_size, stratified, cone_angle, generator
    )
    if sigma_fn is None or not (alpha_thre > 0.0 or early_stop_eps > 0.0) or t_starts.shape[0] == 0:
        return ray_indices, t_starts, t_ends
    sigmas = sigma_fn(t_starts, t_ends, ray_indices)
    visible = visible_samples(estimator, t_starts, t_ends, sigmas, ray_indices, rays_o.shape[0], alpha_thre, early_stop_eps)
    return ray_indices[visible], t_starts[visible], t_ends[visible]


def visible_samples(
    estimator: nerfacc.OccGridEstimator, t_starts: Tensor, t_ends: Tensor, sigmas: Tensor, ray_indices: Tensor,
    n_rays: int, alpha_thre: float, early_stop_eps: float,
) -> Tensor:
    """``[n_kept]`` long, ascending: the indices of the samples :func:`march_rays` keeps given
    their densities (transmittance at least ``early_stop_eps``; opacity at least
    ``min(alpha_thre, occs.mean())``). On the CPU one C++ pass (:func:`visible_samples_native`);
    this function's PyTorch lines are its reference."""
    if sigmas.shape != t_starts.shape:
        raise ValueError(f"sigma_fn must return sigmas [{t_starts.shape[0]}], got {tuple(sigmas.shape)}")
    alpha_thre = min(alpha_thre, estimator.occs.mean().item()) if alpha_thre > 0.0 else 0.0
    if native_available(ray_indices, t_starts, t_ends, sigmas.detach()):
        return visible_samples_native(t_starts, t_ends, sigmas, ray_indices, alpha_thre, early_stop_eps)
    trans, alphas = render_transmittance(t_starts, t_ends, sigmas, ray_indices, n_rays)
    visible = trans >= early_stop_eps
    if alpha_thre > 0.0:
        visible &= alphas >= alpha_thre
    return torch.nonzero(visible)[:, 0]
