"""Dataset plugins (scene formats): each reads the same cameras the same way, distortion, pose
normalisation, format detection and bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from nfplug.api import DatasetContext, SceneHints
from nfplug.cli import main
from nfplug.config import DataConfig, RenderConfig
from nfplug.data.cameras import Cameras, distort, generate_rays, look_at, undistort
from nfplug.data.colmap_model import ColmapCamera, ColmapImage, ColmapModel, rotmat_to_qvec, write_model
from nfplug.data.formats import detect_formats, open_dataset
from nfplug.data.normalize import SceneTransform, fit_normalization, focus_point, render_bounds, rotation_between
from nfplug.errors import NfplugError
from nfplug.training.scene_task import SceneTask, object_samples_per_cell, training_pixel_size

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
W, H = 64, 48
FX, FY, CX, CY = 50.0, 52.0, 30.5, 25.0
DIST = (0.05, -0.01, 0.001, -0.002)
N = 10
POINT = np.array([1.3, 1.8, 3.25])  # a known world point near the centre the ring looks at, seen by every camera


def rig() -> np.ndarray:
    """``[N, 3, 4]`` OpenCV cameras on a tilted ring around (1, 2, 3), looking at it, in a frame whose up is -y."""
    angles = np.linspace(0, 2 * np.pi, N, endpoint=False)
    eye = np.stack([4 * np.cos(angles), -1.5 + 0.2 * np.sin(3 * angles), 4 * np.sin(angles)], axis=-1) + [1, 2, 3]
    c2w = look_at(torch.from_numpy(eye), torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), torch.tensor([0.0, -1.0, 0.0], dtype=torch.float64))
    return c2w.numpy()


def project(c2w: np.ndarray, point: np.ndarray, dist=DIST) -> np.ndarray:
    """``[N, 2]`` pixels of ``point`` through OpenCV's own projection (pixel centres at +0.5, as COLMAP)."""
    K = np.array([[FX, 0, CX], [0, FY, CY], [0, 0, 1.0]])
    out = []
    for cam in c2w:
        R, t = cam[:, :3].T, -cam[:, :3].T @ cam[:, 3]
        pixel, _ = cv2.projectPoints(point[None], cv2.Rodrigues(R)[0], t, K, np.asarray(dist, dtype=np.float64))
        out.append(pixel[0, 0])
    return np.array(out)


