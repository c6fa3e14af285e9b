"""Bad input and faults: camera poses, tiny images, masked SSIM, a corrupt held-out image,
truncated files, and training rays that never reach the field."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import LEGO, TINY_TRAIN, needs_lego, smooth_image, write_png
from nfplug.cli import main
from nfplug.data.images import read_image_file
from nfplug.data.scene import load_blender
from nfplug.errors import NfplugError
from nfplug.metrics import ssim
from nfplug.training.evaluation import evaluate_views
from nfplug.training.image_task import checkerboard
from nfplug.training.scene_task import View
from test_data import CAMERA_ON_Z, _make_scene


def _one_line_error(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("nfplug: error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def _train(data: Path, run: Path, *extra: str) -> int:
    return main(["train", "--data", str(data), "--max-steps", "2", *TINY_TRAIN, "--output", str(run), *extra])


def _set_poses(root: Path, split: str, matrix: list, frames: slice = slice(None)) -> None:
    """Give the ``frames`` of ``transforms_{split}.json`` the camera-to-world ``matrix``."""
    path = root / f"transforms_{split}.json"
    meta = json.loads(path.read_text())
    for frame in meta["frames"][frames]:
        frame["transform_matrix"] = matrix
    path.write_text(json.dumps(meta))


def _with_rotation(rotation: np.ndarray) -> list:
    """CAMERA_ON_Z's position with another upper-left 3x3."""
    matrix = np.array(CAMERA_ON_Z)
    matrix[:3, :3] = rotation
    return matrix.tolist()


def _resize_scene_images(root: Path, height: int, width: int) -> None:
    """Replace every image of a scene by a smooth ``height x width`` one."""
    for i, path in enumerate(sorted(root.glob("*/r_*.png"))):
        write_png(path, smooth_image(height, width, freqs=(6.0 + i, 5.0, 4.0)))


# ----------------------------------------------------------------- 1. camera poses

ROT_Y = np.array([[math.cos(0.5), 0, math.sin(0.5)], [0, 1, 0], [-math.sin(0.5), 0, math.cos(0.5)]])  # 0.5 rad about y

BAD_ROTATIONS = {
    "singular": np.diag([0.0, 1.0, 1.0]),
    "rank one": np.ones((3, 3)),
    "scaled": 2.0 * ROT_Y,
    "sheared": ROT_Y + np.array([[0, 0.2, 0], [0, 0, 0], [0, 0, 0]]),
    "reflection": np.diag([-1.0, 1.0, 1.0]),
}


@pytest.mark.parametrize("case", list(BAD_ROTATIONS))
def test_bad_rotation_is_one_line_naming_json_and_frame(tmp_path: Path, case: str) -> None:
    root = _make_scene(tmp_path / "scene")
    _set_poses(root, "train", _with_rotation(BAD_ROTATIONS[case]), slice(2, 3))
    with pytest.raises(NfplugError) as info:
        load_blender(root, "train")
    message = str(info.value)
    assert "\n" not in message and "transforms_train.json: frame 2:" in message and "rotation" in message, message


def test_non_finite_rotation_names_json_and_frame(tmp_path: Path) -> None:
    root = _make_scene(tmp_path / "scene")
    _set_poses(root, "val", _with_rotation(np.diag([1.0, float("inf"), 1.0])), slice(0, 1))
    with pytest.raises(NfplugError, match=r"transforms_val\.json: frame 0: .*non-finite"):
        load_blender(root, "val")


def test_rounded_rotation_still_loads(tmp_path: Path) -> None:
    """Hand-written poses rounded to 3 decimals are off orthonormal by ~1e-3: accepted."""
    root = _make_scene(tmp_path / "scene")
    _set_poses(root, "train", _with_rotation(np.round(ROT_Y, 3)))
    split = load_blender(root, "train")
    assert torch.allclose(split.cameras.c2w[0, :, 0], torch.tensor(ROT_Y[:, 0], dtype=torch.float32), atol=1e-3)


