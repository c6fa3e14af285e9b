"""The image task: loading edge cases, task inference, hold-out, full batch, a short fit, render."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import SHARED_DATA, smooth_image, write_png
from nfplug.cli import main
from nfplug.errors import NfplugError
from nfplug.training.image_task import checkerboard, load_image, pixel_to_coords

KODAK = SHARED_DATA / "kodak" / "kodim05.png"


def _smooth_image() -> np.ndarray:
    return smooth_image(32, 40)


@pytest.mark.parametrize(
    "name, array, channels",
    [
        ("rgb8.png", (_smooth_image() * 255).astype(np.uint8), 3),
        ("rgb16.png", (_smooth_image() * 65535).astype(np.uint16), 3),
        ("gray8.png", (_smooth_image()[..., 0] * 255).astype(np.uint8), 1),
        ("photo.jpg", (_smooth_image() * 255).astype(np.uint8), 3),
    ],
)
def test_image_formats(tmp_path: Path, name: str, array: np.ndarray, channels: int) -> None:
    path = tmp_path / name
    cv2.imwrite(str(path), array[..., ::-1] if array.ndim == 3 else array)
    image = load_image(path)
    assert image.shape == (32, 40, channels) and image.dtype == torch.float32
    expected = _smooth_image() if channels == 3 else _smooth_image()[..., :1]
    tolerance = {np.uint8: 1 / 255, np.uint16: 1 / 65535}[array.dtype.type] * (20 if name.endswith(".jpg") else 1)
    assert np.abs(image.numpy() - expected).mean() < tolerance


def test_rgba_is_composited_on_white_and_downscaled(tmp_path: Path) -> None:
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 2] = 255  # red in BGRA order
    rgba[:, :2, 3] = 255  # left half opaque, right half transparent
    cv2.imwrite(str(tmp_path / "a.png"), rgba)
    image = load_image(tmp_path / "a.png")
    assert torch.allclose(image[0, 0], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(image[0, 3], torch.tensor([1.0, 1.0, 1.0]))
    half = load_image(tmp_path / "a.png", downscale=2)
    assert half.shape == (2, 2, 3) and torch.allclose(half[0, 0], torch.tensor([1.0, 0.0, 0.0]))


@pytest.mark.parametrize("content, message", [(b"", "empty file"), (b"not an image at all", "corrupt or unreadable")])
def test_bad_image_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(NfplugError, match=message) as e:
        load_image(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_coordinates_and_checkerboard() -> None:
    coords = pixel_to_coords(torch.tensor([[0.5, 0.5], [3.5, 1.5]]), width=4, height=2)
    assert torch.allclose(coords, torch.tensor([[-0.75, -0.5], [0.75, 0.5]]))
    mask = checkerboard(2, 3)
    assert mask.tolist() == [[True, False, True], [False, True, False]]


@pytest.fixture
def image_file(tmp_path: Path) -> Path:
    return write_png(tmp_path / "smooth.png", _smooth_image())


def test_inferred_task_holdout_full_batch_and_render(image_file: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    args = ["train", "--data", str(image_file), "--field", "mlp", "--data.holdout", "checkerboard", "--batch-size", "0",
            "--max-steps", "150", "--eval-every", "0", "--no-progress", "--output", str(run)]
    assert main(args) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["split"] == "heldout" and metrics["mean"]["psnr"] > 25.0, metrics["mean"]
    assert main(["eval", str(run), "--split", "train"]) == 0
    train_psnr = json.loads((run / "metrics.json").read_text())["mean"]["psnr"]
    assert train_psnr >= metrics["mean"]["psnr"] - 0.5  # fitted pixels are no worse than held-out ones
    assert main(["render", str(run), "--scale", "2"]) == 0
    import imageio.v2 as imageio

    assert imageio.imread(run / "renders" / "reconstruction_x2.png").shape == (64, 80, 3)


def test_unsupported_field_task_pair_is_one_line(image_file: Path, capsys) -> None:
    from nfplug.api import Field
    from nfplug.training import run as run_module

    class SceneOnly(Field):
        tasks = ("scene",)

    real_get = run_module.registry.get
    run_module.registry.get = lambda kind, name: SceneOnly if kind == "fields" else real_get(kind, name)
    try:
        assert main(["train", "--data", str(image_file), "--max-steps", "1", "--no-progress"]) == 2
    finally:
        run_module.registry.get = real_get
    err = capsys.readouterr().err.strip()
    assert "does not support the image task" in err and "\n" not in err


@pytest.mark.skipif(not KODAK.is_file(), reason=f"{KODAK} not found")
def test_kodak_photo_with_task_override(tmp_path: Path) -> None:
    run = tmp_path / "kodak"
    assert main(["train", "--data", str(KODAK), "--data.task", "image", "--data.downscale", "8", "--max-steps", "60",
                 "--batch-size", "0", "--eval-every", "0", "--no-progress", "--output", str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["split"] == "full" and metrics["mean"]["psnr"] > 18.0


@pytest.mark.parametrize("field, expected", [("siren", 1e-4), ("ngp", 1e-2)])
def test_learning_rate_defaults_to_the_fields_own(image_file: Path, tmp_path: Path, field: str, expected: float) -> None:
    from nfplug.training.checkpoint import latest_checkpoint, load_checkpoint

    run = tmp_path / field
    args = ["train", "--data", str(image_file), "--field", field, "--max-steps", "1", "--optim.warmup-steps", "0",
            "--eval-every", "0", "--no-progress", "--output", str(run)]
    assert main(args) == 0
    assert load_checkpoint(latest_checkpoint(run))["optimizer"]["param_groups"][0]["lr"] == pytest.approx(expected)
    assert main(["train", "--resume", str(run), "--max-steps", "2", "--optim.lr", "0.003", "--optim.decay-milestones"]) == 0
    assert load_checkpoint(latest_checkpoint(run))["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.003)


def test_learning_rate_schedules_hand_computed() -> None:
    from nfplug.config import OptimConfig
    from nfplug.training.trainer import learning_rate

    class Config:
        def __init__(self, **kw: object) -> None:
            self.optim = OptimConfig(**kw)

    step = Config(warmup_steps=4, decay_milestones=(0.5, 0.75), decay_gamma=0.1)
    assert learning_rate(step, 1.0, 0, 0.0) == pytest.approx(0.25)  # warm-up: (0 + 1) / 4
    assert learning_rate(step, 1.0, 10, 0.49) == pytest.approx(1.0)
    assert learning_rate(step, 1.0, 10, 0.5) == pytest.approx(0.1)
    assert learning_rate(step, 1.0, 10, 0.8) == pytest.approx(0.01)
    cosine = Config(warmup_steps=0, schedule="cosine", min_lr=0.1)
    assert learning_rate(cosine, 1.0, 0, 0.0) == pytest.approx(1.0)
    assert learning_rate(cosine, 1.0, 10, 0.5) == pytest.approx(0.55)  # 0.1 + 0.9 * (1 + cos(pi / 2)) / 2
    assert learning_rate(cosine, 1.0, 10, 0.25) == pytest.approx(0.1 + 0.9 * (1 + 0.5**0.5) / 2)
    assert learning_rate(cosine, 1.0, 10, 1.0) == pytest.approx(0.1)
    assert learning_rate(cosine, 0.05, 10, 1.0) == pytest.approx(0.05)  # min_lr above the peak: constant
    warm_cosine = Config(warmup_steps=4, schedule="cosine", min_lr=0.1)
    assert learning_rate(warm_cosine, 1.0, 1, 0.5) == pytest.approx(0.5 * 0.55)  # warm-up (1 + 1) / 4 times cosine
    with pytest.raises(ValueError, match="--optim.schedule"):
        learning_rate(Config(schedule="exponential"), 1.0, 10, 0.5)


def test_image_task_ground_truth_follows_gt_lookup(tmp_path: Path) -> None:
    """The training loss and the error ranking both read ground truth through --data.gt-lookup."""
    from types import SimpleNamespace

    from nfplug.config import DataConfig
    from nfplug.training.image_task import ImageTask

    grey = (np.array([[0, 1, 2], [10, 11, 12]]) * 5).astype(np.uint8)  # 2 rows x 3 columns
    path = write_png(tmp_path / "tiny.png", np.repeat(grey[..., None], 3, axis=-1) / 255.0)
    xy = torch.tensor([[1.0, 1.0], [2.5, 0.5]])  # the corner of 4 pixels, a pixel centre
    index = torch.zeros(2, dtype=torch.long)
    black = lambda coords: torch.zeros(coords.shape[0], 3)  # noqa: E731
    expected = {"nearest": [55.0, 10.0], "bilinear": [(0 + 5 + 50 + 55) / 4, 10.0]}
    for mode, values in expected.items():
        task = ImageTask(DataConfig(path=str(path), gt_lookup=mode), torch.device("cpu"))
        _, gt, _ = task.train_forward(black, SimpleNamespace(image_index=index, pixel_xy=xy), torch.Generator())
        assert (gt * 255).tolist() == [pytest.approx([v] * 3) for v in values], mode
        errors = task.predict_errors(black, index, xy) * 255
        assert errors.tolist() == pytest.approx([3 * v for v in values]), mode
