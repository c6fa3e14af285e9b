"""Random square patches of pixels, for losses that look at neighbourhoods (e.g. patch-based
regularisers), as a complete third-party nfplug sampler."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from nfplug.api import RayBatch, Sampler, SamplerContext, require_range
from nfplug.errors import NfplugError


@dataclass(frozen=True)
class PatchConfig:
    patch_size: int = 8
    """Side of each square patch, in pixels (--sampler.patch-size)."""

    def validate(self) -> None:
        require_range(self.patch_size, "--sampler.patch-size", 1, 256)


class PatchSampler(Sampler):
    """Patches of ``patch_size`` x ``patch_size`` pixels, each inside one image and made of
    trainable pixels only; ``batch_size // patch_size**2`` of them a step (at least one)."""

    Config = PatchConfig
    description = "random square pixel patches"
    api_version = 2

    def __init__(self, config: PatchConfig, context: SamplerContext) -> None:
        super().__init__(config, context)
        p = config.patch_size
        if p > min(context.height, context.width):
            raise NfplugError(f"--sampler.patch-size: {p} is larger than the {context.width}x{context.height} images")
        mask = torch.ones(context.n_images, context.height, context.width) if context.pixel_mask is None else context.pixel_mask.float().cpu()
        # A patch may start at (row, col) if all its pixels are trainable: a min-pool of the mask.
        whole = -F.max_pool2d(-mask[:, None], p, stride=1)[:, 0]  # [n, H - p + 1, W - p + 1]
        self.image, self.row, self.col = (whole > 0.5).nonzero(as_tuple=True)
        if self.image.numel() == 0:
            raise NfplugError(f"--sampler.patch-size: no {p}x{p} patch of trainable pixels (a checkerboard hold-out leaves none; use 1)")

    def sample(self, step: int, generator: torch.Generator) -> RayBatch:
        ctx, p = self.context, self.config.patch_size
        n_patches = max(1, ctx.batch_size // (p * p))
        pick = torch.randint(0, self.image.shape[0], (n_patches,), generator=generator)
        dy, dx = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
        x = self.col[pick, None] + dx.reshape(1, -1)  # [n_patches, p * p]
        y = self.row[pick, None] + dy.reshape(1, -1)
        xy = torch.stack([x, y], dim=-1).reshape(-1, 2).float() + 0.5  # pixel centres
        return RayBatch(
            image_index=self.image[pick].repeat_interleave(p * p).to(ctx.device),
            pixel_xy=xy.to(ctx.device),
            weight=torch.ones(xy.shape[0], device=ctx.device),
        )
