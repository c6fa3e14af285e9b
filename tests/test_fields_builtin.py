"""The built-in ``ngp`` and ``mlp`` fields on both tasks: contract, gradients, a tiny overfit."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import tyro

from nfplug.api import Field, FieldContext
from nfplug_builtins.fields.mlp import MLPField
from nfplug_builtins.fields.ngp import NGPField

SCENE = FieldContext("scene", (-1.0, -2.0, -1.5, 1.0, 2.0, 1.5), 3)

# Small settings keep the suite fast; defaults are exercised by the CLI-parsing test.
SMALL = {
    "ngp": lambda: NGPField.Config(n_levels=6, log2_hashmap_size=12, max_resolution=128, image_max_resolution=32),
    "mlp": lambda: MLPField.Config(width=32, depth=4, skip=2),
}
CLASSES = {"ngp": NGPField, "mlp": MLPField}


def build(name: str, context: FieldContext) -> Field:
    torch.manual_seed(0)
    return CLASSES[name](SMALL[name](), context)


def scene_inputs(n: int = 512) -> tuple:
    torch.manual_seed(1)
    lo, hi = torch.tensor(SCENE.aabb[:3]), torch.tensor(SCENE.aabb[3:])
    x = lo + (hi - lo) * torch.rand(n, 3)
    d = torch.nn.functional.normalize(torch.randn(n, 3), dim=-1)
    return x, d


def assert_all_params_get_finite_grads(field: Field) -> None:
    for name, p in field.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("name", ["ngp", "mlp"])
def test_scene_contract_and_gradients(name: str) -> None:
    field = build(name, SCENE)
    x, d = scene_inputs()
    x.requires_grad_(True)
    rgb, sigma = field(x, d)
    assert rgb.shape == (512, 3) and sigma.shape == (512,)
    assert ((rgb >= 0) & (rgb <= 1)).all() and (sigma >= 0).all()
    torch.testing.assert_close(field.density(x), sigma)
    torch.manual_seed(2)
    (rgb * torch.randn_like(rgb)).sum().backward(retain_graph=True)
    (sigma * torch.randn_like(sigma)).sum().backward()
    assert_all_params_get_finite_grads(field)
    # Samplers differentiate a ray's loss with respect to its pixel, through x.
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["ngp", "mlp"])
@pytest.mark.parametrize("channels", [1, 3])
def test_image_contract_and_gradients(name: str, channels: int) -> None:
    field = build(name, FieldContext("image", (-1.0, -1.0, 1.0, 1.0), channels))
    torch.manual_seed(1)
    coords = (torch.rand(300, 2) * 2 - 1).requires_grad_(True)
    rgb = field(coords)
    assert rgb.shape == (300, channels)
    assert ((rgb >= 0) & (rgb <= 1)).all()
    (rgb * torch.randn_like(rgb)).sum().backward()
    assert_all_params_get_finite_grads(field)
    assert torch.isfinite(coords.grad).all() and coords.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["ngp", "mlp"])
def test_density_is_zero_outside_the_aabb(name: str) -> None:
    field = build(name, SCENE)
    outside = torch.tensor([[1.01, 0.0, 0.0], [0.0, -2.5, 0.0], [0.0, 0.0, 9.0], [-3.0, 5.0, -4.0]])
    inside = torch.tensor([[0.0, 0.0, 0.0], [0.9, 1.9, 1.4]])
    assert (field.density(outside) == 0).all()
    assert (field.density(inside) > 0).all()


def test_mlp_layers_in_order() -> None:
    field = build("mlp", SCENE)
    layers = field.layers()
    assert all(isinstance(layer, torch.nn.Linear) for layer in layers)
    assert layers[0].in_features == 3 * (1 + 2 * 10)
    assert layers[2].in_features == 32 + 63  # skip connection at layer 2
    assert layers[-1].out_features == 3
    image = build("mlp", FieldContext("image", (-1.0, -1.0, 1.0, 1.0), 1))
    assert image.layers()[-1].out_features == 1 and image.layers()[0].in_features == 2 * (1 + 2 * 8)


def test_configs_have_documented_defaults_and_parse_from_argv() -> None:
    for cls in CLASSES.values():
        assert cls.description and set(cls.tasks) == {"scene", "image"}
        for f in dataclasses.fields(cls.Config):
            assert f.default is not dataclasses.MISSING, f.name
    config = tyro.cli(NGPField.Config, args=["--log2-hashmap-size", "15", "--density-activation", "softplus"])
    assert config.log2_hashmap_size == 15 and config.density_activation == "softplus"
    assert NGPField.Config().n_levels == 16 and NGPField.Config().max_resolution == 2048


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return -10 * math.log10(float(((a - b) ** 2).mean()))


@pytest.mark.parametrize("name,floor", [("ngp", 40.0), ("mlp", 28.0)])
def test_tiny_image_overfit(name: str, floor: float) -> None:
    """A 32x32 disc on a colour ramp: a few hundred Adam steps reach a PSNR floor."""
    torch.manual_seed(0)
    n = 32
    centres = -1 + (2 * torch.arange(n) + 1) / n
    yy, xx = torch.meshgrid(centres, centres, indexing="ij")
    coords = torch.stack([xx, yy], -1).reshape(-1, 2)
    disc = (xx**2 + yy**2 < 0.5).float()
    target = torch.stack([disc, (xx + 1) / 2, (yy + 1) / 2 * (1 - disc)], -1).reshape(-1, 3)
    field = build(name, FieldContext("image", (-1.0, -1.0, 1.0, 1.0), 3))
    opt = torch.optim.Adam(field.parameters(), lr=1e-2)
    for _ in range(300):
        opt.zero_grad()
        ((field(coords) - target) ** 2).mean().backward()
        opt.step()
    with torch.no_grad():
        assert _psnr(field(coords), target) > floor
