"""Image quality metrics: torchmetrics' PSNR and SSIM (the ones papers report), and SSIM over a pixel mask.

SSIM uses torchmetrics' Gaussian window (11 pixels, sigma 1.5) on images at least 11 pixels
on their smaller side. A smaller image gets the largest odd window that fits it, with sigma
scaled to match (``1.5 * size / 11``), so SSIM stays a number in [-1, 1] comparing local means,
variances and covariance; at 1 or 2 pixels the window is a single pixel and SSIM compares
brightness only, ``(2 x y + C1) / (x^2 + y^2 + C1)``.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

SSIM_WINDOW = 11
"""torchmetrics' (and the SSIM paper's) Gaussian window, sigma 1.5."""


def psnr(pred: Tensor, gt: Tensor) -> float:
    """PSNR in dB of images in [0, 1], any shape (pred and gt alike)."""
    return float(peak_signal_noise_ratio(pred.clamp(0, 1), gt, data_range=1.0))


def psnr_from_mse(mse: float) -> float:
    return float(-10.0 * torch.log10(torch.tensor(max(mse, 1e-12))))


def ssim_window(height: int, width: int) -> tuple[int, float]:
    """The Gaussian window for an image: (size, sigma), size odd and at most the smaller side.

    torchmetrics derives the window from sigma (``2 * int(3.5 sigma + 0.5) + 1`` pixels), which
    ``1.5 * size / 11`` gives exactly for every odd size up to 11.
    """
    side = min(height, width)
    size = min(SSIM_WINDOW, side - (side + 1) % 2)
    return size, 1.5 * size / SSIM_WINDOW


def ssim(pred: Tensor, gt: Tensor, mask: Optional[Tensor] = None) -> float:
    """SSIM of ``[H, W, C]`` images in [0, 1] (window: :func:`ssim_window`).

    With ``mask [H, W]`` bool (a pixel hold-out), every window's means, variances and covariance
    are Gaussian-weighted over the masked pixels alone (weights renormalized) and the SSIM map is
    averaged over the masked pixels: pixels outside the mask do not count at all, also not as
    neighbours (averaging the plain SSIM map over a checkerboard's pixels would, since half of
    every window is the other half). With an all-true mask it equals the unmasked SSIM.
    """
    size, sigma = ssim_window(*gt.shape[:2])
    x, y = (image.permute(2, 0, 1)[None].float() for image in (pred.clamp(0, 1), gt))  # [1, C, H, W]
    if mask is None:
        return float(structural_similarity_index_measure(x, y, sigma=sigma, kernel_size=size, data_range=1.0))
    if not mask.any():
        raise ValueError("ssim: the mask selects no pixel")
    channels, pad = x.shape[1], (size - 1) // 2
    offsets = torch.arange(size, dtype=x.dtype, device=x.device) - pad
    g = torch.exp(-(offsets**2) / (2 * sigma**2))
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :]).expand(channels, 1, size, size)
    m = mask.to(x)[None, None].expand_as(x)
    sums = torch.cat([m, x * m, y * m, x * x * m, y * y * m, x * y * m])  # [6, C, H, W]
    w, sx, sy, sxx, syy, sxy = F.conv2d(F.pad(sums, (pad, pad, pad, pad), mode="reflect"), kernel, groups=channels)
    w = w.clamp_min(1e-12)  # zero only at pixels whose window has no masked pixel, never selected
    mx, my = sx / w, sy / w
    vx, vy = (sxx / w - mx**2).clamp_min(0), (syy / w - my**2).clamp_min(0)
    cov = sxy / w - mx * my
    c1, c2 = 0.01**2, 0.03**2  # torchmetrics' k1, k2 at data range 1
    ssim_map = (2 * mx * my + c1) * (2 * cov + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))  # [C, H, W]
    return float(ssim_map[:, mask.to(x.device)].mean())
