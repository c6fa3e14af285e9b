"""The ``siren`` field: shapes, gradients, its own init; weight scaling fits a photo faster; CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from conftest import SHARED_DATA, smooth_image, write_png
from test_fields_builtin import assert_gradients_flow
from nfplug.api import FieldContext
from nfplug.cli import main
from nfplug.errors import NfplugError
from nfplug.training.image_task import load_image, pixel_to_coords
from nfplug_builtins.fields.siren import SirenField
from nfplug_builtins.inits.siren import SirenInit
from nfplug_builtins.inits.weight_scaling import WeightScalingInit

KODAK = SHARED_DATA / "kodak" / "kodim05.png"
SCENE = FieldContext("scene", (-1.0, -2.0, -1.5, 1.0, 2.0, 1.5), 3)
SMALL = SirenField.Config(hidden_features=32, hidden_layers=2)


def build(context: FieldContext, config: SirenField.Config = SMALL) -> SirenField:
    torch.manual_seed(0)
    return SirenField(config, context)


@pytest.mark.parametrize("channels", [1, 3])
def test_image_shapes_layers_and_gradients(channels: int) -> None:
    field = build(FieldContext("image", (-1.0, -1.0, 1.0, 1.0), channels))
    layers = field.layers()
    assert [(l.in_features, l.out_features) for l in layers] == [(2, 32), (32, 32), (32, 32), (32, channels)]
    torch.manual_seed(1)
    coords = (torch.rand(256, 2) * 2 - 1).requires_grad_(True)
    out = field(coords)
    assert out.shape == (256, channels) and torch.isfinite(out).all()
    (out * torch.randn_like(out)).sum().backward()
    assert_gradients_flow(field)
    assert coords.grad is not None and coords.grad.abs().sum() > 0


def test_forward_is_the_sine_mlp_formula() -> None:
    field = build(FieldContext("image", (-1.0, -1.0, 1.0, 1.0), 3), SirenField.Config(8, 1, omega_0=20.0, first_omega_0=5.0))
    x = torch.tensor([[0.25, -0.5]])
    l0, l1, l2 = field.layers()
    expected = l2(torch.sin(20.0 * l1(torch.sin(5.0 * l0(x)))))
    torch.testing.assert_close(field(x), expected)


def test_scene_contract_and_gradients() -> None:
    field = build(SCENE)
    torch.manual_seed(1)
    lo, hi = torch.tensor(SCENE.aabb[:3]), torch.tensor(SCENE.aabb[3:])
    x = (lo + (hi - lo) * torch.rand(512, 3)).requires_grad_(True)
    d = torch.nn.functional.normalize(torch.randn(512, 3), dim=-1)
    rgb, sigma = field(x, d)
    assert rgb.shape == (512, 3) and sigma.shape == (512,)
    assert ((rgb >= 0) & (rgb <= 1)).all() and (sigma >= 0).all()
    torch.testing.assert_close(field.density(x), sigma)
    with torch.no_grad():
        assert float(field.density(torch.tensor([[5.0, 0.0, 0.0]]))[0]) == 0.0  # outside the aabb
    (rgb * torch.randn_like(rgb)).sum().backward(retain_graph=True)
    (sigma * torch.randn_like(sigma)).sum().backward()
    assert_gradients_flow(field)
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_built_with_the_siren_init() -> None:
    field = build(FieldContext("image", (-1.0, -1.0, 1.0, 1.0), 3), SirenField.Config(hidden_features=128, omega_0=30.0))
    layers = field.layers()
    bounds = [1 / 2] + [math.sqrt(6 / 128) / 30] * (len(layers) - 1)
    for layer, bound in zip(layers, bounds):
        w_max = float(layer.weight.detach().abs().max())
        assert 0.97 * bound <= w_max <= bound


@pytest.mark.parametrize(
    "config, option",
    [(SirenField.Config(hidden_features=0), "--field.hidden-features"), (SirenField.Config(omega_0=0.0), "--field.omega-0")],
)
def test_bad_config_is_one_line_error(config: SirenField.Config, option: str) -> None:
    with pytest.raises(NfplugError, match=option.replace(".", r"\.")):
        SirenField(config, SCENE)


def _fit_psnr(image: torch.Tensor, init, steps: int) -> float:
    """Full-batch Adam (lr 1e-4, as in both papers) on every pixel; -> train PSNR after ``steps``."""
    height, width, channels = image.shape
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    coords = pixel_to_coords(torch.stack([cols, rows], -1).reshape(-1, 2).float() + 0.5, width, height)
    target = image.reshape(-1, channels)
    field = build(FieldContext("image", (-1.0, -1.0, 1.0, 1.0), channels), SirenField.Config(hidden_features=128))
    init.apply(field, torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam(field.parameters(), lr=1e-4)
    for _ in range(steps):
        loss = ((field(coords) - target) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return -10 * math.log10(float(((field(coords) - target) ** 2).mean()))


@pytest.mark.skipif(not KODAK.is_file(), reason=f"{KODAK} not found")
def test_weight_scaling_fits_a_photo_faster_than_siren() -> None:
    """The paper's claim in miniature: same seed, same steps, weight scaling is well ahead.

    A real photo on purpose: on smooth synthetic stand-ins (1/f noise, dead leaves) SIREN's
    init was still ahead at 100 steps, the gain needs a detailed image.
    """
    image = load_image(KODAK, downscale=8)  # 96x64
    siren = _fit_psnr(image, SirenInit(SirenInit.Config()), steps=100)
    scaled = _fit_psnr(image, WeightScalingInit(WeightScalingInit.Config(alpha=2.5)), steps=100)
    assert scaled > siren + 3.0, (siren, scaled)


def test_cli_trains_siren_with_weight_scaling(tmp_path: Path) -> None:
    path = write_png(tmp_path / "photo.png", smooth_image(24, 32))
    run = tmp_path / "run"
    args = ["train", "--data", str(path), "--field", "siren", "--init", "weight-scaling", "--init.alpha", "2",
            "--field.hidden-features", "32", "--optim.lr", "1e-4", "--batch-size", "0", "--max-steps", "5",
            "--eval-every", "0", "--no-progress", "--output", str(run)]  # fmt: skip
    assert main(args) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["plugins"]["field"] == "siren" and config["plugins"]["init"] == "weight-scaling"
    assert config["init"]["alpha"] == 2.0 and config["field"]["hidden_features"] == 32
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["step"] == 5 and math.isfinite(metrics["mean"]["psnr"])
