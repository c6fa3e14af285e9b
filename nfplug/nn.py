"""Building blocks for plugins: the helpers the built-in plugins share, public so that any
plugin can use them (a plugin imports from ``nfplug``, never from another plugin).

- :func:`trunc_exp`: ``exp`` with a clamped gradient, for densities (torch-ngp, nerfacc).
- :func:`siren_uniform_`, :func:`siren_bounds`: SIREN's uniform initialization of a chain of
  linear layers (Sitzmann et al. 2020), with the weight-scaling factor of Yeom et al. (ICLR 2025).
- :func:`field_layers`, :func:`resolve_omega_0`: what a layer-wise init needs from a field, with
  one-line errors when the field does not offer it.

Encodings live in :mod:`nfplug.encoding` (hash grid, frequency and spherical-harmonics encodings,
per-image appearance embeddings).
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence

import torch
from torch import Tensor, nn

from nfplug.api import Field, field_layers_or_none
from nfplug.errors import NfplugError


class _TruncExp(torch.autograd.Function):
    """``exp`` whose gradient is clamped at ``exp(15)`` (torch-ngp / nerfacc's trunc_exp)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * torch.exp(x.clamp(max=15.0))


def trunc_exp(x: Tensor) -> Tensor:
    """``exp(x)`` with a gradient that cannot overflow for large ``x``."""
    return _TruncExp.apply(x)


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
    layers = field_layers_or_none(field)
    if layers is None:
        raise NfplugError(
            f"--init {init_name}: field {field_name} does not expose its layers (layers()), "
            f"so a layer-wise init cannot act on it; choose a field that does (e.g. siren, mlp)"
        )
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
