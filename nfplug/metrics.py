"""Image quality metrics (torchmetrics' implementations, the ones papers report)."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure


def psnr(pred: Tensor, gt: Tensor) -> float:
    """PSNR in dB of images in [0, 1], any shape (pred and gt alike)."""
    return float(peak_signal_noise_ratio(pred.clamp(0, 1), gt, data_range=1.0))


def psnr_from_mse(mse: float) -> float:
    return float(-10.0 * torch.log10(torch.tensor(max(mse, 1e-12))))


def ssim(pred: Tensor, gt: Tensor) -> float:
    """SSIM (Gaussian window 11, sigma 1.5) of ``[H, W, C]`` images in [0, 1]."""
    to_nchw = lambda x: x.permute(2, 0, 1)[None].float()  # noqa: E731
    return float(structural_similarity_index_measure(to_nchw(pred.clamp(0, 1)), to_nchw(gt), data_range=1.0))
