"""Orthogonal weight matrices (Saxe, McClelland, Ganguli, ICLR 2014) for every layer of a field
that exposes its layers (``nfplug.api.LayerAccess``), as a complete third-party nfplug init."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nfplug.api import Field, Init, LayerAccess, require_range
from nfplug.errors import NfplugError


@dataclass(frozen=True)
class OrthogonalConfig:
    gain: float = 1.4142135623730951
    """Scale of the orthogonal matrices (sqrt(2) suits ReLU layers)."""

    def validate(self) -> None:
        require_range(self.gain, "--init.gain", 0.0, 100.0, low_open=True)


class OrthogonalInit(Init):
    """Each layer's weight an orthogonal matrix times ``gain``, its bias zero."""

    Config = OrthogonalConfig
    description = "orthogonal weights times a gain, zero biases (Saxe et al. 2014)"
    api_version = 2

    def apply(self, field: Field, generator: torch.Generator) -> None:
        if not isinstance(field, LayerAccess):
            raise NfplugError(f"--init: orthogonal needs a field that exposes its layers; {type(field).__name__} does not")
        layers = field.layers()
        with torch.no_grad():
            for layer in layers:
                torch.nn.init.orthogonal_(layer.weight, gain=self.config.gain, generator=generator)
                if layer.bias is not None:
                    layer.bias.zero_()
