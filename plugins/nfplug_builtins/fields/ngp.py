"""Instant-NGP field: multiresolution hash grid + small MLPs (Müller et al. 2022).

The layout follows nerfacc's ``examples/instant-ngp`` radiance field: a density MLP
(one hidden layer) maps the hash features to 1 raw density + 15 geometry features; a
colour MLP (two hidden layers) maps those features plus the degree-4 spherical-harmonics
encoding of the view direction to RGB through a sigmoid. Layers have no biases, as in
tiny-cuda-nn's fully fused MLPs. On the CPU the hash grid runs on a C++ kernel
(:mod:`nfplug.encoding.hashgrid`) and both MLPs on another, fused over blocks of samples
(:mod:`nfplug.encoding.fused_ngp`); the PyTorch modules are the reference they are tested
against (``field.fused = False``) and the path on other devices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nfplug.api import API_VERSION, FieldContext, ImageField, SceneField, require_choice, require_range
from nfplug.encoding.appearance import AppearanceEmbedding
from nfplug.encoding import fused_ngp
from nfplug.encoding.frequency import spherical_harmonics
from nfplug.encoding.hashgrid import MAX_LEVELS, MAX_RESOLUTION, HashGrid, validate_hash_grid
from nfplug.nn import trunc_exp
from nfplug.errors import NfplugError

DEFAULT_LEVELS = 16
DEFAULT_MAX_RESOLUTION = 2048
LEVEL_GROWTH = (2048 / 16) ** (1 / 15)
"""Resolution growth from one level to the next in instant-ngp's default (16 levels, 16 to 2048 cells)."""


def levels_for(max_resolution: int, base_resolution: int) -> int:
    """Enough levels to grow from ``base_resolution`` to ``max_resolution`` by :data:`LEVEL_GROWTH`
    a level (16 for 16 to 2048)."""
    return 1 + max(0, round(math.log(max_resolution / base_resolution) / math.log(LEVEL_GROWTH)))


def scene_grid_size(c: "NGPField.Config", pixel_size: Optional[float]) -> Tuple[int, int]:
    """``(n_levels, max_resolution)`` of a scene's hash grid. Unset options follow the training
    images: the finest level gets about two cells a pixel (``2 / pixel_size``, the power of two
    nearest in log scale, at most 2048 and at least the base resolution), the levels keep
    instant-ngp's growth. Without a pixel size (captures): instant-ngp's 16 levels up to 2048."""
    max_res = c.max_resolution
    if max_res is None:
        max_res = DEFAULT_MAX_RESOLUTION
        if pixel_size is not None:
            max_res = int(min(DEFAULT_MAX_RESOLUTION, max(c.base_resolution, 2 ** round(math.log2(2 / pixel_size)))))
    n_levels = c.n_levels if c.n_levels is not None else levels_for(max_res, c.base_resolution)
    return n_levels, max_res


def _mlp(in_dim: int, hidden_dim: int, n_hidden: int, out_dim: int) -> nn.Sequential:
    layers: list = []
    dim = in_dim
    for _ in range(n_hidden):
        layers += [nn.Linear(dim, hidden_dim, bias=False), nn.ReLU(inplace=True)]
        dim = hidden_dim
    layers.append(nn.Linear(dim, out_dim, bias=False))
    return nn.Sequential(*layers)


