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

Example::

    >>> t_starts = torch.tensor([0.0, 1.0, 0.0])
    >>> t_ends = torch.tensor([1.0, 2.0, 1.0])
    >>> ray_indices = torch.tensor([0, 0, 1])
    >>> weights, trans = render_weights(t_starts, t_ends, torch.ones(3), ray_indices, n_rays=2)
    >>> weights  # 1 - e^-1, e^-1 (1 - e^-1), 1 - e^-1
    tensor([0.6321, 0.2325, 0.6321])
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple

import nerfacc
import torch
from torch import Tensor

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
    weights, _ = render_weights(t_starts, t_ends, sigmas, ray_indices, n_rays)
    colors = accumulate(weights, rgbs, ray_indices, n_rays)
    opacities = accumulate(weights, None, ray_indices, n_rays)
    t_mids = (t_starts + t_ends)[:, None] / 2.0
    depths = accumulate(weights, t_mids, ray_indices, n_rays) / opacities.clamp_min(torch.finfo(opacities.dtype).eps)
    if render_bkgd is not None:
        colors = colors + render_bkgd * (1.0 - opacities)
    if with_weights:
        return colors, opacities, depths, weights
    return colors, opacities, depths
