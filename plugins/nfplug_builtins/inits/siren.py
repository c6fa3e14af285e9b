"""``siren``: the SIREN initialization (Sitzmann et al. 2020, sec. 3.2 and supplement 1.5).

For a chain of linear layers ``W_0 ... W_L`` (``fan_in`` = a layer's input width):

- first layer: ``W_0 ~ U(-1 / fan_in, 1 / fan_in)``;
- every other layer: ``W_l ~ U(-sqrt(6 / fan_in) / omega_0, sqrt(6 / fan_in) / omega_0)``;
- biases: PyTorch's ``nn.Linear`` default ``U(-1 / sqrt(fan_in), 1 / sqrt(fan_in))``, which the
  official SIREN code (and the weight-scaling authors' code) leave in place. They are
  redrawn here from the init's generator so that a run is fully determined by its seed.

:func:`nfplug.nn.siren_uniform_` also takes a ``weight_scale`` applied to every weight matrix but
the last, which is the whole of the weight-scaling init (:mod:`.weight_scaling`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from nfplug.api import API_VERSION, Field, Init, require_range
from nfplug.nn import field_layers, resolve_omega_0, siren_uniform_


class SirenInit(Init):
    """SIREN's uniform initialization, on any field that exposes ``layers()``."""

    @dataclass(frozen=True)
    class Config:
        omega_0: Optional[float] = None
        """Hidden-layer frequency omega_0 in the bound sqrt(6 / fan_in) / omega_0
        (default: the field's own omega_0 if it has one, else 30 as in the paper)."""

        def validate(self) -> None:
            require_range(self.omega_0, "--init.omega-0", 0, low_open=True)

    description = "SIREN initialization (Sitzmann et al. 2020)"
    api_version = API_VERSION

    def apply(self, field: Field, generator: torch.Generator) -> None:
        layers = field_layers(field, "siren")
        siren_uniform_(layers, resolve_omega_0(self.config.omega_0, field, "siren"), generator)
