"""``uniform``: every step draws pixels uniformly over all training images."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nfplug.api import API_VERSION, RayBatch, Sampler, SamplerContext


@dataclass(frozen=True)
class UniformConfig:
    jitter: bool = False
    """Draw continuous positions inside each pixel instead of pixel centres."""


class UniformSampler(Sampler):
    """Uniformly random trainable pixels (the NeRF default); every pixel when full-batch."""

    Config = UniformConfig
    description = "uniformly random pixels over all training images (the NeRF default)"
    api_version = API_VERSION

    def __init__(self, config: UniformConfig, context: SamplerContext) -> None:
        super().__init__(config, context)
        self.image_index, self.pixel_xy = context.trainable_pixels()
        self.full_batch = context.batch_size >= self.image_index.shape[0]

    def sample(self, step: int, generator: torch.Generator) -> RayBatch:
        ctx = self.context
        if self.full_batch:
            image_index, pixel_xy = self.image_index, self.pixel_xy
        else:
            pick = torch.randint(0, self.image_index.shape[0], (ctx.batch_size,), generator=generator)
            image_index, pixel_xy = self.image_index[pick], self.pixel_xy[pick]
        if self.config.jitter:
            pixel_xy = pixel_xy + torch.rand(pixel_xy.shape, generator=generator) - 0.5
        return RayBatch(
            image_index=image_index.to(ctx.device),
            pixel_xy=pixel_xy.to(ctx.device),
            weight=torch.ones(image_index.shape[0], device=ctx.device),
        )
