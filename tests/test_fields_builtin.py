"""Every installed field plugin, on every task it declares: the contract (shapes, ranges,
gradients), the aabb, documented config defaults, and a tiny image overfit; plus the ``mlp``
field's layer order. The built-ins ``ngp`` and ``mlp`` keep their PSNR floors."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, List, Tuple

import pytest
import torch
import tyro

from nfplug import registry
from nfplug.api import TASKS, Field, FieldContext, field_n_parts, field_parameter_parts
from nfplug_builtins.fields.ngp import NGPField

# Every installed field, by name (an installed plugin that fails to import fails collection here).
CLASSES: Dict[str, type] = {name: entry.load() for name, entry in registry.discover("fields").items()}


def fields_for(task: str) -> List[str]:
    """The installed fields that declare ``task`` in their ``tasks``."""
    return [name for name, cls in CLASSES.items() if task in cls.tasks]


SCENE_FIELDS, IMAGE_FIELDS = fields_for("scene"), fields_for("image")

SCENE = FieldContext("scene", (-1.0, -2.0, -1.5, 1.0, 2.0, 1.5), 3)

# Small settings keep the suite fast (defaults are exercised by the CLI-parsing test); a field
# not listed here is built with its own defaults.
SMALL: Dict[str, Dict[str, Any]] = {
    "ngp": dict(n_levels=6, log2_hashmap_size=12, max_resolution=128, image_max_resolution=32),
    "mlp": dict(width=32, depth=4, skip=2),
    "siren": dict(hidden_features=64, hidden_layers=2),
    "asmr": dict(hidden_features=128),
    "streamable": dict(widths=(8, 16, 24), hidden_layers=2, n_levels=6, log2_hashmap_size=12, max_resolution=128),
}
# Fields whose image output is a sigmoid in [0, 1]; the others (sine networks) return the raw
# linear output, which renders clamp.
IMAGE_OUTPUT_IN_0_1 = {"ngp", "mlp"}
# Fields that snap image coordinates to the nearest pixel (ASMR's mixed-radix digits are
# discrete): no gradient with respect to the coordinates.
SNAPS_TO_PIXELS = {"asmr"}
# PSNR floors of the tiny overfit below, at the small settings (measured: ngp 55.2, mlp 38.0 dB).
OVERFIT_FLOOR_DB = {"ngp": 40.0, "mlp": 28.0}
# Any other field must beat the best constant colour (the target's mean, 8.24 dB) by this much
# in the same 300 steps at its own default learning rate (measured at the small settings: siren
# 28.46, asmr 34.26, streamable 23.33 dB; a field that ignores its input learns the mean colour).
OVERFIT_MIN_OVER_CONSTANT_DB = 3.0


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread, as the CLI tests' ``--threads 1``: two threads on a shared 2-core machine
    run these small matrices several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def image_context(channels: int, resolution: Tuple[int, int]) -> FieldContext:
    """The engine's image context: ``[-1, 1]^2`` and the image size (fields laid out on the pixel grid need it)."""
    return FieldContext("image", (-1.0, -1.0, 1.0, 1.0), channels, resolution=resolution)


def build(name: str, context: FieldContext) -> Field:
    torch.manual_seed(0)
    cls = CLASSES[name]
    return cls(cls.Config(**SMALL.get(name, {})), context)


def scene_inputs(n: int = 512) -> tuple:
    torch.manual_seed(1)
    lo, hi = torch.tensor(SCENE.aabb[:3]), torch.tensor(SCENE.aabb[3:])
    x = lo + (hi - lo) * torch.rand(n, 3)
    d = torch.nn.functional.normalize(torch.randn(n, 3), dim=-1)
    return x, d


def assert_gradients_flow(field: Field) -> None:
    """After a backward pass: every parameter has a finite gradient; every parameter of part 1
    (all of an ordinary, one-part field) a nonzero one; and every later part of a streamable
    field at least one nonzero (new parts start by adding nothing, so only their output layer
    sees a gradient at first)."""
    parts = field_parameter_parts(field)
    moving = set()
    for name, p in field.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        nonzero = bool(p.grad.abs().sum() > 0)
        assert nonzero or parts[name] > 1, name
        if nonzero:
            moving.add(parts[name])
    assert moving == set(range(1, field_n_parts(field) + 1)), moving


@pytest.mark.parametrize("name", SCENE_FIELDS)
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
    assert_gradients_flow(field)
    # Samplers differentiate a ray's loss with respect to its pixel, through x.
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("name", IMAGE_FIELDS)
@pytest.mark.parametrize("channels", [1, 3])
def test_image_contract_and_gradients(name: str, channels: int) -> None:
    field = build(name, image_context(channels, (24, 32)))
    torch.manual_seed(1)
    coords = (torch.rand(300, 2) * 2 - 1).requires_grad_(True)
    rgb = field(coords)
    assert rgb.shape == (300, channels) and torch.isfinite(rgb).all()
    if name in IMAGE_OUTPUT_IN_0_1:
        assert ((rgb >= 0) & (rgb <= 1)).all()
    (rgb * torch.randn_like(rgb)).sum().backward()
    assert_gradients_flow(field)
    if name in SNAPS_TO_PIXELS:
        assert coords.grad is None or torch.isfinite(coords.grad).all()
    else:  # samplers get d loss / d pixel through the coordinates
        assert coords.grad is not None and torch.isfinite(coords.grad).all() and coords.grad.abs().sum() > 0


