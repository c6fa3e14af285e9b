"""An MLP on random Fourier features, ``[cos(2 pi B u), sin(2 pi B u)]`` with a fixed Gaussian
``B`` (Tancik et al., "Fourier Features Let Networks Learn High Frequency Functions in Low
Dimensional Domains", NeurIPS 2020), for scenes and images: a complete third-party nfplug field."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nfplug.api import FieldContext, ImageField, SceneField, require_range


@dataclass(frozen=True)
class FourierConfig:
    n_features: int = 128
    """Random frequencies (the encoding has twice as many values)."""
    scale: float = 10.0
    """Standard deviation of the frequencies, in cycles across the field's box (the paper's sigma)."""
    hidden_dim: int = 128
    """Width of the MLP's hidden layers."""
    n_hidden: int = 3
    """Hidden layers."""

    def validate(self) -> None:
        require_range(self.n_features, "--field.n-features", 1, 4096)
        require_range(self.scale, "--field.scale", 0.0, 1e4, low_open=True)
        require_range(self.hidden_dim, "--field.hidden-dim", 1, 4096)
        require_range(self.n_hidden, "--field.n-hidden", 1, 32)


class FourierField(SceneField, ImageField):
    """Scene task: position -> (RGB, density), the view direction unused. Image task: coordinates
    -> colour. ``B`` is a buffer: saved in checkpoints, drawn from torch's seeded generator."""

    Config = FourierConfig
    description = "MLP on random Fourier features (Tancik et al. 2020)"
    api_version = 2
    tasks = ("scene", "image")
    default_lr = 1e-3

    def __init__(self, config: FourierConfig, context: FieldContext) -> None:
        super().__init__(config, context)
        dim = 3 if context.task == "scene" else 2
        self.register_buffer("B", torch.randn(dim, config.n_features) * config.scale)
        out_dim = 4 if context.task == "scene" else context.out_channels
        layers, width = [], 2 * config.n_features
        for _ in range(config.n_hidden):
            layers += [nn.Linear(width, config.hidden_dim), nn.ReLU()]
            width = config.hidden_dim
        self.mlp = nn.Sequential(*layers, nn.Linear(width, out_dim))

    def _encode(self, u: Tensor) -> Tensor:
        """``u [N, D]`` in [0, 1] -> ``[N, 2 * n_features]``."""
        angles = 2 * math.pi * u @ self.B
        return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)

    def _scene(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        u, inside = self.unit_coords(x)
        raw = self.mlp(self._encode(u))
        return raw, F.softplus(raw[:, 0] - 1.0) * inside  # zero density outside the box

    def density(self, x: Tensor) -> Tensor:
        return self._scene(x)[1]

    def forward(self, x: Tensor, d: Optional[Tensor] = None):
        if self.context.task == "image":
            return torch.sigmoid(self.mlp(self._encode((x + 1) / 2)))
        raw, sigma = self._scene(x)
        return torch.sigmoid(raw[:, 1:4]), sigma

    def layers(self) -> list:
        """The linear layers, input to output, for inits that act layer by layer."""
        return [m for m in self.mlp if isinstance(m, nn.Linear)]
