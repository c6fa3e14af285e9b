"""NeRF's MLP with positional encoding (Mildenhall et al. 2020, fig. 7).

Scene task: ``gamma(x)`` -> ``depth`` ReLU layers of ``width`` (``gamma(x)`` concatenated
again before layer ``skip``) -> sigma head and a feature layer; the feature plus
``gamma(d)`` -> one ReLU layer of ``width / 2`` -> RGB (sigmoid). Image task: the same
trunk on ``gamma(coords)`` -> ``C`` channels (sigmoid).

The defaults are smaller than the paper's (width 256, depth 8, skip 4) so that it
trains on a CPU: 128 x 4 costs ~8x fewer multiply-adds per sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nfplug.api import API_VERSION, FieldContext, ImageField, SceneField, require_range
from nfplug.encoding.appearance import AppearanceEmbedding
from nfplug.encoding.frequency import PositionalEncoding

MAX_FREQUENCIES = 32  # 2^31 pi: finer than float32 coordinates resolve


class MLPField(SceneField, ImageField):
    """Coordinate MLP with Fourier features for scenes and images."""

    @dataclass(frozen=True)
    class Config:
        width: int = 128
        """Hidden width (NeRF: 256)."""
        depth: int = 4
        """Number of hidden layers of the trunk (NeRF: 8)."""
        skip: int = 2
        """Trunk layer whose input is concatenated with the encoded position again
        (NeRF: 4); -1 or >= depth for none."""
        n_frequencies_pos: int = 10
        """Positional-encoding frequencies for scene positions (NeRF: 10)."""
        n_frequencies_dir: int = 4
        """Positional-encoding frequencies for view directions (NeRF: 4)."""
        image_n_frequencies: int = 8
        """Frequencies for image coordinates: 2^7 pi resolves ~250-pixel-wide images."""
        appearance_dim: int = 0
        """Scene task: size of a per-image appearance embedding fed to the view layer (exposure and
        white balance that differ between photos); 0: none. Held-out views use the mean embedding."""

        def validate(self) -> None:
            require_range(self.appearance_dim, "--field.appearance-dim", 0, 1024)
            require_range(self.width, "--field.width", 2)  # the view layer is width / 2 wide
            require_range(self.depth, "--field.depth", 1)
            require_range(self.skip, "--field.skip", -1)
            require_range(self.n_frequencies_pos, "--field.n-frequencies-pos", 0, MAX_FREQUENCIES)
            require_range(self.n_frequencies_dir, "--field.n-frequencies-dir", 0, MAX_FREQUENCIES)
            require_range(self.image_n_frequencies, "--field.image-n-frequencies", 0, MAX_FREQUENCIES)

    description = "NeRF MLP with positional encoding (Mildenhall et al. 2020)"
    api_version = API_VERSION
    tasks = ("scene", "image")

    def __init__(self, config: "MLPField.Config", context: FieldContext) -> None:
        super().__init__(config, context)
        c = config
        dim = 3 if context.task == "scene" else 2
        n_freq = c.n_frequencies_pos if context.task == "scene" else c.image_n_frequencies
        self.pos_enc = PositionalEncoding(dim, n_freq)
        trunk = []
        in_dim = self.pos_enc.out_dim
        for i in range(c.depth):
            extra = self.pos_enc.out_dim if (i == c.skip and i > 0) else 0
            trunk.append(nn.Linear(in_dim + extra, c.width))
            in_dim = c.width
        self.trunk = nn.ModuleList(trunk)
        if context.task == "scene":
            self.dir_enc = PositionalEncoding(3, c.n_frequencies_dir)
            self.sigma_head = nn.Linear(c.width, 1)
            self.feature = nn.Linear(c.width, c.width)
            self.appearance = AppearanceEmbedding(context.n_images, c.appearance_dim) if c.appearance_dim else None
            self.view = nn.Linear(c.width + self.dir_enc.out_dim + c.appearance_dim, c.width // 2)
            self.rgb_head = nn.Linear(c.width // 2, 3)
        else:
            self.rgb_head = nn.Linear(c.width, context.out_channels)

    def layers(self) -> List[nn.Linear]:
        """Trunk, then (scene) feature, sigma, view and RGB layers; (image) the RGB layer."""
        if self.context.task == "scene":
            return [*self.trunk, self.feature, self.sigma_head, self.view, self.rgb_head]
        return [*self.trunk, self.rgb_head]

    def _trunk(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """World positions ``[N, D]`` -> ``(h [N, width], inside [N] bool)``."""
        u, inside = self.unit_coords(x)
        enc = self.pos_enc(2 * u - 1)
        h = enc
        for i, layer in enumerate(self.trunk):
            if i == self.config.skip and i > 0:
                h = torch.cat([h, enc], -1)
            h = F.relu(layer(h))
        return h, inside

    def _sigma(self, h: Tensor, inside: Tensor) -> Tensor:
        # softplus(raw - 1) instead of NeRF's ReLU: no dead units, starts nearly empty.
        return F.softplus(self.sigma_head(h)[:, 0] - 1.0) * inside.to(h.dtype)

    def density(self, x: Tensor) -> Tensor:
        """``x [N, 3]`` world positions -> ``sigma [N]`` (0 outside the aabb)."""
        return self._sigma(*self._trunk(x))

    def forward(
        self, x: Tensor, d: Union[Tensor, None] = None, image_index: Union[Tensor, None] = None
    ) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        """Scene: ``(x [N, 3], d [N, 3]) -> (rgb [N, 3], sigma [N])``; image: ``coords [N, 2] -> rgb [N, C]``.
        ``image_index [N]``: each sample's training image, for the appearance embedding (None: the mean)."""
        h, inside = self._trunk(x)
        if self.context.task == "image":
            return torch.sigmoid(self.rgb_head(h))
        if d is None:
            raise ValueError("the scene task needs view directions d [N, 3]")
        sigma = self._sigma(h, inside)
        inputs = [self.feature(h), self.dir_enc(d)]
        if self.uses_appearance:
            inputs.append(self.appearance(image_index, x.shape[0]))
        v = F.relu(self.view(torch.cat(inputs, -1)))
        return torch.sigmoid(self.rgb_head(v)), sigma
