"""``weight-scaling``: SIREN's init with the weights scaled by ``alpha`` (Yeom, Lee, Lee, ICLR 2025).

"Fast Training of Sinusoidal Neural Fields via Scaling Initialization": every weight
matrix except the last layer's is the SIREN draw times ``alpha`` (the first layer
included); biases and the last layer keep SIREN's init. Scaling the weights raises the
frequencies the network starts with, which the paper shows speeds up training by about
10x at ``alpha`` around 2.5, at some cost in generalisation for large ``alpha``.

As in the authors' code (github.com/effl-lab/Fast-Neural-Fields, ``ICLR2025/weight_scaling.py``:
``--scale 2.5``; first layer ``U(-scale / 2, scale / 2)`` on 2D inputs, hidden layers
``U(+-sqrt(6 / h) * scale / 30)``, last layer unscaled, biases left at PyTorch's default).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from nfplug.api import API_VERSION, Field, Init, require_range
from nfplug.nn import field_layers, resolve_omega_0, siren_uniform_


class WeightScalingInit(Init):
    """SIREN init with all weight matrices but the last multiplied by ``alpha``."""

    @dataclass(frozen=True)
    class Config:
        alpha: float = 2.5
        """Weight scale factor (the authors' code uses 2.5; 1 is plain SIREN)."""
        omega_0: Optional[float] = None
        """Hidden-layer omega_0 of the underlying SIREN init (default: the field's, else 30)."""

        def validate(self) -> None:
            require_range(self.alpha, "--init.alpha", 0, low_open=True)
            require_range(self.omega_0, "--init.omega-0", 0, low_open=True)

    description = "SIREN init with weights scaled by alpha (Yeom et al., ICLR 2025)"
    api_version = API_VERSION

    def apply(self, field: Field, generator: torch.Generator) -> None:
        layers = field_layers(field, "weight-scaling")
        omega_0 = resolve_omega_0(self.config.omega_0, field, "weight-scaling")
        siren_uniform_(layers, omega_0, generator, weight_scale=self.config.alpha)
