"""``uniform``: every step draws pixels uniformly over all training images."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nfplug.api import RayBatch, Sampler, SamplerContext


@dataclass(frozen=True)
class UniformConfig:
    jitter: bool = False
    """Draw continuous positions inside each pixel instead of pixel centres."""


class UniformSampler(Sampler):
    """Uniformly random pixels from uniformly random training images (the NeRF default)."""

    Config = UniformConfig
    description = "uniformly random pixels over all training images (the NeRF default)"

    def __init__(self, config: UniformConfig, context: SamplerContext) -> None:
        super().__init__(config, context)

    def sample(self, step: int, generator: torch.Generator) -> RayBatch:
        ctx = self.context
        n = ctx.batch_size
        image_index = torch.randint(0, ctx.n_images, (n,), generator=generator)
        cols = torch.randint(0, ctx.width, (n,), generator=generator)
        rows = torch.randint(0, ctx.height, (n,), generator=generator)
        pixel_xy = torch.stack([cols, rows], dim=-1).float()
        if self.config.jitter:
            pixel_xy = pixel_xy + torch.rand(n, 2, generator=generator)
        else:
            pixel_xy = pixel_xy + 0.5
        return RayBatch(
            image_index=image_index.to(ctx.device),
            pixel_xy=pixel_xy.to(ctx.device),
            weight=torch.ones(n, device=ctx.device),
        )
