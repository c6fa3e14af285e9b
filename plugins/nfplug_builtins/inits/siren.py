"""``siren``: the SIREN initialization (Sitzmann et al. 2020, sec. 3.2 and supplement 1.5).

For a chain of linear layers ``W_0 ... W_L`` (``fan_in`` = a layer's input width):

- first layer: ``W_0 ~ U(-1 / fan_in, 1 / fan_in)``;
- every other layer: ``W_l ~ U(-sqrt(6 / fan_in) / omega_0, sqrt(6 / fan_in) / omega_0)``;
- biases: PyTorch's ``nn.Linear`` default ``U(-1 / sqrt(fan_in), 1 / sqrt(fan_in))``, which the
  official SIREN code (and the weight-scaling authors' code) leave in place. They are
  redrawn here from the init's generator so that a run is fully determined by its seed.

:func:`siren_uniform_` also takes a ``weight_scale`` applied to every weight matrix but
the last, which is the whole of the weight-scaling init (:mod:`.weight_scaling`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch
from torch import nn

from nfplug.api import API_VERSION, Field, Init, require_range
from nfplug.errors import NfplugError


def siren_bounds(layers: Sequence[nn.Linear], omega_0: float, weight_scale: float = 1.0) -> List[float]:
    """Half-widths of the uniform weight distributions, one per layer (the last is never scaled)."""
    bounds = []
    for i, layer in enumerate(layers):
        fan_in = layer.in_features
        bound = 1.0 / fan_in if i == 0 else math.sqrt(6.0 / fan_in) / omega_0
        bounds.append(bound if i == len(layers) - 1 else bound * weight_scale)
    return bounds


@torch.no_grad()
def siren_uniform_(
    layers: Sequence[nn.Linear], omega_0: float, generator: Optional[torch.Generator] = None, weight_scale: float = 1.0
) -> None:
    """Initialize ``layers`` (input to output) in place as SIREN does, weights times ``weight_scale`` but the last.

    Draws, layer by layer, the weight then the bias from ``generator`` (torch's global
    generator if ``None``), so two calls with equally seeded generators draw the same
    uniform numbers whatever ``weight_scale`` is.
    """
    for layer, bound in zip(layers, siren_bounds(layers, omega_0, weight_scale)):
        layer.weight.uniform_(-bound, bound, generator=generator)
        if layer.bias is not None:
            bias_bound = 1.0 / math.sqrt(layer.in_features)
            layer.bias.uniform_(-bias_bound, bias_bound, generator=generator)


def field_layers(field: Field, init_name: str) -> List[nn.Linear]:
    """``field.layers()``, or a one-line NfplugError naming the init and the field when it has none."""
    field_name = type(field).__name__
    try:
        layers = list(field.layers())
    except NotImplementedError:
        raise NfplugError(
            f"--init {init_name}: field {field_name} does not expose its layers (layers()), "
            f"so a layer-wise init cannot act on it; choose a field that does (e.g. siren, mlp)"
        ) from None
    if not layers or not all(isinstance(layer, nn.Linear) for layer in layers):
        raise NfplugError(f"--init {init_name}: field {field_name}.layers() must return nn.Linear layers, got {layers!r}")
    return layers


def resolve_omega_0(omega_0: Optional[float], field: Field, init_name: str) -> float:
    """The init's ``omega_0``: its own option (validated with the options), else the field's (a
    siren field), else SIREN's 30; the field's is checked here, a third-party field may hold anything."""
    value = omega_0 if omega_0 is not None else float(getattr(field.config, "omega_0", 30.0))
    if not value > 0:
        raise NfplugError(f"--init.omega-0: must be > 0, got {value} (init {init_name})")
    return value


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
