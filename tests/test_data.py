"""Scene loading (Blender format), camera rays and the procedural demo scene."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pytest
import torch

from nfplug.data import demo
from nfplug.data.cameras import Cameras, generate_rays, orbit_path
from nfplug.data.demo import ensure_demo_scene
from nfplug.data.scene import available_splits, load_blender
from nfplug.errors import NfplugError

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LEGO = SHARED_DATA / "nerf_synthetic" / "lego"

# An OpenGL camera at +4 z looking at the origin (down -z), y up.
CAMERA_ON_Z = [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 4.0], [0.0, 0.0, 0.0, 1.0]]


def _write_rgba(path: Path, rgba: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))


def _tiny_rgba(seed: int) -> np.ndarray:
    """``[8, 8, 4]`` uint8: random colours; pixel (0, 0) half-transparent red, (1, 0) transparent."""
    rgba = np.random.default_rng(seed).integers(0, 256, size=(8, 8, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    rgba[0, 0] = (255, 0, 0, 128)
    rgba[0, 1] = (10, 200, 30, 0)
    return rgba


def _make_scene(root: Path, n_frames: int = 3) -> Path:
    """A tiny Blender-format scene: ``n_frames`` 8x8 RGBA train images, one val image."""
    for split, n in (("train", n_frames), ("val", 1)):
        frames = []
        for i in range(n):
            _write_rgba(root / split / f"r_{i}.png", _tiny_rgba(i))
            # The original data omits ".png"; keep one explicit suffix to cover both.
            file_path = f"./{split}/r_{i}" + (".png" if i == 1 else "")
            frames.append({"file_path": file_path, "transform_matrix": CAMERA_ON_Z})
        meta = {"camera_angle_x": 0.6911112070083618, "frames": frames}
        (root / f"transforms_{split}.json").write_text(json.dumps(meta, indent=2))
    return root


def _edit_meta(fn: Callable[[dict], None]) -> Callable[[Path], str]:
    """A corruption that edits transforms_train.json; returns the name the error must mention."""

    def corrupt(root: Path) -> str:
        path = root / "transforms_train.json"
        meta = json.loads(path.read_text())
        fn(meta)
        path.write_text(json.dumps(meta))
        return "transforms_train.json"

    return corrupt


def _delete_key(key: str, frame: int | None = None) -> Callable[[Path], str]:
    return _edit_meta(lambda m: (m if frame is None else m["frames"][frame]).pop(key))


def _bad_json(root: Path) -> str:
    (root / "transforms_train.json").write_text('{\n  "camera_angle_x": 0.69,\n  "frames": [,]\n}')
    return "transforms_train.json"


def _missing_image(root: Path) -> str:
    (root / "train" / "r_2.png").unlink()
    return "r_2"


def _corrupt_image(root: Path) -> str:
    (root / "train" / "r_2.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    return "r_2.png"


def _other_size(root: Path) -> str:
    _write_rgba(root / "train" / "r_2.png", np.zeros((6, 8, 4), np.uint8))
    return "r_2.png"


def _set_frame_matrix(value: object) -> Callable[[Path], str]:
    return _edit_meta(lambda m: m["frames"][1].__setitem__("transform_matrix", value))


BAD_INPUTS: dict[str, tuple[Callable[[Path], str], dict]] = {
    "bad json": (_bad_json, {}),
    "no camera_angle_x": (_delete_key("camera_angle_x"), {}),
    "no frames": (_delete_key("frames"), {}),
    "no file_path": (_delete_key("file_path", frame=1), {}),
    "no transform_matrix": (_delete_key("transform_matrix", frame=1), {}),
    "3x4 matrix": (_set_frame_matrix(CAMERA_ON_Z[:3]), {}),
    "ragged matrix": (_set_frame_matrix([[1.0, 0.0], *CAMERA_ON_Z[1:]]), {}),
    "nan matrix": (_set_frame_matrix([[float("nan")] * 4] + CAMERA_ON_Z[1:]), {}),
    "infinite fov": (_edit_meta(lambda m: m.__setitem__("camera_angle_x", float("inf"))), {}),
    "empty frames": (_edit_meta(lambda m: m.__setitem__("frames", [])), {}),
    "missing image": (_missing_image, {}),
    "corrupt image": (_corrupt_image, {}),
    "different sizes": (_other_size, {}),
    "downscale 0": (lambda root: "transforms_train.json", {"downscale": 0}),
    "downscale too large": (lambda root: "transforms_train.json", {"downscale": 9}),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_naming_the_file(tmp_path: Path, case: str) -> None:
    corrupt, kwargs = BAD_INPUTS[case]
    root = _make_scene(tmp_path / "scene")
    load_blender(root, "train", **kwargs | {"downscale": 1})  # the scene is fine before
    name = corrupt(root)
    with pytest.raises(NfplugError) as info:
        load_blender(root, "train", **kwargs)
    message = str(info.value)
    assert name in message
    assert "\n" not in message


def test_bad_json_names_line(tmp_path: Path) -> None:
    root = _make_scene(tmp_path / "scene")
    _bad_json(root)
    with pytest.raises(NfplugError, match="line 3"):
        load_blender(root, "train")


def test_missing_folder_and_split(tmp_path: Path) -> None:
    with pytest.raises(NfplugError, match="nowhere") as info:
        load_blender(tmp_path / "nowhere", "train")
    assert "\n" not in str(info.value)
    root = _make_scene(tmp_path / "scene")
    assert available_splits(root) == ["train", "val"]
    with pytest.raises(NfplugError, match=r"transforms_test\.json.*train, val"):
        load_blender(root, "test")


def test_load_shapes_and_compositing(tmp_path: Path) -> None:
    root = _make_scene(tmp_path / "scene", n_frames=3)
    scene = load_blender(root, "train")
    assert scene.images.shape == (3, 8, 8, 3)
    assert scene.images.dtype == torch.float32
    assert scene.cameras.c2w.shape == (3, 3, 4) and scene.cameras.K.shape == (3, 3, 3)
    assert (scene.cameras.width, scene.cameras.height) == (8, 8)
    assert scene.name == "scene" and scene.split == "train" and len(scene.paths) == 3
    assert (scene.near, scene.far) == (2.0, 6.0) and len(scene.aabb) == 6
    # (255, 0, 0) at alpha 128/255 on white: red stays 1, green and blue are 1 - 128/255.
    expected = torch.tensor([1.0, 1 - 128 / 255, 1 - 128 / 255])
    torch.testing.assert_close(scene.images[0, 0, 0], expected)
    torch.testing.assert_close(scene.images[0, 0, 1], torch.ones(3))
    torch.testing.assert_close(scene.images[0, 2:], torch.from_numpy(_tiny_rgba(0)[2:, :, :3] / 255.0).float())
    black = load_blender(root, "train", background=(0.0, 0.0, 0.0))
    torch.testing.assert_close(black.images[0, 0, 0], torch.tensor([128 / 255, 0.0, 0.0]))
    focal = 0.5 * 8 / math.tan(0.5 * 0.6911112070083618)
    torch.testing.assert_close(scene.cameras.K[0], torch.tensor([[focal, 0, 4], [0, focal, 4], [0, 0, 1.0]]))


def test_downscale(tmp_path: Path) -> None:
    root = _make_scene(tmp_path / "scene")
    full = load_blender(root, "train")
    half = load_blender(root, "train", downscale=2)
    assert half.images.shape == (3, 4, 4, 3)
    torch.testing.assert_close(half.images[:, 1, 2], full.images[:, 2:4, 4:6].mean(dim=(1, 2)), atol=1e-5, rtol=0)
    torch.testing.assert_close(half.cameras.K[:, :2], full.cameras.K[:, :2] / 2)


def test_explicit_intrinsics_override_fov(tmp_path: Path) -> None:
    root = _make_scene(tmp_path / "scene")
    _edit_meta(lambda m: m.update(fl_x=20.0, fl_y=30.0, cx=3.0, cy=5.0, w=16, h=16))(root)
    K = load_blender(root, "train").cameras.K[0]
    torch.testing.assert_close(K, torch.tensor([[10.0, 0, 1.5], [0, 15.0, 2.5], [0, 0, 1]]))


def test_opengl_to_opencv_on_load(tmp_path: Path) -> None:
    scene = load_blender(_make_scene(tmp_path / "scene"), "train")
    centre = torch.tensor([[4.0, 4.0]])
    rays_o, rays_d = generate_rays(scene.cameras, torch.tensor([0]), centre)
    torch.testing.assert_close(rays_o, torch.tensor([[0.0, 0.0, 4.0]]))
    torch.testing.assert_close(rays_d, torch.tensor([[0.0, 0.0, -1.0]]))
    # Image y points down: a ray below the centre goes to world -y (OpenGL y is up).
    _, below = generate_rays(scene.cameras, torch.tensor([0]), torch.tensor([[4.0, 7.5]]))
    assert below[0, 1] < 0 and below[0, 0].abs() < 1e-6


def _random_cameras(n: int) -> Cameras:
    q, _ = torch.linalg.qr(torch.randn(n, 3, 3))
    q = q * torch.linalg.det(q)[:, None, None]  # proper rotations
    c2w = torch.cat([q, torch.randn(n, 3, 1) * 3], dim=-1)
    K = torch.tensor([[50.0, 0, 30.0], [0, 60.0, 20.0], [0, 0, 1]]).expand(n, 3, 3)
    return Cameras(c2w, K, width=64, height=48)


def test_generate_rays_centre_and_gradient() -> None:
    torch.manual_seed(0)
    cams = _random_cameras(4)
    index = torch.tensor([0, 1, 2, 3, 2])
    rays_o, rays_d = generate_rays(cams, index[:4], torch.tensor([[30.0, 20.0]]).expand(4, 2))
    torch.testing.assert_close(rays_d, cams.c2w[:, :, 2])
    torch.testing.assert_close(rays_o, cams.c2w[:, :, 3])
    pixel_xy = (torch.rand(5, 2) * torch.tensor([64.0, 48.0])).requires_grad_()
    rays_o, rays_d = generate_rays(cams, index, pixel_xy)
    torch.testing.assert_close(rays_d.norm(dim=-1), torch.ones(5))
    (rays_d * torch.randn(5, 3)).sum().backward()
    assert pixel_xy.grad is not None
    assert torch.isfinite(pixel_xy.grad).all() and (pixel_xy.grad.abs().sum(dim=-1) > 0).all()


def test_orbit_path_looks_at_origin() -> None:
    torch.manual_seed(0)
    eye = torch.randn(6, 3)
    eye[:, 2] = eye[:, 2].abs() + 0.5
    cams = _random_cameras(6)
    cams.c2w[:, :, 3] = eye
    path = orbit_path(cams, 12)
    assert len(path) == 12 and (path.width, path.height) == (64, 48)
    centres = path.c2w[:, :, 3]
    torch.testing.assert_close(centres.norm(dim=-1), eye.norm(dim=-1).mean().expand(12))
    torch.testing.assert_close(path.c2w[:, :, 2], -centres / centres.norm(dim=-1, keepdim=True))
    R = path.c2w[:, :, :3]
    torch.testing.assert_close(R.transpose(1, 2) @ R, torch.eye(3).expand(12, 3, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(12))
    elevation = torch.asin(centres[:, 2] / centres.norm(dim=-1))
    assert torch.allclose(elevation, elevation[0].expand(12), atol=1e-5)
    assert path.c2w[:, 2, 1].max() < 0  # image "down" has a negative world-z component


# ----------------------------------------------------------------------- demo scene


@pytest.fixture(scope="module")
def demo_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return ensure_demo_scene(tmp_path_factory.mktemp("a")), ensure_demo_scene(tmp_path_factory.mktemp("b"))


def test_demo_scene_is_deterministic(demo_dirs: tuple[Path, Path]) -> None:
    a, b = demo_dirs
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) >= 3 + 60
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    assert [p.name for p in a.parent.iterdir()] == [a.name]  # no temporary folder left


def test_demo_scene_loads_with_colours_and_background(demo_dirs: tuple[Path, Path]) -> None:
    root = demo_dirs[0]
    assert available_splits(root) == ["train", "val", "test"]
    splits = {s: load_blender(root, s) for s in ("train", "val", "test")}
    train = splits["train"]
    assert train.images.shape == (60, 64, 64, 3)
    assert len(splits["val"].paths) == 8 and len(splits["test"].paths) == 8
    train_centres = train.cameras.c2w[:, :, 3]
    for held_out in ("val", "test"):
        centres = splits[held_out].cameras.c2w[:, :, 3]
        assert torch.cdist(centres, train_centres).min() > 0.1
        torch.testing.assert_close(centres.norm(dim=-1), torch.full((8,), 4.0))
    assert (train_centres[:, 2] > 0).all()
    # Every camera looks at the origin.
    _, rays_d = generate_rays(train.cameras, torch.arange(60), torch.full((60, 2), 32.0))
    torch.testing.assert_close(rays_d, -train_centres / 4.0, atol=1e-5, rtol=0)
    pixels = train.images.reshape(-1, 3)
    r, g, b = pixels.unbind(-1)
    assert ((r > 0.5) & (g < 0.3) & (b < 0.3)).any(), "no red"
    assert ((g > r + 0.2) & (g > b + 0.2)).any(), "no green"
    assert ((b > r + 0.3) & (b > g + 0.3)).any(), "no blue"
    rgba = cv2.imread(train.paths[0], cv2.IMREAD_UNCHANGED)
    assert rgba.shape == (64, 64, 4)
    transparent = rgba[..., 3] == 0
    assert 0.1 < transparent.mean() < 0.95
    assert (train.images[0][torch.from_numpy(transparent)] == 1.0).all()


def test_demo_scene_env_cache_and_atomic_write(
    demo_dirs: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cached = demo_dirs[0]
    monkeypatch.setenv("NFPLUG_CACHE", str(cached.parent))
    assert ensure_demo_scene() == cached  # found in the cache, not regenerated

    def interrupted(out_dir: Path) -> None:
        (out_dir / "train").mkdir()
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "generate_demo_scene", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ensure_demo_scene(tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not LEGO.is_dir(), reason="needs ../shared/data/nerf_synthetic/lego")
def test_lego_downscaled() -> None:
    scene = load_blender(LEGO, "train", downscale=4)
    assert scene.images.shape == (100, 100, 100, 3)
    assert scene.cameras.K[0, 0, 0].item() == pytest.approx(0.25 * 200 / math.tan(0.5 * 0.6911112070083618), rel=1e-5)
    assert 0.5 < scene.images.mean().item() < 1.0  # white background dominates


def test_alphas_recomposite_exactly_after_downscale(tmp_path: Path) -> None:
    root = _make_scene(tmp_path)
    white = load_blender(root, "train", downscale=2)
    black = load_blender(root, "train", downscale=2, background=(0.0, 0.0, 0.0))
    assert white.alphas.shape == white.images.shape[:3] + (1,)
    assert 0.0 < white.alphas.min() < 1.0  # the tiny images are partly transparent
    # c_black = c_white - (1 - a) (1 - 0): compositing and area averaging are linear.
    assert torch.allclose(white.images - (1.0 - white.alphas), black.images, atol=1e-5)


def test_lookup_pixels_nearest_and_bilinear_hand_computed() -> None:
    from nfplug.training.scene_task import lookup_pixels

    # one image, 2 rows x 3 columns, one channel: value = 10 * row + col
    images = torch.tensor([[[0.0, 1.0, 2.0], [10.0, 11.0, 12.0]]]).unsqueeze(-1)
    xy = torch.tensor([[0.5, 0.5], [2.5, 1.5], [1.0, 1.0], [1.25, 0.75], [0.1, 1.9], [2.9, 0.2]], requires_grad=True)
    index = torch.zeros(len(xy), dtype=torch.long)
    nearest = lookup_pixels(images, index, xy)[:, 0]
    assert nearest.tolist() == [0.0, 12.0, 11.0, 1.0, 10.0, 2.0]
    bilinear = lookup_pixels(images, index, xy, "bilinear")[:, 0]
    # centres are exact; (1.0, 1.0) is halfway between 4 centres: (0 + 1 + 10 + 11) / 4;
    # (1.25, 0.75): u = 0.75 between columns 0 and 1, v = 0.25 between rows 0 and 1;
    # beyond the outer centres the border pixel is replicated.
    expected = [0.0, 12.0, 5.5, 0.75 + 10 * 0.25, 10.0, 2.0]
    assert bilinear.tolist() == pytest.approx(expected)
    # the slope of the interpolated image reaches pixel_xy: 1 per column, 10 per row inside,
    # none where the border is replicated; nearest is piecewise constant (no gradient)
    assert not nearest.requires_grad
    bilinear.sum().backward()
    assert xy.grad[2:].flatten().tolist() == pytest.approx([1.0, 10.0, 1.0, 10.0, 0.0, 0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="unknown mode"):
        lookup_pixels(images, index, xy, "cubic")
