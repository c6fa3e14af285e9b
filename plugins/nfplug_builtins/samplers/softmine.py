"""``softmine``: soft mining with Langevin Monte-Carlo (Kheradmand et al., CVPR 2024).

A persistent set of sample positions, each tied to one training image (the batch is
split evenly over the images), drifts towards high error. The update is the authors'
(github.com/ubc-vision/nf-soft-mining, ``examples/train_ngp_nerf_prop.py`` and
``examples/datasets/lmc.py``), term for term::

    u_i <- u_i + a * g_i + b * eta_i,   eta_i ~ N(0, I)
    g_i  = (d mean_j(c_j l_j) / d x_i) / (c_i * (c_i l_i))  =  (d log l_i / d x_i) / (B * c_i)

with ``u`` the position normalised to ``[0, 1]^2``, ``x`` the same position in *pixels*
(the gradient is taken in pixels, the step applied to normalised coordinates), ``l_i`` the
ray's loss, ``c_i`` its soft-mining weight and ``B`` the rays per step. The authors' loss is
``mean(c * l)`` over the batch, and their ``loss_per_pix`` already holds ``c * l`` when they
divide by ``correction * loss_per_pix``: hence the ``1 / (B c_i)``. With the defaults
(a = 20, b = 0.02) and 4096 rays a step the drift is small next to the noise; samples
mostly wander and are re-drawn. ``--sampler.drift-scale`` multiplies ``a``.

Rays go through the centre of the nearest pixel, so the ground truth of a ray is exactly
its pixel. After each move, samples that left the image (or a trainable-pixel mask) or
whose weighted loss ``c l`` is among the lowest ``low_loss_fraction`` are re-drawn from a
Sobel-edge distribution of their image, and a further ``uniform_fraction`` of them, chosen
at random, uniformly. The loss of each ray is weighted by ``c = (1 / e)^r`` (``e`` its L1
error, mean over channels), clamped to ``[c_min, mean(c) + std(c)]`` and detached, where
``r = min(step / ramp_steps, alpha)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from nfplug.api import API_VERSION, RayBatch, Sampler, SamplerContext, StepFeedback
from nfplug.errors import NfplugError


@dataclass(frozen=True)
class SoftMineConfig:
    alpha: float = 0.6
    """Final exponent of the loss weight (1 / error)^r: 0 is hard mining, 1 plain importance
    sampling. The authors use 0.6 for object scenes and 0.8 for forward-facing ones."""
    ramp_steps: int = 1000
    """r = min(step / ramp_steps, alpha): the exponent grows by 1 / ramp_steps per step (authors' code)."""
    step_size: float = 20.0
    """Langevin drift a (authors' value): u += a * d log l / d pixel / (B c), u in [0, 1]^2
    (see the module doc)."""
    drift_scale: float = 1.0
    """Extra factor on the drift a (1: the authors' update). nfplug 0.1 moved samples about
    B * c times further (B rays per step, c the loss weight), which --sampler.drift-scale 4096
    at 4096 rays per step roughly restores."""
    noise: float = 0.02
    """Langevin noise b, in coordinates normalised to [0, 1]."""
    low_loss_fraction: float = 0.1
    """Fraction of samples with the lowest loss re-drawn from the edge distribution each step."""
    uniform_fraction: float = 0.1
    """Fraction of samples re-drawn uniformly over their image each step."""
    redraw: str = "edges"
    """Where re-drawn low-loss and out-of-image samples go: 'edges' (Sobel magnitude of their
    image, the authors' choice) or 'uniform'."""
    weight_min: float = 0.2
    """Lower clamp of the loss weight."""
    snap: bool = True
    """Rays through the centre of the nearest pixel (authors' code); False keeps continuous positions."""

    def validate(self) -> None:
        from nfplug.api import require_choice, require_range

        require_range(self.alpha, "--sampler.alpha", 0)
        require_range(self.ramp_steps, "--sampler.ramp-steps", 1)
        require_range(self.step_size, "--sampler.step-size", 0)
        require_range(self.drift_scale, "--sampler.drift-scale", 0)
        require_range(self.noise, "--sampler.noise", 0)
        require_range(self.low_loss_fraction, "--sampler.low-loss-fraction", 0, 1)
        require_range(self.uniform_fraction, "--sampler.uniform-fraction", 0, 1)
        require_choice(self.redraw, "--sampler.redraw", ("edges", "uniform"))
        require_range(self.weight_min, "--sampler.weight-min", 0)


def sobel_edges(images: Tensor) -> Tensor:
    """Sobel edge magnitude per pixel, as the authors compute it (but for the border padding).

    images ``[N, H, W, C]`` in ``[0, 1]`` -> ``[N, H, W]`` in ``[1e-5, 1]``, each image
    normalised by its maximum (grayscale by luma weights when ``C >= 3``).
    """
    if images.shape[-1] >= 3:
        gray = 0.2989 * images[..., 0] + 0.5870 * images[..., 1] + 0.1140 * images[..., 2]
    else:
        gray = images[..., 0]
    # Replicate padding (the authors pad with zeros, which makes every image border an edge).
    gray = F.pad(gray[:, None].float(), (1, 1, 1, 1), mode="replicate")
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=gray.device)
    gx = F.conv2d(gray, kx.view(1, 1, 3, 3))
    gy = F.conv2d(gray, kx.t().contiguous().view(1, 1, 3, 3))
    edges = torch.sqrt(gx**2 + gy**2)[:, 0]
    edges = edges / (edges.amax(dim=(1, 2), keepdim=True) + 1e-7)
    return edges.clamp(1e-5, 1.0)