def write_images(folder: Path, n: int = N, size=(W, H)) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = [f"img_{i:02d}.png" for i in range(n)]
    for name in names:
        cv2.imwrite(str(folder / name), rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    return names


def make_colmap(root: Path, *, binary: bool = True, model: str = "OPENCV", c2w: np.ndarray | None = None) -> np.ndarray:
    c2w = rig() if c2w is None else c2w
    names = write_images(root / "images")
    params = [FX, FY, CX, CY, *DIST] if model in ("OPENCV", "OPENCV_FISHEYE") else [FX, FY, CX, CY]
    cameras = {1: ColmapCamera(1, model, W, H, np.array(params))}
    images = {}
    for i, (cam, name) in enumerate(zip(c2w, names)):
        R, t = cam[:, :3].T, -cam[:, :3].T @ cam[:, 3]
        images[i + 1] = ColmapImage(i + 1, rotmat_to_qvec(R), t, 1, name, np.zeros((0, 2)), np.zeros(0, dtype=np.int64))
    points = np.random.default_rng(1).normal(size=(20, 3)) * 0.5 + [1, 2, 3]
    write_model(
        ColmapModel(cameras, images, points, np.zeros((20, 3), np.uint8), np.zeros(20), np.arange(1, 21)),
        root / "sparse" / "0",
        binary=binary,
    )
    return c2w


def make_nerfstudio(root: Path, *, per_frame: bool = False) -> np.ndarray:
    c2w = rig()
    names = write_images(root / "images")
    intrinsics = {"fl_x": FX, "fl_y": FY, "cx": CX, "cy": CY, "w": W, "h": H, "k1": DIST[0], "k2": DIST[1], "p1": DIST[2], "p2": DIST[3]}
    frames = []
    for cam, name in zip(c2w, names):
        gl = np.concatenate([cam * [1, -1, -1, 1], [[0, 0, 0, 1]]])  # OpenCV -> OpenGL: negate the camera's y and z
        frames.append({"file_path": f"images/{name}", "transform_matrix": gl.tolist(), **(intrinsics if per_frame else {})})
    meta = {"camera_model": "OPENCV", "frames": frames, **({} if per_frame else intrinsics)}
    (root / "transforms.json").write_text(json.dumps(meta))
    return c2w


def make_llff(root: Path) -> np.ndarray:
    """LLFF has one focal length, the principal point at the centre and no distortion."""
    c2w = rig()
    write_images(root / "images_4")
    f = FX
    rows = []
    for cam in c2w:
        pose = np.stack([cam[:, 1], cam[:, 0], -cam[:, 2], cam[:, 3], [H * 4, W * 4, f * 4]], axis=-1)  # (down, right, back), hwf of 4x photos
        rows.append(np.concatenate([pose.ravel(), [1.0, 10.0]]))
    np.save(root / "poses_bounds.npy", np.array(rows))
    return c2w


def context(root: Path, **kwargs) -> DatasetContext:
    return DatasetContext(root=root, **kwargs)


# ------------------------------------------------------------------ distortion


def test_distortion_hand_computed() -> None:
    # x = 0.1, y = 0.2: r2 = 0.05, radial = 1 + 0.1 * 0.05 + 0.01 * 0.0025 = 1.005025
    # x' = 0.1 * 1.005025 + 2 * 0.01 * 0.02 + 0.02 * (0.05 + 0.02) = 0.1005025 + 0.0004 + 0.0014 = 0.1023025
    # y' = 0.2 * 1.005025 + 0.01 * (0.05 + 0.08) + 2 * 0.02 * 0.02 = 0.201005 + 0.0013 + 0.0008 = 0.203105
    out = distort(torch.tensor([[0.1, 0.2]], dtype=torch.float64), torch.tensor([[0.1, 0.01, 0.01, 0.02]], dtype=torch.float64))
    assert torch.allclose(out, torch.tensor([[0.1023025, 0.203105]], dtype=torch.float64), atol=1e-12)


def test_undistort_inverts_distort_over_a_phone_image() -> None:
    # instant-ngp's fox: a phone lens; corners of a 1080x1920 image at fx ~ 1375
    dist = torch.tensor([[0.0578421, -0.0805099, -0.000980296, 0.00015575]], dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(torch.linspace(-0.4, 0.4, 21), torch.linspace(-0.7, 0.7, 21), indexing="ij"), -1).reshape(-1, 2).double()
    back = distort(undistort(grid, dist.expand(len(grid), 4)), dist.expand(len(grid), 4))
    assert (back - grid).abs().max() < 1e-9


def test_rays_of_distorted_cameras_hit_opencvs_projection() -> None:
    """Points towards the image corners, where the lens bends most, projected by OpenCV."""
    c2w = rig()
    corner = np.array([-0.55, -0.42, 1.0])  # undistorted normalised coordinates near the top-left corner
    points = np.stack([cam[:, :3] @ (4 * corner) + cam[:, 3] for cam in c2w])
    pixels = np.stack([project(c2w[i : i + 1], points[i])[0] for i in range(N)])
    assert (pixels[:, 0] < 10).all() and (pixels[:, 1] < 8).all()
    K = torch.tensor([[FX, 0, CX], [0, FY, CY], [0, 0, 1.0]]).expand(N, 3, 3)
    cams = Cameras(torch.from_numpy(c2w).float(), K, W, H, torch.tensor(DIST).expand(N, 4))
    o, d = generate_rays(cams, torch.arange(N), torch.from_numpy(pixels).float())
    assert _miss_many(o, d, points).max() < 1e-5
    pinhole = Cameras(cams.c2w, K, W, H)  # ignoring the distortion misses by far more
    o, d = generate_rays(pinhole, torch.arange(N), torch.from_numpy(pixels).float())
    assert _miss_many(o, d, points).min() > 1e-3


def test_rays_are_differentiable_through_the_undistortion() -> None:
    c2w = rig()
    K = torch.tensor([[FX, 0, CX], [0, FY, CY], [0, 0, 1.0]]).expand(N, 3, 3)
    cams = Cameras(torch.from_numpy(c2w).double(), K.double(), W, H, torch.tensor(DIST).double().expand(N, 4))
    xy = torch.tensor([[5.0, 7.0], [40.0, 30.0]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p: generate_rays(cams, torch.tensor([0, 3]), p)[1], (xy,))


def _miss(o: torch.Tensor, d: torch.Tensor, point: np.ndarray) -> torch.Tensor:
    """Distance from ``point`` to each ray, relative to the distance along it."""
    v = torch.as_tensor(point, dtype=o.dtype) - o
    along = (v * d).sum(-1, keepdim=True)
    return (v - along * d).norm(dim=-1) / along[:, 0]


# ------------------------------------------------------------------ every format reads the same cameras

FORMATS = {
    "colmap-bin": ("colmap", lambda r: make_colmap(r, binary=True), True),
    "colmap-txt": ("colmap", lambda r: make_colmap(r, binary=False), True),
    "nerfstudio": ("nerfstudio", lambda r: make_nerfstudio(r), True),
    "nerfstudio-per-frame": ("nerfstudio", lambda r: make_nerfstudio(r, per_frame=True), True),
    "llff": ("llff", make_llff, False),
}


@pytest.mark.parametrize("fixture", list(FORMATS))
def test_a_known_point_projects_to_the_same_pixel_under_every_format(tmp_path: Path, fixture: str) -> None:
    name, make, distorted = FORMATS[fixture]
    c2w = make(tmp_path)
    found = [n for n, _ in detect_formats(tmp_path)]
    assert found[0] == name
    fmt, dataset = open_dataset(tmp_path, "auto", context(tmp_path))
    assert fmt == name and dataset.splits() == ["train", "test"]
    splits = {s: dataset.load(s) for s in ("train", "test")}
    assert [Path(p).name for p in splits["test"].paths] == ["img_00.png", "img_08.png"]  # every 8th, from 0
    assert len(splits["train"].paths) == N - 2
    expected = project(c2w, POINT, DIST if distorted else (0, 0, 0, 0))
    if not distorted:  # LLFF's intrinsics: one focal, principal point at the centre
        K = np.array([[FX, 0, W / 2], [0, FX, H / 2], [0, 0, 1.0]])
        expected = np.array([(K @ (cam[:, :3].T @ (POINT - cam[:, 3])))[:2] / (cam[:, :3].T @ (POINT - cam[:, 3]))[2] for cam in c2w])
    for split, cams_index in (("train", [i for i in range(N) if i % 8]), ("test", [0, 8])):
        cams = splits[split].cameras
        assert (cams.width, cams.height) == (W, H) and (cams.dist is not None) == distorted
        o, d = generate_rays(cams, torch.arange(len(cams)), torch.from_numpy(expected[cams_index]).float())
        assert _miss(o, d, POINT).max() < 2e-4, split


@pytest.mark.parametrize("fixture", ["colmap-bin", "nerfstudio", "llff"])
def test_the_engine_normalises_every_format_into_the_same_frame(tmp_path: Path, fixture: str) -> None:
    """After normalisation the ring is upright (+z), centred on the point it looks at, inside [-1, 1]^3,
    and the known point still projects where it did."""
    _, make, _ = FORMATS[fixture]
    c2w = make(tmp_path)
    task = SceneTask(DataConfig(path=str(tmp_path)), RenderConfig(grid_resolution=16), torch.device("cpu"))
    cams = task.split("train").cameras
    centres = cams.c2w[:, :, 3].double()
    assert centres.abs().max() == pytest.approx(1.0, abs=1e-5)
    up = -cams.c2w[:, :, 1].double().mean(0)
    assert torch.allclose(up / up.norm(), torch.tensor([0, 0, 1.0], dtype=torch.float64), atol=1e-5)
    centre = task.transform.apply_points(np.array([1.0, 2.0, 3.0]))  # the point the ring looks at
    assert np.abs(centre).max() < 1e-4
    point = task.transform.apply_points(POINT)
    pixels = project(c2w, POINT, DIST if fixture != "llff" else (0, 0, 0, 0))
    if fixture == "llff":
        K = np.array([[FX, 0, W / 2], [0, FX, H / 2], [0, 0, 1.0]])
        pixels = np.array([(K @ (cam[:, :3].T @ (POINT - cam[:, 3])))[:2] / (cam[:, :3].T @ (POINT - cam[:, 3]))[2] for cam in c2w])
    train = [i for i in range(N) if i % 8]
    o, d = generate_rays(cams, torch.arange(len(train)), torch.from_numpy(pixels[train]).float())
    assert _miss(o, d, point).max() < 2e-4
    lo, hi = np.array(task.aabb[:3]), np.array(task.aabb[3:])
    assert (lo < point).all() and (point < hi).all()


def test_downscale_reads_the_shrunk_folder_and_scales_intrinsics(tmp_path: Path) -> None:
    make_colmap(tmp_path)
    write_images(tmp_path / "images_2", size=(W // 2, H // 2))
    split = open_dataset(tmp_path, "auto", context(tmp_path, downscale=2))[1].load("train")
    assert all("images_2" in p for p in split.paths)
    assert (split.cameras.width, split.cameras.height) == (W // 2, H // 2)
    assert torch.allclose(split.cameras.K[0], torch.tensor([[FX / 2, 0, CX / 2], [0, FY / 2, CY / 2], [0, 0, 1]]))
    # without the shrunk copies, the same intrinsics come from shrinking in memory
    (tmp_path / "images_2").rename(tmp_path / "other")
    again = open_dataset(tmp_path, "auto", context(tmp_path, downscale=2))[1].load("train")
    assert all("/images/" in p for p in again.paths) and torch.allclose(again.cameras.K, split.cameras.K)


def test_holdout_every_and_nerfstudio_split_lists(tmp_path: Path) -> None:
    make_nerfstudio(tmp_path)
    dataset = open_dataset(tmp_path, "auto", context(tmp_path, holdout_every=3))[1]
    assert [Path(p).name for p in dataset.load("test").paths] == ["img_00.png", "img_03.png", "img_06.png", "img_09.png"]
    meta = json.loads((tmp_path / "transforms.json").read_text())
    meta["train_filenames"] = [f"images/img_{i:02d}.png" for i in range(1, N)]
    meta["test_filenames"] = ["images/img_00.png"]
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    dataset = open_dataset(tmp_path, "auto", context(tmp_path))[1]
    assert [Path(p).name for p in dataset.load("test").paths] == ["img_00.png"] and len(dataset.load("train").paths) == N - 1


def test_format_can_be_forced_and_priority_decides(tmp_path: Path) -> None:
    make_colmap(tmp_path)
    make_nerfstudio(tmp_path)  # process-data writes both: transforms.json wins
    assert [n for n, _ in detect_formats(tmp_path)] == ["nerfstudio", "colmap"]
    assert open_dataset(tmp_path, "colmap", context(tmp_path))[0] == "colmap"
    with pytest.raises(NfplugError, match=r"--data.format: unknown dataset format 'colmapp'.*Did you mean 'colmap'"):
        open_dataset(tmp_path, "colmapp", context(tmp_path))


# ------------------------------------------------------------------ normalisation maths


def test_rotation_between_and_focus_point_by_hand() -> None:
    R = rotation_between(np.array([0.0, -1.0, 0.0]), np.array([0.0, 0.0, 1.0]))  # -y up -> +z: -90 degrees about x
    assert np.allclose(R, [[1, 0, 0], [0, 0, 1], [0, -1, 0]])
    assert np.allclose(rotation_between(np.array([0, 0, -1.0]), np.array([0, 0, 1.0])) @ [0, 0, -1.0], [0, 0, 1])
    # two cameras at (+-2, 0, 0) looking at the origin, a third at (0, 3, 1) looking along -y: the axes pass
    # through the origin and (0, y, 1); the least-squares point is (0, 0, 1/3)
    c2w = look_at(torch.tensor([[2.0, 0, 0], [-2.0, 0, 0]]).double(), torch.zeros(3).double(), torch.tensor([0, 0, 1.0]).double()).numpy()
    third = look_at(torch.tensor([[0, 3.0, 1.0]]).double(), torch.tensor([0, 0, 1.0]).double(), torch.tensor([0, 0, 1.0]).double()).numpy()
    assert np.allclose(focus_point(np.concatenate([c2w, third])), [0, 0, 1 / 3])
    parallel = look_at(torch.tensor([[0, 0, 0.0], [1, 0, 0]]).double(), torch.tensor([[0, 5, 0.0], [1, 5, 0]]).double(), torch.tensor([0, 0, 1.0]).double()).numpy()
    assert focus_point(parallel) is None  # forward-facing: no meeting point, the mean centre is used


def test_normalisation_round_trips_through_json(tmp_path: Path) -> None:
    t = fit_normalization(rig())
    back = SceneTransform.from_json(json.loads(json.dumps(t.to_json())), tmp_path / "scene.json")
    assert np.allclose(back.apply_points(POINT), t.apply_points(POINT))
    bad = {"rotation": [[2, 0, 0], [0, 1, 0], [0, 0, 1]], "translation": [0, 0, 0], "scale": 1}
    with pytest.raises(NfplugError, match=r"bad.json: 'rotation' is not a rotation"):
        SceneTransform.from_json(bad, tmp_path / "bad.json")


def test_render_bounds_from_points_and_from_near_far() -> None:
    cams = Cameras(torch.from_numpy(rig()).float(), torch.tensor([[FX, 0, CX], [0, FY, CY], [0, 0, 1.0]]).expand(N, 3, 3), W, H)
    t = SceneTransform.identity()
    points = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (1000, 3)))
    aabb, near, far = render_bounds(SceneHints(points=points), t, cams)
    assert np.allclose(aabb, [-0.96 - 0.192] * 3 + [0.96 + 0.192] * 3, atol=0.02)  # 2-98% of U(-1, 1), padded 10%
    assert 0 < near < far
    aabb, near, far = render_bounds(SceneHints(near=1.0, far=2.0), t, cams)
    assert near == pytest.approx(0.9) and far == pytest.approx(2.2)
    assert render_bounds(SceneHints(normalize=False, aabb=(0, 0, 0, 1, 1, 1), near=2.0, far=6.0), t, cams) == ((0, 0, 0, 1, 1, 1), 2.0, 6.0)


# ------------------------------------------------------------------ bad input


def _cli_error(args: list[str], capsys: pytest.CaptureFixture) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("nfplug: error:") and "\n" not in err, err
    return err


def _edit_json(path: Path, edit) -> None:
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


BAD = {
    "transforms: missing w": (make_nerfstudio, lambda r: _edit_json(r / "transforms.json", lambda m: m.pop("w")), r"transforms.json: frame 0: missing key 'w'"),
    "transforms: NaN matrix": (
        make_nerfstudio,
        lambda r: _edit_json(r / "transforms.json", lambda m: m["frames"][2]["transform_matrix"][0].__setitem__(1, float("nan"))),
        r"transforms.json: frame 2: transform_matrix has non-finite values",
    ),
    "transforms: image missing": (make_nerfstudio, lambda r: (r / "images" / "img_03.png").unlink(), r"img_03.png"),
    "transforms: fisheye": (make_nerfstudio, lambda r: _edit_json(r / "transforms.json", lambda m: m.update(camera_model="OPENCV_FISHEYE")), r"camera_model 'OPENCV_FISHEYE' is not supported"),
    "colmap: image listed but missing": (make_colmap, lambda r: (r / "images" / "img_05.png").unlink(), r"sparse/0: image 'img_05.png' \(id 6\) is listed but"),
    "colmap: truncated": (make_colmap, lambda r: (r / "sparse/0/images.bin").write_bytes((r / "sparse/0/images.bin").read_bytes()[:100]), r"images.bin: truncated"),
    "colmap: fisheye": (lambda r: make_colmap(r, model="OPENCV_FISHEYE"), None, r"sparse/0: .*OPENCV_FISHEYE"),
    "llff: wrong shape": (make_llff, lambda r: np.save(r / "poses_bounds.npy", np.zeros((N, 15))), r"poses_bounds.npy: expected an N x 17 array"),
    "llff: count mismatch": (make_llff, lambda r: (r / "images_4" / "img_09.png").unlink(), r"poses_bounds.npy: 10 poses but 9 images"),
    "different sizes": (make_colmap, lambda r: cv2.imwrite(str(r / "images" / "img_04.png"), np.zeros((10, 12, 3), np.uint8)), r"img_04.png: image is 12x10 but img_01.png is 64x48"),
    "too few images": (make_llff, lambda r: np.save(r / "poses_bounds.npy", np.load(r / "poses_bounds.npy")[:1]) or [p.unlink() for p in sorted((r / "images_4").iterdir())[1:]], r"1 image\(s\); a capture needs at least 2"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_captures_give_one_line_errors(tmp_path: Path, case: str, capsys: pytest.CaptureFixture) -> None:
    make, breakage, pattern = BAD[case]
    root = tmp_path / "scene"
    make(root)
    if breakage is not None:
        breakage(root)
    err = _cli_error(["train", "--data", str(root), "--max-steps", "1", "--output", str(tmp_path / "run")], capsys)
    assert _re_search(pattern, err), err
    assert not (tmp_path / "run").exists()


def _re_search(pattern: str, text: str) -> bool:
    import re

    return re.search(pattern, text) is not None


def test_a_folder_in_no_known_format_names_the_formats(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_images(tmp_path / "photos")
    err = _cli_error(["train", "--data", str(tmp_path / "photos"), "--max-steps", "1"], capsys)
    assert "not a scene folder in any known format (blender, colmap, llff, nerfstudio;" in err and "nfplug process-data" in err


def test_bad_data_options(capsys: pytest.CaptureFixture) -> None:
    assert "--data.holdout-every: must be at least 2" in _cli_error(["train", "--data.holdout-every", "1"], capsys)
    assert "--data.format: unknown dataset format 'blendr'" in _cli_error(["train", "--data.format", "blendr"], capsys)


# ------------------------------------------------------------------ real data (skipped without ../shared/data)


@pytest.mark.skipif(not (DATA / "captures" / "cup_360").is_dir(), reason="../shared/data/captures/cup_360 not present")
def test_cup_360_rays_pass_through_colmaps_sparse_points() -> None:
    """Each keypoint's ray passes through the 3D point COLMAP triangulated from it (after normalisation)."""
    task = SceneTask(DataConfig(path=str(DATA / "captures" / "cup_360")), RenderConfig(grid_resolution=16), torch.device("cpu"), load_train=False)
    model = task.dataset.model
    split = task.split("test")
    index_of = {pid: k for k, pid in enumerate(model.point_ids)}
    names = [Path(p).name for p in split.paths]
    errors = []
    for image in model.images.values():
        if image.name not in names:
            continue
        seen = image.point3d_ids >= 0
        xy = torch.from_numpy(image.xys[seen]).float()  # COLMAP's pixel centres are at +0.5 too
        points = task.transform.apply_points(model.points[[index_of[p] for p in image.point3d_ids[seen]]])
        o, d = generate_rays(split.cameras, torch.full((len(xy),), names.index(image.name)), xy)
        errors.append(_miss_many(o, d, points))
    errors = np.concatenate(errors)
    assert np.degrees(np.median(errors)) < 0.1 and np.degrees(np.percentile(errors, 95)) < 0.5


def _miss_many(o: torch.Tensor, d: torch.Tensor, points: np.ndarray) -> np.ndarray:
    v = torch.from_numpy(points).to(o.dtype) - o
    along = (v * d).sum(-1, keepdim=True)
    return ((v - along * d).norm(dim=-1) / along[:, 0]).numpy()


@pytest.mark.skipif(not (DATA / "captures" / "fox").is_dir(), reason="../shared/data/captures/fox not present")
def test_fox_transforms_json_reads_with_distortion() -> None:
    fmt, dataset = open_dataset(DATA / "captures" / "fox", "auto", context(DATA / "captures" / "fox", downscale=8))
    split = dataset.load("test")
    assert fmt == "nerfstudio" and len(split.paths) == math.ceil(67 / 8)
    assert (split.cameras.width, split.cameras.height) == (135, 240)
    assert torch.allclose(split.cameras.dist[0], torch.tensor([0.0578421, -0.0805099, -0.000980296, 0.00015575]))
    assert split.cameras.K[0, 0, 0] == pytest.approx(1375.52 / 8, rel=1e-4)


def test_a_capture_trains_evaluates_and_renders_in_the_frame_it_was_trained_in(tmp_path: Path, monkeypatch, capsys) -> None:
    """Train 3 steps on a COLMAP capture; eval, render and export then read RUN/scene.json, never re-fit."""
    make_colmap(tmp_path / "scene")
    run = tmp_path / "run"
    common = ["--field.log2-hashmap-size", "12", "--render.grid-resolution", "16", "--no-progress"]
    assert main(["train", "--data", str(tmp_path / "scene"), "--max-steps", "3", "--batch-size", "256", "--output", str(run), *common]) == 0
    setup = json.loads((run / "scene.json").read_text())
    assert setup["format"] == "colmap" and len(setup["aabb"]) == 6
    stored = SceneTransform.from_json(setup["normalization"], run / "scene.json")
    assert np.allclose(stored.apply_points(np.array([1.0, 2.0, 3.0])), 0, atol=1e-4)  # centred on what the ring looks at

    import nfplug.training.scene_task as scene_task

    def refit(*args, **kwargs):
        raise AssertionError("a run's frame must come from RUN/scene.json, not from a new fit")

    monkeypatch.setattr(scene_task, "fit_normalization", refit)
    assert main(["eval", str(run)]) == 0
    assert main(["render", str(run), "--frames", "2"]) == 0
    assert main(["export", str(run)]) == 0
    manifest = json.loads((run / "export-stream" / "manifest.json").read_text())
    assert manifest["scene"]["normalization"]["scale"] == pytest.approx(stored.scale)
    assert (run / "renders" / "orbit").is_dir()
    assert setup["background"] == "learned"  # the capture's default, kept for eval and render
    capsys.readouterr()
    _edit_json(run / "scene.json", lambda meta: meta.update(background="purple"))
    assert "scene.json: 'background' must be one of white, black, random, learned, got 'purple'" in _cli_error(["eval", str(run)], capsys)


def test_captures_get_a_multi_level_grid_and_object_scenes_keep_their_box(tmp_path: Path) -> None:
    make_colmap(tmp_path / "cap")
    capture = SceneTask(DataConfig(path=str(tmp_path / "cap")), RenderConfig(grid_resolution=16), torch.device("cpu"))
    assert (capture.levels, capture.cone_angle) == (4, 0.004)
    box, field_box = np.array(capture.aabb), np.array(capture.field_context().aabb)
    assert np.allclose(field_box[3:] - field_box[:3], 8 * (box[3:] - box[:3]))  # the outermost of 4 levels
    centres = capture.split("train").cameras.c2w[:, :, 3].numpy()
    assert (centres >= box[:3] - 1e-6).all() and (centres <= box[3:] + 1e-6).all()  # the base box holds the cameras
    assert capture.far > np.linalg.norm(field_box[3:] - field_box[:3]) / 2  # rays reach the outermost box
    assert capture.renderer.estimator.binaries.shape[0] == 4 and capture.renderer.cone_angle == 0.004
    # What lies beyond the field is learned for captures, and the choice is kept in scene.json.
    assert capture.background_kind == "learned" and capture.learned_background is not None and capture.parameters()
    assert capture.setup()["background"] == "learned"
    white = SceneTask(DataConfig(path=str(tmp_path / "cap"), background="white"), RenderConfig(grid_resolution=16), torch.device("cpu"))
    assert white.background_kind == "white" and white.learned_background is None and not white.parameters()

    demo = SceneTask(DataConfig(path="demo"), RenderConfig(grid_resolution=16), torch.device("cpu"))
    assert (demo.levels, demo.cone_angle, demo.near, demo.far) == (1, 0.0, 2.0, 6.0)
    assert demo.background_kind == "white" and demo.learned_background is None
    assert demo.field_context().aabb == (-1.5, -1.5, -1.5, 1.5, 1.5, 1.5)
    # Object scenes march a pixel's width (within 2 to 3 samples a cell diagonal), captures 2: the
    # demo's pixel is 0.015 of the box, so 16 cells need sqrt(3) / (16 * 0.015) = 7.2 -> 3, 128 cells 0.90 -> 2.
    assert (demo.samples_per_cell, capture.samples_per_cell) == (3.0, 2.0) == (demo.setup()["samples_per_cell"], capture.setup()["samples_per_cell"])
    assert demo.renderer.render_step_size == pytest.approx(math.sqrt(3) * 3 / 16 / 3)
    assert (object_samples_per_cell(0.015, 128), object_samples_per_cell(None, 16)) == (2.0, 2.0)
    assert object_samples_per_cell(4.03 / 277.8 / 3, 128) == pytest.approx(2.80, abs=0.01)  # lego at 200x200

    make_llff(tmp_path / "ff")
    forward = SceneTask(DataConfig(path=str(tmp_path / "ff")), RenderConfig(grid_resolution=16), torch.device("cpu"))
    assert (forward.layout, forward.levels) == ("360", 4)  # LLFF's ring converges: 360 (side by side: the test below)

    options = RenderConfig(grid_resolution=16, grid_levels=2, cone_angle=0.0, near=0.05, far=3.0, aabb=(-1, -1, -1, 1, 1, 0.5), samples_per_cell=2.5)
    chosen = SceneTask(DataConfig(path=str(tmp_path / "cap")), options, torch.device("cpu"))
    assert chosen.samples_per_cell == 2.5 and chosen.renderer.render_step_size == pytest.approx(math.sqrt(3) * 2 / 16 / 2.5)
    assert (chosen.levels, chosen.cone_angle, chosen.near, chosen.far, chosen.aabb) == (2, 0.0, 0.05, 3.0, (-1, -1, -1, 1, 1, 0.5))
    assert chosen.field_context().aabb == (-2, -2, -1.75, 2, 2, 1.25)  # twice the box about its centre (z: -0.25 +- 1.5)
    assert chosen.setup()["grid_levels"] == 2 and chosen.setup()["far"] == 3.0


def test_training_pixel_size_hand_case_and_where_it_is_not_defined(tmp_path: Path) -> None:
    """distance to the box's centre / sqrt(fx fy), the median over cameras, over the box's largest
    side: (4 / 200, 6 / 200, 2 / 200) -> 0.02, / 2 -> 0.01."""
    centre = torch.tensor([1.0, 0.0, 0.0])
    eyes = centre + torch.tensor([[0.0, 0.0, 4.0], [0.0, 6.0, 0.0], [2.0, 0.0, 0.0]])
    K = torch.tensor([[[100.0, 0, 8], [0, 400.0, 8], [0, 0, 1]]] * 3)  # sqrt(100 * 400) = 200
    cameras = Cameras(look_at(eyes, centre.expand(3, 3), torch.tensor([1.0, 1.0, 1.0])), K, 16, 16)
    assert training_pixel_size(cameras, (0.0, -0.5, -1.0, 2.0, 0.5, 1.0)) == pytest.approx(0.01)
    demo = SceneTask(DataConfig(path="demo"), RenderConfig(grid_resolution=16), torch.device("cpu"))
    assert demo.field_context().pixel_size == pytest.approx(0.0150, rel=1e-3) == demo.setup()["pixel_size"]
    make_colmap(tmp_path / "cap")
    capture = SceneTask(DataConfig(path=str(tmp_path / "cap")), RenderConfig(grid_resolution=16), torch.device("cpu"))
    assert capture.field_context().pixel_size is None  # content at many distances
    one_level = SceneTask(DataConfig(path=str(tmp_path / "cap")), RenderConfig(grid_resolution=16, grid_levels=1), torch.device("cpu"))
    assert one_level.field_context().pixel_size is None
    two_levels = SceneTask(DataConfig(path="demo"), RenderConfig(grid_resolution=16, grid_levels=2), torch.device("cpu"))
    assert two_levels.field_context().pixel_size is None  # the object's box is no longer the field's


def test_bad_render_options(capsys: pytest.CaptureFixture) -> None:
    assert "--render.far: must be greater than --render.near (2.0)" in _cli_error(["train", "--render.near", "2", "--render.far", "1"], capsys)
    assert "--render.cone-angle" in _cli_error(["train", "--render.cone-angle", "-0.1"], capsys)
    assert "--render.grid-levels" in _cli_error(["train", "--render.grid-levels", "13"], capsys)
    assert "--render.aabb: needs min < max on every axis" in _cli_error(["train", "--render.aabb", "0", "0", "0", "1", "-1", "1"], capsys)


def test_a_capture_whose_cameras_do_not_converge_is_forward_facing(tmp_path: Path) -> None:
    """COLMAP and nerfstudio do not say the layout: cameras side by side looking the same way are
    forward-facing (one grid level, the spiral path); the ring converges and is 360."""
    eye = torch.tensor([[0.3 * i, 0.05 * (i % 3), 0.0] for i in range(N)], dtype=torch.float64)
    side_by_side = look_at(eye, eye + torch.tensor([0.0, 5.0, 0.0], dtype=torch.float64), torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)).numpy()
    make_colmap(tmp_path / "ff", c2w=side_by_side)
    forward = SceneTask(DataConfig(path=str(tmp_path / "ff")), RenderConfig(grid_resolution=16), torch.device("cpu"))
    assert (forward.layout, forward.levels, forward.cone_angle, forward.background_kind) == ("forward-facing", 1, 0.0, "white")
    make_colmap(tmp_path / "ring")
    ring = SceneTask(DataConfig(path=str(tmp_path / "ring")), RenderConfig(grid_resolution=16), torch.device("cpu"))
    assert (ring.layout, ring.levels) == ("360", 4)
