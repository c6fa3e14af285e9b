"""A learned background: the colour a ray sees behind everything, as a function of its direction.

Real captures have no transparent pixels: where the field stops (the occupancy grid's outermost box,
or rays the field leaves nearly empty) something must supply the sky, the far walls. A constant
colour paints them white or black; this small network (degree-4 spherical harmonics of the world
direction, one hidden layer of 32) learns them, like the background models of NeRF++ and
nerfstudio, at the cost of ~1.6k parameters.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from nfplug.encoding.frequency import spherical_harmonics


class LearnedBackground(nn.Module):
    """``rays_d [N, 3]`` unit world directions -> ``rgb [N, 3]`` in ``(0, 1)``."""

    def __init__(self, hidden: int = 32) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(16, hidden), nn.ReLU(), nn.Linear(hidden, 3))

    def forward(self, rays_d: Tensor) -> Tensor:
        return torch.sigmoid(self.mlp(spherical_harmonics(rays_d, 4)))
