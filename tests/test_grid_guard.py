"""The occupancy grid is re-opened, with a warning, when it empties out."""

from __future__ import annotations

import torch

from nfplug.api import Field, FieldContext
from nfplug.config import RenderConfig
from nfplug.rendering.scene_renderer import SceneRenderer


class ZeroDensity(Field):
    def density(self, x):
        return torch.zeros(x.shape[0])


def test_empty_grid_is_detected_and_reopened():
    torch.manual_seed(0)
    renderer = SceneRenderer((-1.0,) * 3 + (1.0,) * 3, 0.5, 5.0, RenderConfig(grid_resolution=8, grid_update_every=1))
    field = ZeroDensity(None, FieldContext("scene", (-1.0,) * 3 + (1.0,) * 3))
    assert renderer.update_grid(0, field) is True  # zero density everywhere: grid emptied
    assert renderer.estimator.binaries.all() and renderer.grid_recoveries == 1
    rays_o = torch.tensor([[0.0, 0.0, -3.0]])
    rays_d = torch.tensor([[0.0, 0.0, 1.0]])
    class Dense(ZeroDensity):
        def forward(self, x, d):
            return torch.full((x.shape[0], 3), 0.5), torch.full((x.shape[0],), 10.0)
    out = renderer.render(Dense(None, field.context), rays_o, rays_d, torch.ones(3))
    assert out.n_samples > 0  # re-opened grid gives samples again, so gradients can flow