def sample_pixels(cdf: Tensor, image_index: Tensor, generator: torch.Generator) -> Tensor:
    """Draw one pixel per request from a per-image distribution.

    cdf ``[N, H*W]`` per-image cumulative probabilities (last entry 1), image_index ``[M]``
    -> flat pixel index ``[M]`` long. Vectorised: draws the largest per-image count for
    every image in one batched search and keeps the first ``count[i]`` of image ``i``.
    """
    if image_index.numel() == 0:
        return image_index.new_zeros(0)
    n = cdf.shape[0]
    counts = torch.bincount(image_index.cpu(), minlength=n)
    u = torch.rand(n, int(counts.max()), generator=generator)
    flat = torch.searchsorted(cdf, u, right=True).clamp_(max=cdf.shape[1] - 1)
    # Request j of image i takes column (rank of j among image i's requests).
    order = torch.argsort(image_index.cpu(), stable=True)
    starts = torch.cumsum(counts, 0) - counts
    sorted_images = image_index.cpu()[order]
    rank = torch.arange(order.numel()) - starts[sorted_images]
    out = torch.empty_like(image_index.cpu())
    out[order] = flat.cpu()[sorted_images, rank]
    return out.to(image_index.device)


class SoftMineSampler(Sampler):
    """Persistent samples moved by Langevin steps towards high error, with soft-mining weights."""

    Config = SoftMineConfig
    description = "soft mining: Langevin-moved samples towards high error, importance-weighted loss (CVPR 2024)"
    api_version = API_VERSION
    needs_position_grad = True

    def __init__(self, config: SoftMineConfig, context: SamplerContext) -> None:
        super().__init__(config, context)  # validates config (SoftMineConfig.validate)
        n, h, w = context.n_images, context.height, context.width
        self.batch_size = context.batch_size
        # Contiguous, near-equal groups: sample i belongs to image floor(i * n / B).
        self.image_index = torch.arange(self.batch_size) * n // self.batch_size
        mask = context.pixel_mask.cpu() if context.pixel_mask is not None else torch.ones(n, h, w, dtype=torch.bool)
        self.mask = mask
        if not bool(mask.reshape(n, -1).any(dim=1).all()):
            raise NfplugError("softmine: every training image needs at least one trainable pixel (pixel_mask)")
        self.uniform_cdf = _cdf(mask.float())
        edges = sobel_edges(context.images.cpu()) * mask
        self.edge_cdf = _cdf(edges) if config.redraw == "edges" else self.uniform_cdf
        self.positions: Optional[Tensor] = None  # [B, 2] normalised (x, y) in [0, 1]
        self.pending_grad: Optional[Tensor] = None  # [B, 2] the authors' g of the last step (module doc)
        self.pending_loss: Optional[Tensor] = None  # [B] weighted loss c * l of the last step
        self.redrawn: Dict[str, float] = {}  # fractions re-drawn at the last move, by reason

    # ----------------------------------------------------------------- geometry
    def _size(self) -> Tensor:
        return torch.tensor([self.context.width, self.context.height], dtype=torch.float32)

    def _to_normalised(self, flat: Tensor) -> Tensor:
        """Flat pixel index ``[M]`` -> normalised position ``[M, 2]`` of the pixel."""
        w, h = self.context.width, self.context.height
        xy = torch.stack([flat % w, flat // w], dim=-1).float()
        if self.config.snap:
            return xy / torch.tensor([max(1, w - 1), max(1, h - 1)], dtype=torch.float32)
        return (xy + 0.5) / self._size()

    def _pixels(self, positions: Tensor) -> Tensor:
        """Normalised positions ``[B, 2]`` -> pixel coordinates ``[B, 2]`` handed to the engine."""
        w, h = self.context.width, self.context.height
        if self.config.snap:
            scale = torch.tensor([max(1, w - 1), max(1, h - 1)], dtype=torch.float32)
            return torch.round(positions * scale) + 0.5
        eps = 1e-4  # keep floor() inside the image at u = 1
        return (positions * self._size()).clamp(min=torch.zeros(2), max=self._size() - eps)

    def _trainable(self, pixel_xy: Tensor) -> Tensor:
        cols = pixel_xy[:, 0].floor().long().clamp(0, self.context.width - 1)
        rows = pixel_xy[:, 1].floor().long().clamp(0, self.context.height - 1)
        return self.mask[self.image_index, rows, cols]

    # ----------------------------------------------------------------- sampling
    def sample(self, step: int, generator: torch.Generator) -> RayBatch:
        if self.positions is None:
            self.positions = self._to_normalised(sample_pixels(self.uniform_cdf, self.image_index, generator))
        elif self.pending_grad is not None and self.pending_loss is not None:
            self._langevin(generator)
        pixel_xy = self._pixels(self.positions)
        device = self.context.device
        return RayBatch(
            image_index=self.image_index.to(device),
            pixel_xy=pixel_xy.to(device),
            weight=torch.ones(self.batch_size, device=device),
        )

    def _langevin(self, generator: torch.Generator) -> None:
        cfg = self.config
        assert self.positions is not None and self.pending_grad is not None and self.pending_loss is not None
        b = self.batch_size
        noise = torch.randn(b, 2, generator=generator)
        self.positions = self.positions + cfg.drift_scale * cfg.step_size * self.pending_grad + cfg.noise * noise
        outside = ((self.positions < 0) | (self.positions > 1)).any(dim=1)
        outside |= ~self._trainable(self._pixels(self.positions.clamp(0, 1)))
        n_low = int(cfg.low_loss_fraction * b)
        low = torch.zeros(b, dtype=torch.bool)
        if n_low > 0:
            threshold = torch.kthvalue(self.pending_loss, min(b, n_low + 1)).values
            low = self.pending_loss <= threshold
        n_uniform = int(cfg.uniform_fraction * b)
        if n_uniform > 0:
            pick = torch.randperm(b, generator=generator)[:n_uniform]
            self.positions[pick] = self._to_normalised(sample_pixels(self.uniform_cdf, self.image_index[pick], generator))
        redraw = torch.nonzero(outside | low).squeeze(1)
        if redraw.numel() > 0:
            self.positions[redraw] = self._to_normalised(sample_pixels(self.edge_cdf, self.image_index[redraw], generator))
        self.positions = self.positions.clamp(0.0, 1.0)
        self.pending_grad = self.pending_loss = None
        self.redrawn = {"left_image": outside.float().mean().item(), "low_loss": (low & ~outside).float().mean().item()}

    def loss_weight(self, step: int, batch: RayBatch, loss: Tensor, error: Tensor) -> Tensor:
        cfg = self.config
        r = min(step / cfg.ramp_steps, cfg.alpha)
        if r == 0:
            return torch.ones_like(error)
        per_channel = error / self.context.images.shape[-1]  # authors: L1 mean over channels
        c = (1.0 / per_channel.clamp(min=torch.finfo(torch.float16).eps)) ** r
        upper = c.mean() + c.std() if c.numel() > 1 else c.mean()
        return torch.minimum(c.clamp(min=cfg.weight_min), upper)

    def update(self, feedback: StepFeedback) -> None:
        if feedback.position_grad is None:
            return
        loss = feedback.loss.detach().cpu().float()
        c = feedback.batch.weight.detach().cpu().float()
        # The engine hands back d l_i / d pixel_xy_i, unweighted; the authors' g_i (module doc).
        eps = torch.finfo(torch.float32).eps
        self.pending_grad = feedback.position_grad.detach().cpu().float() / (self.batch_size * c * loss + eps)[:, None]
        self.pending_loss = c * loss  # the authors rank the weighted loss for low-loss re-draws

    def scalars(self) -> Dict[str, float]:
        """Fractions of the samples re-drawn at the last move: they left the image, or had low loss."""
        return {f"redrawn_{key}": value for key, value in self.redrawn.items()}

    # -------------------------------------------------------------------- state
    def state_dict(self) -> Dict[str, Any]:
        return {"positions": self.positions, "pending_grad": self.pending_grad, "pending_loss": self.pending_loss, "redrawn": dict(self.redrawn)}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.positions = _cpu(state.get("positions"))
        self.pending_grad = _cpu(state.get("pending_grad"))
        self.pending_loss = _cpu(state.get("pending_loss"))
        self.redrawn = {str(k): float(v) for k, v in state.get("redrawn", {}).items()}


def _cdf(weights: Tensor) -> Tensor:
    """``[N, H, W]`` non-negative weights -> ``[N, H*W]`` per-image cumulative distribution."""
    flat = weights.reshape(weights.shape[0], -1).double()
    cdf = torch.cumsum(flat / flat.sum(dim=1, keepdim=True), dim=1)
    cdf[:, -1] = 1.0
    return cdf.float()


def _cpu(value: Optional[Tensor]) -> Optional[Tensor]:
    return None if value is None else value.detach().cpu().float()