def test_singular_pose_stops_train_before_any_step(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = _make_scene(tmp_path / "scene")
    _set_poses(root, "train", _with_rotation(np.zeros((3, 3))), slice(1, 2))
    run = tmp_path / "run"
    assert _train(root, run) == 2
    assert "transforms_train.json: frame 1:" in _one_line_error(capsys)
    assert not run.exists()


@needs_lego
@pytest.mark.parametrize("split", ["train", "val"])
def test_lego_poses_pass_the_check(split: str) -> None:
    assert load_blender(LEGO, split, downscale=8).cameras.c2w.shape[0] == 100


# ----------------------------------------------------------------- 2. images smaller than SSIM's window


@pytest.mark.parametrize("height, width", [(1, 1), (5, 7), (8, 10)])
def test_ssim_of_images_smaller_than_the_window(height: int, width: int) -> None:
    gt = torch.tensor(smooth_image(height, width), dtype=torch.float32)
    worse = (gt + 0.2).clamp(0, 1)
    assert ssim(gt, gt) == pytest.approx(1.0, abs=1e-6)
    assert -1.0 <= ssim(worse, gt) < 0.99
    # The masked path builds its own window: equal on an all-true mask means the same window.
    everything = torch.ones(height, width, dtype=torch.bool)
    assert ssim(worse, gt, everything) == pytest.approx(ssim(worse, gt), abs=1e-5)


def test_ssim_of_one_pixel_compares_brightness() -> None:
    """A 1-pixel window has no variance: SSIM is the luminance term (2xy + C1) / (x^2 + y^2 + C1)."""
    x, y, c1 = 0.3, 0.6, 0.01**2
    expected = (2 * x * y + c1) / (x * x + y * y + c1)
    assert ssim(torch.full((1, 1, 1), x), torch.full((1, 1, 1), y)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("height, width, holdout", [(1, 1, "none"), (5, 7, "none"), (5, 7, "checkerboard")])
def test_tiny_image_trains_and_writes_metrics(tmp_path: Path, height: int, width: int, holdout: str) -> None:
    image = write_png(tmp_path / "tiny.png", smooth_image(height, width))
    run = tmp_path / "run"
    assert _train(image, run, "--field", "mlp", "--data.holdout", holdout) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["step"] == 2 and -1.0 <= metrics["mean"]["ssim"] <= 1.0 and math.isfinite(metrics["mean"]["psnr"])


def test_checkerboard_hold_out_of_one_pixel_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    image = write_png(tmp_path / "dot.png", smooth_image(1, 1))
    assert _train(image, tmp_path / "run", "--data.holdout", "checkerboard") == 2
    assert "--data.holdout: checkerboard needs at least 2 pixels" in _one_line_error(capsys)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("height, width", [(1, 1), (5, 7)])
def test_tiny_scene_trains_and_writes_metrics(tmp_path: Path, height: int, width: int) -> None:
    root = _make_scene(tmp_path / "scene")
    _resize_scene_images(root, height, width)
    run = tmp_path / "run"
    assert _train(root, run) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["step"] == 2 and -1.0 <= metrics["mean"]["ssim"] <= 1.0 and math.isfinite(metrics["mean"]["psnr"])


# ----------------------------------------------------------------- 3. SSIM on held-out pixels only


def _exact_on_heldout(height: int = 48, width: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """gt, a prediction equal to gt on the held-out checkerboard half and noise elsewhere, the hold-out mask."""
    gt = torch.tensor(smooth_image(height, width), dtype=torch.float32)
    garbage = torch.rand(gt.shape, generator=torch.Generator().manual_seed(0))
    heldout = ~checkerboard(height, width)
    return gt, torch.where(heldout[..., None], gt, garbage), heldout


def test_masked_ssim_ignores_pixels_off_the_mask() -> None:
    gt, pred, heldout = _exact_on_heldout()
    assert ssim(pred, gt, heldout) == pytest.approx(1.0, abs=1e-5)
    assert ssim(pred, gt) < 0.5
    assert ssim(pred, gt, ~heldout) < 0.5  # the garbage half, on its own


def test_masked_ssim_hand_computed_uniform_offset() -> None:
    """Constant images, pred = gt + d on the mask: every window's means are y + d and y, variances 0,
    so SSIM = (2 (y + d) y + C1) / ((y + d)^2 + y^2 + C1), whatever lies off the mask."""
    y, d, c1 = 0.5, 0.1, 0.01**2
    gt = torch.full((12, 12, 1), y)
    heldout = ~checkerboard(12, 12)
    pred = torch.where(heldout[..., None], gt + d, torch.rand(12, 12, 1, generator=torch.Generator().manual_seed(1)))
    expected = (2 * (y + d) * y + c1) / ((y + d) ** 2 + y * y + c1)
    assert ssim(pred, gt, heldout) == pytest.approx(expected, rel=1e-4)


def test_evaluation_reports_ssim_over_the_views_mask() -> None:
    gt, pred, heldout = _exact_on_heldout()

    class HeldOutTask:
        def n_views(self, split: str) -> int:
            return 1

        def render_view(self, field: object, split: str, index: int) -> View:
            empty = torch.zeros(gt.shape[:2])
            return View(rgb=pred, depth=empty, opacity=empty, gt=gt, mask=heldout)

    assert evaluate_views(HeldOutTask(), None, "heldout")["mean"]["ssim"] == pytest.approx(1.0, abs=1e-5)


# ----------------------------------------------------------------- 4. a corrupt held-out image


def test_corrupt_val_image_fails_before_training(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = _make_scene(tmp_path / "scene")
    (root / "val" / "r_0.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    run = tmp_path / "run"
    assert main(["train", "--data", str(root), "--max-steps", "50", *TINY_TRAIN, "--output", str(run)]) == 2
    assert str(root / "val" / "r_0.png") in _one_line_error(capsys)
    assert not (run / "checkpoints").exists()


# ----------------------------------------------------------------- 5. truncated files


def _encoded(suffix: str, *params: int) -> bytes:
    ok, data = cv2.imencode(suffix, (smooth_image(64, 80) * 255).astype(np.uint8), list(params))
    assert ok
    return data.tobytes()


@pytest.mark.parametrize("suffix, what", [(".jpg", "FF D9"), (".png", "IEND")])
def test_truncated_image_is_one_line_error(tmp_path: Path, capfd: pytest.CaptureFixture, suffix: str, what: str) -> None:
    data = _encoded(suffix)
    good, appended, half = tmp_path / f"good{suffix}", tmp_path / f"appended{suffix}", tmp_path / f"half{suffix}"
    good.write_bytes(data)
    appended.write_bytes(data + b"\x00\x00\r\n\xff\xd8 a motion photo's video")  # after the end: ignored
    half.write_bytes(data[: len(data) // 2])
    assert read_image_file(good).shape == (64, 80, 3)
    assert np.array_equal(read_image_file(appended), read_image_file(good))
    with pytest.raises(NfplugError) as info:
        read_image_file(half)
    message = str(info.value)
    assert message.startswith(f"{half}: truncated") and what in message and "\n" not in message
    assert "Premature end" not in capfd.readouterr().err  # nothing decoded it half-way


@pytest.mark.parametrize(
    "suffix, params",
    [(".jpg", ()), (".jpg", (cv2.IMWRITE_JPEG_PROGRESSIVE, 1)), (".jpg", (cv2.IMWRITE_JPEG_RST_INTERVAL, 2)), (".png", ())],
    ids=["baseline", "progressive", "restart markers", "png"],
)
def test_every_cut_of_an_image_is_found(suffix: str, params: tuple[int, ...]) -> None:
    """Every prefix that stops before the end marker is rejected (PNG: from after its 8-byte signature
    to IEND's type; a cut in IEND's checksum leaves the pixels whole)."""
    from nfplug.data.images import _truncation

    data = _encoded(suffix, *params)
    assert _truncation(data) is None
    end = len(data) - (4 if suffix == ".png" else 0)
    assert [n for n in range(8, end) if _truncation(data[:n]) is None] == []


def test_truncated_jpeg_stops_image_training(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(_encoded(".jpg")[:-100])
    assert _train(photo, tmp_path / "run") == 2
    assert f"{photo}: truncated" in _one_line_error(capsys)


def test_truncated_scene_image_names_the_file(tmp_path: Path) -> None:
    root = _make_scene(tmp_path / "scene")
    path = root / "train" / "r_1.png"
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(NfplugError) as info:
        load_blender(root, "train")
    assert str(info.value).startswith(f"{path}: truncated")


# ----------------------------------------------------------------- 6. no ray reaches the field


@pytest.mark.parametrize("case", ["cameras look away", "tiny samples-per-cell", "alpha-thre"])
def test_no_ray_reaching_the_field_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, case: str) -> None:
    root = _make_scene(tmp_path / "scene")
    extra: tuple[str, ...] = ()
    if case in ("cameras look away", "alpha-thre"):  # at +4 z, looking along +z: away from the box at the origin
        _set_poses(root, "train", _with_rotation(np.diag([-1.0, 1.0, -1.0])))
    if case == "tiny samples-per-cell":
        extra = ("--render.samples-per-cell", "1e-9")
    elif case == "alpha-thre":  # a threshold set: the message names it as a possible cause too
        extra = ("--render.alpha-thre", "0.5", "--render.grid-warmup-steps", "0")
    assert _train(root, tmp_path / "run", *extra) == 2
    err = _one_line_error(capsys)
    assert "steps 0-1: no training ray hit the scene's occupied volume" in err and "--render.samples-per-cell" in err, err
    assert ("--render.alpha-thre 0.5 drops every sample" in err) == (case == "alpha-thre"), err


def test_alpha_thre_waits_for_the_grid_warm_up(tmp_path: Path) -> None:
    """The same threshold trains when it starts after the warm-up (the default 256 steps), as the
    renderer's threshold is 0 until then and the option's value from then on and for rendering."""
    from nfplug.config import RenderConfig
    from nfplug.rendering.scene_renderer import SceneRenderer

    assert _train(_make_scene(tmp_path / "scene"), tmp_path / "run", "--render.alpha-thre", "0.5") == 0
    renderer = SceneRenderer((-1.0, -1.0, -1.0, 1.0, 1.0, 1.0), 2.0, 6.0, RenderConfig(alpha_thre=0.01, grid_warmup_steps=256))
    assert renderer.alpha_thre == 0.01  # rendering a trained field
    for step, expected in ((1, 0.0), (255, 0.0), (257, 0.01), (1001, 0.01)):  # not update steps: no field call
        renderer.update_grid(step, None)
        assert renderer.alpha_thre == expected, step


def test_one_batch_that_misses_the_scene_is_skipped_not_fatal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With few rays on a mostly empty scene one batch can miss everything by chance: that
    step teaches nothing, and training goes on."""
    from nfplug.training.scene_task import SceneTask

    original, calls = SceneTask.train_forward, []

    def third_batch_misses(self, field, batch, generator):
        pred, gt, stats = original(self, field, batch, generator)
        calls.append(1)
        return (pred.detach() if len(calls) == 3 else pred), gt, stats

    monkeypatch.setattr(SceneTask, "train_forward", third_batch_misses)
    root = _make_scene(tmp_path / "scene")
    assert main(["train", "--data", str(root), "--max-steps", "6", *TINY_TRAIN, "--output", str(tmp_path / "run")]) == 0
    assert len(calls) == 6