@pytest.mark.parametrize("name", SCENE_FIELDS)
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
    image = build("mlp", image_context(1, (24, 32)))
    assert image.layers()[-1].out_features == 1 and image.layers()[0].in_features == 2 * (1 + 2 * 8)


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_configs_have_documented_defaults(name: str) -> None:
    cls = CLASSES[name]
    assert cls.description and cls.tasks and set(cls.tasks) <= set(TASKS), cls.tasks
    for f in dataclasses.fields(cls.Config):
        assert f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING, f.name
    assert tyro.cli(cls.Config, args=[]) == cls.Config()  # parses from an empty command line


def test_builtin_fields_and_ngp_options_parse_from_argv() -> None:
    assert {"ngp", "mlp", "siren", "asmr", "streamable"} <= set(CLASSES)
    assert set(CLASSES["ngp"].tasks) == set(CLASSES["mlp"].tasks) == {"scene", "image"}
    assert CLASSES["asmr"].tasks == ("image",)
    config = tyro.cli(NGPField.Config, args=["--log2-hashmap-size", "15", "--density-activation", "softplus"])
    assert config.log2_hashmap_size == 15 and config.density_activation == "softplus"
    config = tyro.cli(NGPField.Config, args=["--n-levels", "12", "--max-resolution", "512"])
    assert config.n_levels == 12 and config.max_resolution == 512
    assert NGPField.Config().n_levels is None and NGPField.Config().max_resolution is None  # sized by the images


def _grid(pixel_size: Any, **options: Any) -> Tuple[int, int]:
    field = NGPField(NGPField.Config(log2_hashmap_size=10, **options), FieldContext("scene", SCENE.aabb, 3, pixel_size=pixel_size))
    return field.grid.layout.n_levels, field.grid.layout.resolutions[-1]


def test_ngp_scene_grid_follows_the_training_pixels() -> None:
    """Hand cases: 2 / pixel_size cells, the power of two nearest in log2, at most 2048; the levels
    grow by (2048 / 16)^(1/15) each, so ``1 + round(log(max / 16) / log(growth))``."""
    assert _grid(None) == (16, 2048)  # captures and old runs: instant-ngp's grid
    assert _grid(0.01) == (10, 256)  # 200 cells: 2^7.64 -> 256; log(16) / 0.3234 = 8.57 -> 10 levels
    assert _grid(0.0048) == (12, 512)  # lego at 200x200 (4.03 / 277.8 / 3): 417 cells -> 512
    assert _grid(0.0026) == (14, 1024)  # 769 cells: 2^9.59 -> 1024; log(64) / 0.3234 = 12.86 -> 14
    assert _grid(1e-5) == (16, 2048)  # finer images: never above instant-ngp's 2048
    assert _grid(1.0) == (1, 16)  # a pixel as wide as the box: one level at the base resolution
    assert _grid(0.01, max_resolution=1024) == (14, 1024)  # an explicit max keeps instant-ngp's growth
    assert _grid(0.01, n_levels=16) == (16, 256)  # explicit levels over the images' resolution
    assert _grid(None, n_levels=8, max_resolution=64) == (8, 64)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return -10 * math.log10(float(((a - b) ** 2).mean()))


@pytest.mark.parametrize("name", IMAGE_FIELDS)
def test_tiny_image_overfit(name: str) -> None:
    """A 32x32 disc on a colour ramp, 300 full-batch Adam steps at the field's default learning
    rate: ``ngp`` and ``mlp`` reach a PSNR floor, any other field must clearly beat a constant colour."""
    torch.manual_seed(0)
    n = 32
    centres = -1 + (2 * torch.arange(n) + 1) / n
    yy, xx = torch.meshgrid(centres, centres, indexing="ij")
    coords = torch.stack([xx, yy], -1).reshape(-1, 2)
    disc = (xx**2 + yy**2 < 0.5).float()
    target = torch.stack([disc, (xx + 1) / 2, (yy + 1) / 2 * (1 - disc)], -1).reshape(-1, 3)
    field = build(name, image_context(3, (n, n)))
    opt = torch.optim.Adam(field.parameters(), lr=field.default_lr)
    for _ in range(300):
        opt.zero_grad()
        ((field(coords) - target) ** 2).mean().backward()
        opt.step()
    with torch.no_grad():
        out = field(coords)
    assert out.shape == (n * n, 3) and torch.isfinite(out).all()
    after = _psnr(out, target)
    if name in OVERFIT_FLOOR_DB:
        assert after > OVERFIT_FLOOR_DB[name], after
    else:
        constant = _psnr(target.mean(0).expand_as(target), target)
        assert after > constant + OVERFIT_MIN_OVER_CONSTANT_DB, (after, constant)