class NGPField(SceneField, ImageField):
    """Hash-grid field for scenes (3D grid) and images (2D grid)."""

    @dataclass(frozen=True)
    class Config:
        n_levels: Optional[int] = None
        """Number of grid levels L. Default: 16 for images; for scenes, enough levels to grow from
        the base to the max resolution by instant-ngp's factor per level (16 for 16 to 2048)."""
        n_features_per_level: int = 2
        """Features per level F (the kernel supports 1, 2, 4, 8)."""
        log2_hashmap_size: int = 17
        """log2 of the table size T per level. 17 (not instant-ngp's 19) on the CPU: the
        tables fit in the L3 cache and the dense gradient and Adam step touch 4x fewer
        parameters."""
        base_resolution: int = 16
        """Coarsest grid resolution N_min (cells per side)."""
        max_resolution: Optional[int] = None
        """Finest grid resolution N_max for scenes (cells per side of the field's box). Default: about
        two cells per training pixel at the scene's centre (a power of two, at most 2048: 256 for lego
        at 100x100, 512 at 200x200, 1024 at 400x400); 2048 for captures."""
        image_max_resolution: int = 128
        """Finest grid resolution N_max for the image task; about the image's larger side
        (128 suits the 100x100 lego images; finer levels only memorise pixels)."""
        hidden_dim: int = 64
        """Width of the hidden layers of both MLPs."""
        geo_feat_dim: int = 15
        """Geometry features passed from the density MLP to the colour MLP."""
        density_activation: Literal["trunc_exp", "softplus"] = "trunc_exp"
        """Raw density -> sigma: ``trunc_exp(raw - 1)`` as in nerfacc's instant-ngp
        example, or ``softplus(raw - 1)``."""
        appearance_dim: int = 0
        """Scene task: size of a per-image appearance embedding fed to the colour MLP (exposure and
        white balance that differ between photos); 0: none. Held-out views use the mean embedding."""

        def validate(self) -> None:
            require_range(self.appearance_dim, "--field.appearance-dim", 0, 1024)
            if self.max_resolution is not None:
                require_range(self.max_resolution, "--field.max-resolution", 1, MAX_RESOLUTION)
            require_range(self.image_max_resolution, "--field.image-max-resolution", 1, MAX_RESOLUTION)
            if self.n_levels is not None:
                require_range(self.n_levels, "--field.n-levels", 1, MAX_LEVELS)
            require_range(self.base_resolution, "--field.base-resolution", 1, MAX_RESOLUTION)  # before scene_grid_size's log
            image_levels = self.n_levels or DEFAULT_LEVELS
            # The largest scene grid these options can give (the unset ones at their largest).
            scene_levels, scene_res = scene_grid_size(self, None)
            grids = (("scene", 3, scene_levels, scene_res), ("image", 2, image_levels, self.image_max_resolution))
            validate_hash_grid(self, grids)
            require_range(self.hidden_dim, "--field.hidden-dim", 1)
            require_range(self.geo_feat_dim, "--field.geo-feat-dim", 0)
            require_choice(self.density_activation, "--field.density-activation", ("trunc_exp", "softplus"))

    description = "Instant-NGP: multiresolution hash grid + small MLPs (C++ CPU kernel)"
    api_version = API_VERSION
    tasks = ("scene", "image")

    def __init__(self, config: "NGPField.Config", context: FieldContext) -> None:
        super().__init__(config, context)
        c = config  # validated by Field.__init__ (Config.validate); the rest depends on the task
        dim = 3 if context.task == "scene" else 2
        if context.task == "scene":
            n_levels, max_res = scene_grid_size(c, context.pixel_size)
        else:
            n_levels, max_res = c.n_levels or DEFAULT_LEVELS, c.image_max_resolution
        if not 1 <= c.base_resolution <= max_res:
            raise NfplugError(
                f"--field.base-resolution ({c.base_resolution}) must be between 1 and the max resolution ({max_res})"
            )
        self.grid = HashGrid(dim, n_levels, c.n_features_per_level, c.log2_hashmap_size, c.base_resolution, max_res)
        if context.task == "scene":
            self.density_mlp = _mlp(self.grid.out_dim, c.hidden_dim, 1, 1 + c.geo_feat_dim)
            self.appearance = AppearanceEmbedding(context.n_images, c.appearance_dim) if c.appearance_dim else None
            self.color_mlp = _mlp(c.geo_feat_dim + 16 + c.appearance_dim, c.hidden_dim, 2, 3)
        else:
            self.image_mlp = _mlp(self.grid.out_dim, c.hidden_dim, 2, context.out_channels)
        self.fused = True
        """Scene task on the CPU: run both MLPs in the fused C++ kernel (False: the PyTorch modules)."""

    def extra_repr(self) -> str:
        sized_by_pixels = self.context.task == "scene" and self.context.pixel_size is not None and self.config.max_resolution is None
        why = " (about two cells a training pixel; --field.max-resolution sets it)" if sized_by_pixels else ""
        return f"hash grid {self.grid.extra_repr()}{why}"

    def _mlp_weights(self) -> list:
        return [self.density_mlp[0].weight, self.density_mlp[2].weight, self.color_mlp[0].weight, self.color_mlp[2].weight, self.color_mlp[4].weight]

    def _use_fused(self, x: Tensor) -> bool:
        return self.fused and self.context.task == "scene" and not self.uses_appearance and fused_ngp.supported(x, self._mlp_weights())

    def _normalize(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """World positions -> ``([N, D] in [0, 1] clamped, [N] bool inside the aabb)``."""
        u, inside = self.unit_coords(x)
        return u.clamp(0.0, 1.0), inside

    def _density_and_features(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        u, inside = self._normalize(x)
        h = self.density_mlp(self.grid(u))
        raw = h[:, 0] - 1.0
        if self.config.density_activation == "trunc_exp":
            sigma = trunc_exp(raw)
        else:
            sigma = F.softplus(raw)
        return sigma * inside.to(sigma.dtype), h[:, 1:]

    def density(self, x: Tensor) -> Tensor:
        """``x [N, 3]`` world positions -> ``sigma [N]`` (0 outside the aabb)."""
        return self.density_for_marching(x)[0] if not torch.is_grad_enabled() else self._density_and_features(x)[0]

    def density_for_marching(self, x: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
        """No gradients: ``(sigma, hash features)``, the features reused by ``forward`` for the samples
        the marcher keeps (fused path; ``(sigma, None)`` otherwise)."""
        if not self._use_fused(x) or not self.grid.kernel_runs(x):
            return self._density_and_features(x)[0], None
        u, inside = self._normalize(x)
        features = self.grid(u)
        sigma = fused_ngp.ngp_density(features, self._mlp_weights()[:2], self.config.density_activation)
        return sigma * inside.to(sigma.dtype), features

    def forward(
        self, x: Tensor, d: Union[Tensor, None] = None, image_index: Union[Tensor, None] = None, reuse: Optional[Tensor] = None
    ) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        """Scene: ``(x [N, 3], d [N, 3]) -> (rgb [N, 3], sigma [N])``; image: ``coords [N, 2] -> rgb [N, C]``.
        ``image_index [N]``: each sample's training image, for the appearance embedding (None: the mean).
        ``reuse``: the hash features of ``x`` from :meth:`density_for_marching`."""
        if self.context.task == "image":
            u, _ = self._normalize(x)
            return torch.sigmoid(self.image_mlp(self.grid(u)))
        if d is None:
            raise ValueError("the scene task needs view directions d [N, 3]")
        if self._use_fused(x):
            u, inside = self._normalize(x)
            rgb, sigma = fused_ngp.ngp_mlps(self.grid(u, reuse), spherical_harmonics(d, 4), self._mlp_weights(), self.config.density_activation)
            return rgb, sigma * inside.to(sigma.dtype)
        sigma, geo = self._density_and_features(x)
        inputs = [geo, spherical_harmonics(d, 4)]
        if self.uses_appearance:
            inputs.append(self.appearance(image_index, x.shape[0]))
        rgb = torch.sigmoid(self.color_mlp(torch.cat(inputs, -1)))
        return rgb, sigma
