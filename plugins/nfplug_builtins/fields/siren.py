"""SIREN: an MLP with sine activations (Sitzmann et al. 2020, "Implicit Neural Representations
with Periodic Activation Functions", eq. 1 and sec. 3.2).

``h_0 = sin(first_omega_0 * (W_0 x + b_0))``, ``h_l = sin(omega_0 * (W_l h_{l-1} + b_l))`` for
``hidden_layers`` hidden layers, then a linear output layer. Built with SIREN's own
initialization (:func:`nfplug_builtins.inits.siren.siren_uniform_`), so ``--init default``
is plain SIREN.

Image task: ``coords [N, 2]`` in ``[-1, 1]`` -> colour ``[N, C]``, the raw linear output (no
sigmoid, as in the SIREN and weight-scaling papers; renders are clamped to [0, 1]).
Scene task: positions normalised to ``[-1, 1]^3`` by the aabb -> 4 outputs, a raw density
(``softplus(raw - 1)``, 0 outside the aabb) and RGB (sigmoid). The colour does not depend
on the view direction, which keeps the layers one chain for layer-wise inits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nfplug.api import API_VERSION, FieldContext, ImageField, SceneField, require_range
from nfplug.nn import siren_uniform_


class SirenField(SceneField, ImageField):
    """Sine-activated coordinate MLP for images and (view-independent) scenes."""

    default_lr = 1e-4  # Sitzmann et al. 2020 and the weight-scaling paper train SIREN at 1e-4

    @dataclass(frozen=True)
    class Config:
        hidden_features: int = 256
        """Width of every hidden layer."""
        hidden_layers: int = 3
        """Hidden layers between the first (input) and the last (linear output) layer."""
        omega_0: float = 30.0
        """Frequency factor of the hidden layers' sines."""
        first_omega_0: float = 30.0
        """Frequency factor of the first layer's sine."""

        def validate(self) -> None:
            require_range(self.hidden_features, "--field.hidden-features", 1)
            require_range(self.hidden_layers, "--field.hidden-layers", 0)
            require_range(self.omega_0, "--field.omega-0", 0, low_open=True)
            require_range(self.first_omega_0, "--field.first-omega-0", 0, low_open=True)

    description = "MLP with sine activations (SIREN, Sitzmann et al. 2020)"
    api_version = API_VERSION
    tasks = ("scene", "image")

    def __init__(self, config: "SirenField.Config", context: FieldContext) -> None:
        super().__init__(config, context)
        c = config
        dim = 3 if context.task == "scene" else 2
        out_dim = 4 if context.task == "scene" else context.out_channels
        widths = [dim] + [c.hidden_features] * (c.hidden_layers + 1) + [out_dim]
        self.net = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        siren_uniform_(self.layers(), c.omega_0)

    def layers(self) -> List[nn.Linear]:
        """First layer, ``hidden_layers`` hidden layers, linear output layer."""
        return list(self.net)

    def _raw(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """Positions ``[N, D]`` -> ``(raw output [N, out], inside [N] bool)``."""
        u, inside = self.unit_coords(x)
        h = torch.sin(self.config.first_omega_0 * self.net[0](2 * u - 1))
        for layer in self.net[1:-1]:
            h = torch.sin(self.config.omega_0 * layer(h))
        return self.net[-1](h), inside

    @staticmethod
    def _sigma(raw: Tensor, inside: Tensor) -> Tensor:
        # softplus(raw - 1) as in the mlp field: no dead units, starts nearly empty.
        return F.softplus(raw[:, 0] - 1.0) * inside.to(raw.dtype)

    def density(self, x: Tensor) -> Tensor:
        """``x [N, 3]`` world positions -> ``sigma [N]`` (0 outside the aabb)."""
        return self._sigma(*self._raw(x))

    def forward(self, x: Tensor, d: Union[Tensor, None] = None) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        """Scene: ``(x [N, 3], d [N, 3]) -> (rgb [N, 3], sigma [N])`` (``d`` unused); image: ``coords [N, 2] -> rgb [N, C]``."""
        raw, inside = self._raw(x)
        if self.context.task == "image":
            return raw
        return torch.sigmoid(raw[:, 1:]), self._sigma(raw, inside)
