"""nfplug process-data: structure from motion on photos and videos, checked against known cameras.

The known cameras come from a procedural scene rendered here with a small numpy ray caster (the
inside of a room with three boxes, every surface covered in random squares at several scales and
angles, rich in corners for SIFT) and from the LLFF fern scene's ``poses_bounds.npy`` when the
shared data is present. Recovered camera centres are aligned to the true ones with a similarity
(Umeyama), then rotations and centres are compared.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import SHARED_DATA, write_png
from nfplug.cli import main
from nfplug.errors import NfplugError
from nfplug.process_data import (
    ProcessDataArgs,
    _frame_windows,
    camera_intrinsics,
    extract_video_frames,
    opengl_camera_to_world,
    process_data,
    sequential_pairs,
)

FERN = SHARED_DATA / "nerf_llff_data" / "fern"
WIDTH, HEIGHT, FOCAL = 320, 240, 260.0
ROOM = 2.5  # the room is [-ROOM, ROOM]^3
BOXES = [((-0.45, -0.45, -0.45), (0.05, 0.35, 0.05)), ((0.15, -0.45, -0.3), (0.55, -0.05, 0.3)), ((-0.3, -0.45, 0.2), (0.2, -0.15, 0.6))]
"""Boxes (min corner, max corner) near the centre, standing on nothing: y is down in this world."""


# ------------------------------------------------------------------ the procedural scene


def _texture(points: np.ndarray) -> np.ndarray:
    """``[N, 3]`` surface points -> ``[N, 3]`` RGB in [0, 1]: random squares at three scales and angles."""
    rng = np.random.default_rng(7)
    colour = np.zeros(points.shape, dtype=np.float32)
    for frequency, weight in [(3.0, 0.5), (7.0, 0.3), (17.0, 0.2)]:
        table = rng.random((32**3, 3), dtype=np.float32) * weight
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))  # a random rotation: no grid lines shared between scales
        cells = np.floor(points @ (q * frequency).astype(np.float32) + (rng.random(3) * 10).astype(np.float32)).astype(np.int32) & 31
        colour += table[(cells[:, 0] * 32 + cells[:, 1]) * 32 + cells[:, 2]]
    return colour


def _cast(origins: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """Distance along each ray ``[N, 3]`` to the first surface: the boxes or, behind them, the room's walls."""
    with np.errstate(divide="ignore", invalid="ignore"):
        inverse = 1.0 / directions
        t = np.min(np.where(directions > 0, (ROOM - origins) * inverse, (-ROOM - origins) * inverse), axis=1)
        for lo, hi in BOXES:
            t0, t1 = (np.asarray(lo) - origins) * inverse, (np.asarray(hi) - origins) * inverse
            near, far = np.minimum(t0, t1).max(axis=1), np.maximum(t0, t1).min(axis=1)
            hit = (near <= far) & (near > 0)
            t = np.where(hit & (near < t), near, t)
    return t


def render(c2w: np.ndarray, supersample: int = 2) -> np.ndarray:
    """``c2w [4, 4]`` (OpenCV: x right, y down, looking down +z) -> ``[H, W, 3]`` in [0, 1]."""
    s = supersample
    v, u = np.mgrid[0 : HEIGHT * s, 0 : WIDTH * s]
    pixels = np.stack([(u + 0.5) / s - WIDTH / 2, (v + 0.5) / s - HEIGHT / 2, np.full(u.shape, FOCAL)], axis=-1).reshape(-1, 3)
    directions = (pixels / np.linalg.norm(pixels, axis=1, keepdims=True) @ c2w[:3, :3].T).astype(np.float32)
    origins = np.broadcast_to(c2w[:3, 3].astype(np.float32), directions.shape)
    points = origins + _cast(origins, directions)[:, None] * directions
    image = _texture(points).reshape(HEIGHT, s, WIDTH, s, 3).mean(axis=(1, 3))
    return np.clip(image, 0, 1)


def look_at(centre: np.ndarray, target: np.ndarray) -> np.ndarray:
    """OpenCV camera-to-world at ``centre`` looking at ``target``, world y down."""
    forward = (target - centre) / np.linalg.norm(target - centre)
    right = np.cross(forward, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    c2w = np.eye(4)
    c2w[:3, :3] = np.stack([right, down, forward], axis=1)
    c2w[:3, 3] = centre
    return c2w


def arc_cameras(n: int) -> np.ndarray:
    """``[n, 4, 4]`` cameras on a 120-degree arc of radius 1.6 around the boxes, looking at them from
    10 to 40 degrees above, up and down twice along the arc: cameras at one height, all looking
    level, would leave vertical scale and ``fl_y`` ambiguous."""
    azimuths = np.radians(np.linspace(-60, 60, n))
    elevations = np.radians(25 + 15 * np.sin(np.linspace(0, 4 * np.pi, n)))
    centres = 1.6 * np.stack([np.sin(azimuths) * np.cos(elevations), -np.sin(elevations), -np.cos(azimuths) * np.cos(elevations)], axis=1)
    return np.stack([look_at(c, np.array([0.0, -0.1, 0.0])) for c in centres])


# ------------------------------------------------------------------ comparing poses


def umeyama(source: np.ndarray, target: np.ndarray):
    """Similarity ``(s, R, t)`` minimising ``|target - (s R source + t)|^2`` (Umeyama, 1991, eq. 40-42)."""
    mu_s, mu_t = source.mean(0), target.mean(0)
    a, b = source - mu_s, target - mu_t
    u, d, vt = np.linalg.svd(b.T @ a / len(source))
    sign = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    rotation = u @ sign @ vt
    scale = np.trace(np.diag(d) @ sign) / a.var(0).sum()
    return scale, rotation, mu_t - scale * rotation @ mu_s


def pose_errors(recovered_opengl: np.ndarray, true_opencv: np.ndarray):
    """Mean rotation error (degrees), mean centre error (fraction of the true cameras' spread),
    and the similarity; both ``[N, 4, 4]`` camera-to-world."""
    recovered = recovered_opengl.copy()
    recovered[:, :3, 1:3] *= -1  # back to OpenCV axes, like the true cameras
    scale, rotation, shift = umeyama(recovered[:, :3, 3], true_opencv[:, :3, 3])
    centres = scale * recovered[:, :3, 3] @ rotation.T + shift
    spread = np.linalg.norm(true_opencv[:, :3, 3] - true_opencv[:, :3, 3].mean(0), axis=1).max() * 2
    centre_error = np.linalg.norm(centres - true_opencv[:, :3, 3], axis=1).mean() / spread
    relative = np.einsum("ij,njk,nlk->nil", rotation, recovered[:, :3, :3], true_opencv[:, :3, :3])  # R_a R_rec R_true^T
    cosines = np.clip((np.trace(relative, axis1=1, axis2=2) - 1) / 2, -1, 1)
    return float(np.degrees(np.arccos(cosines)).mean()), float(centre_error), (scale, rotation, shift)


def read_transforms(scene: Path):
    meta = json.loads((scene / "transforms.json").read_text())
    names = [Path(f["file_path"]).name for f in meta["frames"]]
    return meta, names, np.array([f["transform_matrix"] for f in meta["frames"]])


def read_ply(path: Path) -> np.ndarray:
    """``[N, 3]`` xyz of a binary little-endian PLY with float x y z, uchar red green blue."""
    data = path.read_bytes()
    header, _, body = data.partition(b"end_header\n")
    assert b"format binary_little_endian" in header and b"property uchar red" in header
    n = int(header.split(b"element vertex ")[1].split()[0])
    vertices = np.frombuffer(body, dtype=[("xyz", "<f4", 3), ("rgb", "u1", 3)], count=n)
    return vertices["xyz"].astype(np.float64)


def surface_distance(points: np.ndarray) -> np.ndarray:
    """Distance of each point to the nearest surface of the procedural scene (walls or box faces)."""
    walls = ROOM - np.abs(points).max(axis=1)
    distances = [np.abs(walls)]
    for lo, hi in BOXES:
        outside = np.maximum(np.maximum(np.asarray(lo) - points, points - np.asarray(hi)), 0)
        inside = np.minimum(points - np.asarray(lo), np.asarray(hi) - points).min(axis=1)
        distances.append(np.where(np.linalg.norm(outside, axis=1) > 0, np.linalg.norm(outside, axis=1), np.abs(inside)))
    return np.min(distances, axis=0)


# ------------------------------------------------------------------ fixtures


N_VIEWS = 20


@pytest.fixture(scope="module")
def views(tmp_path_factory):
    """The procedural views as PNGs: (folder, true cameras [N, 4, 4] OpenCV c2w, images)."""
    folder = tmp_path_factory.mktemp("photos")
    cameras = arc_cameras(N_VIEWS)
    with ThreadPoolExecutor(max_workers=2) as pool:  # numpy releases the GIL
        images = list(pool.map(render, cameras))
    for i, image in enumerate(images):
        write_png(folder / f"view_{i:02d}.png", image)
    return folder, cameras, images


@pytest.fixture(scope="module")
def scene(views, tmp_path_factory):
    folder, _, _ = views
    out = tmp_path_factory.mktemp("scenes") / "procedural"
    return process_data(ProcessDataArgs(input=str(folder), output=str(out)))


# ------------------------------------------------------------------ structure from motion, end to end


def test_procedural_scene_poses_match_the_true_cameras(views, scene):
    _, cameras, _ = views
    meta, names, recovered = read_transforms(scene)
    assert names == sorted(f"view_{i:02d}.png" for i in range(N_VIEWS))
    assert meta["registered"] == meta["given"] == N_VIEWS and meta["camera_model"] == "OPENCV"
    rotation_error, centre_error, (scale, rotation, shift) = pose_errors(recovered, cameras)
    print(f"procedural: rotation error {rotation_error:.3f} deg, centre error {100 * centre_error:.3f}% of the camera spread")
    assert rotation_error < 0.5
    assert centre_error < 0.01
    # The intrinsics of the renders: focal length within 1%, principal point within 2 pixels.
    assert meta["fl_x"] == pytest.approx(FOCAL, rel=0.01) and meta["fl_y"] == pytest.approx(FOCAL, rel=0.01)
    assert abs(meta["cx"] - WIDTH / 2) < 2 and abs(meta["cy"] - HEIGHT / 2) < 2
    assert meta["mean_reprojection_error"] < 1.0
    # The sparse points are in the frame of the cameras: aligned, they lie on the scene's surfaces.
    points = scale * read_ply(scene / "sparse_pc.ply") @ rotation.T + shift
    assert len(points) > 1000
    assert np.median(surface_distance(points)) < 0.05  # 1% of the room; measured 0.018


def test_a_wrong_convention_would_fail(views, scene):
    """The checks above tell the conventions apart: OpenCV axes or an uninverted matrix fail."""
    _, cameras, _ = views
    _, _, recovered = read_transforms(scene)
    opencv = recovered.copy()
    opencv[:, :3, 1:3] *= -1  # as if transform_matrix had been written without the flip
    assert pose_errors(opencv, cameras)[0] > 90
    world_to_camera = np.linalg.inv(recovered)  # as if it had not been inverted
    rotation_error, centre_error, _ = pose_errors(world_to_camera, cameras)
    assert rotation_error > 5 or centre_error > 0.05


def test_scene_folder_layout(views, scene):
    _, _, images = views
    names = sorted(p.name for p in (scene / "images").iterdir())
    assert len(names) == N_VIEWS
    source = views[0] / names[0]
    assert (scene / "images" / names[0]).read_bytes() == source.read_bytes()  # copied, not re-encoded
    for factor in (2, 4, 8):
        assert sorted(p.name for p in (scene / f"images_{factor}").iterdir()) == names
        small = cv2.imread(str(scene / f"images_{factor}" / names[0]))
        assert small.shape[:2] == (HEIGHT // factor, WIDTH // factor)
        expected = cv2.resize(cv2.imread(str(source)), (WIDTH // factor, HEIGHT // factor), interpolation=cv2.INTER_AREA)
        assert np.abs(small.astype(int) - expected).max() <= 1
    for part in ("cameras.bin", "images.bin", "points3D.bin"):
        assert (scene / "colmap" / "sparse" / "0" / part).is_file()
    assert (scene / "colmap" / "database.db").is_file()
    assert not list(scene.parent.glob("*.tmp-*"))


def test_several_cameras_put_intrinsics_on_each_frame(views, tmp_path):
    """Photos of two sizes with --no-single-camera: a camera each, intrinsics per frame; --overwrite
    replaces what was in the output folder."""
    folder, cameras, images = views
    photos = tmp_path / "photos"
    photos.mkdir()
    small = set(range(1, N_VIEWS, 3))  # every third view shrunk to 256x192: the same camera, zoomed out
    for i, image in enumerate(images):
        write_png(photos / f"view_{i:02d}.png", cv2.resize(image, (256, 192), interpolation=cv2.INTER_AREA) if i in small else image)
    out = tmp_path / "scene"
    out.mkdir()
    (out / "old.txt").write_text("an earlier scene")
    args = ProcessDataArgs(input=str(photos), output=str(out), single_camera=False, camera_model="SIMPLE_RADIAL", overwrite=True)
    process_data(args)
    assert not (out / "old.txt").exists() and not list(tmp_path.glob("scene.*-*"))
    meta, names, recovered = read_transforms(out)
    assert meta["registered"] == N_VIEWS and "fl_x" not in meta
    for i, frame in enumerate(meta["frames"]):
        scale = 0.8 if i in small else 1.0
        assert (frame["w"], frame["h"]) == (round(WIDTH * scale), round(HEIGHT * scale))
        assert frame["fl_x"] == frame["fl_y"] == pytest.approx(FOCAL * scale, rel=0.02)
        assert set(frame) >= {"cx", "cy", "k1"} and "k2" not in frame
    rotation_error, centre_error, _ = pose_errors(recovered, cameras)
    print(f"several cameras: rotation error {rotation_error:.3f} deg, centre error {100 * centre_error:.3f}%")
    assert rotation_error < 0.5 and centre_error < 0.01


def test_pycolmap_reads_the_model_back(scene):
    pycolmap = pytest.importorskip("pycolmap")
    model = pycolmap.Reconstruction(scene / "colmap" / "sparse" / "0")
    meta, names, recovered = read_transforms(scene)
    assert model.num_reg_images() == meta["registered"]
    for frame in meta["frames"]:
        image = model.images[frame["colmap_im_id"]]
        assert f"images/{image.name}" == frame["file_path"]
        assert np.allclose(np.array(frame["transform_matrix"])[:3, 3], image.projection_center())


# ------------------------------------------------------------------ real photos: LLFF fern


def llff_cameras(poses_bounds: np.ndarray) -> np.ndarray:
    """LLFF ``[N, 17]`` (3x5 [R|t|hwf], rotation columns down, right, backwards) -> OpenCV c2w ``[N, 4, 4]``."""
    poses = poses_bounds[:, :15].reshape(-1, 3, 5)
    c2w = np.tile(np.eye(4), (len(poses), 1, 1))
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2] = poses[:, :, 1], poses[:, :, 0], -poses[:, :, 2]
    c2w[:, :3, 3] = poses[:, :, 3]
    return c2w


@pytest.mark.skipif(not (FERN / "poses_bounds.npy").is_file(), reason=f"real data not found at {FERN}")
def test_fern_poses_match_llff(tmp_path):
    scene = process_data(ProcessDataArgs(input=str(FERN / "images_8"), output=str(tmp_path / "fern")))
    meta, names, recovered = read_transforms(scene)
    assert meta["registered"] == meta["given"] == 20
    true = llff_cameras(np.load(FERN / "poses_bounds.npy"))
    order = [sorted(p.name for p in (FERN / "images_8").iterdir()).index(name) for name in names]
    rotation_error, centre_error, _ = pose_errors(recovered, true[order])
    print(f"fern: rotation error {rotation_error:.3f} deg, centre error {100 * centre_error:.2f}% of the camera spread")
    assert rotation_error < 1.0
    assert centre_error < 0.03


# ------------------------------------------------------------------ video


def test_video_frames_are_sampled_and_registered(views, tmp_path):
    imageio = pytest.importorskip("imageio.v2")
    _, _, images = views
    video = tmp_path / "orbit.mp4"
    frames = [(image * 255).astype(np.uint8) for image in images for _ in range(3)]
    imageio.mimwrite(video, frames, fps=10, codec="libx264", quality=9, macro_block_size=16)
    scene = process_data(ProcessDataArgs(input=str(video), output=str(tmp_path / "scene"), num_frames=N_VIEWS))
    written = sorted(p.name for p in (scene / "images").iterdir())
    assert written == [f"frame_{i:05d}.png" for i in range(1, N_VIEWS + 1)]
    meta, names, _ = read_transforms(scene)
    assert meta["registered"] == meta["given"] == N_VIEWS and names == written
    assert len((scene / "colmap" / "pairs.txt").read_text().splitlines()) == len(sequential_pairs(N_VIEWS))


def test_a_blurry_frame_gives_way_to_a_sharp_neighbour(views, tmp_path, capsys):
    imageio = pytest.importorskip("imageio.v2")
    base = (views[2][0] * 255).astype(np.uint8)
    frames = [np.roll(base, 8 * i, axis=1) for i in range(9)]  # 3 stretches of 3 frames, centres 1, 4, 7
    frames[4] = cv2.GaussianBlur(frames[4], (0, 0), 3)  # the second centre is motion-blurred
    video = tmp_path / "shaky.mp4"
    imageio.mimwrite(video, frames, fps=10, codec="libx264", quality=10, macro_block_size=16)
    (tmp_path / "scene" / "images").mkdir(parents=True)
    names = extract_video_frames(video, tmp_path / "scene", 3)
    assert names == ["frame_00001.png", "frame_00002.png", "frame_00003.png"]
    assert "3 of 9 sampled (1 blurry skipped)" in capsys.readouterr().out
    written = [cv2.imread(str(tmp_path / "scene" / "images" / name))[..., ::-1].astype(float) for name in names]
    nearest = [int(np.argmin([np.abs(w - f).mean() for f in frames])) for w in written]
    assert nearest[0] == 1 and nearest[1] in (3, 5) and nearest[2] == 7  # sharp centres stay


def test_frame_windows_are_even_with_the_centre_first():
    assert _frame_windows(10, 3) == [(1, 0, 2), (4, 3, 5), (8, 6, 9)]
    assert _frame_windows(5, 10) == [(0,), (1,), (2,), (3,), (4,)]  # fewer frames than asked: all of them
    windows = _frame_windows(360, 120)
    assert len(windows) == 120 and all(w[0] == 3 * k + 1 for k, w in enumerate(windows))


def test_sequential_pairs():
    pairs = set(sequential_pairs(30))  # keyframes every 2nd image (at most 20)
    assert {(0, 1), (3, 13), (1, 17), (0, 28), (2, 26)} <= pairs  # 10 apart, 16 apart, keyframe pairs
    assert (1, 12) not in pairs and (3, 14) not in pairs  # 11 apart, not both keyframes
    assert all(i < j for i, j in pairs)
    assert len(sequential_pairs(20)) == 190  # 20 images are all keyframes: every pair
    assert len(sequential_pairs(3)) == 3


# ------------------------------------------------------------------ conventions


def test_camera_intrinsics_for_each_model():
    pycolmap = pytest.importorskip("pycolmap")

    def camera(model, params):
        return pycolmap.Camera(model=model, width=64, height=48, params=params)

    base = {"w": 64, "h": 48, "cx": 32.0, "cy": 24.0}
    assert camera_intrinsics(camera("SIMPLE_PINHOLE", [50, 32, 24])) == {**base, "fl_x": 50.0, "fl_y": 50.0}
    assert camera_intrinsics(camera("PINHOLE", [50, 51, 32, 24])) == {**base, "fl_x": 50.0, "fl_y": 51.0}
    assert camera_intrinsics(camera("SIMPLE_RADIAL", [50, 32, 24, 0.1])) == {**base, "fl_x": 50.0, "fl_y": 50.0, "k1": 0.1}
    assert camera_intrinsics(camera("RADIAL", [50, 32, 24, 0.1, 0.2])) == {**base, "fl_x": 50.0, "fl_y": 50.0, "k1": 0.1, "k2": 0.2}
    opencv = camera_intrinsics(camera("OPENCV", [50, 51, 32, 24, 0.1, 0.2, 0.3, 0.4]))
    assert opencv == {**base, "fl_x": 50.0, "fl_y": 51.0, "k1": 0.1, "k2": 0.2, "p1": 0.3, "p2": 0.4}


def test_opengl_camera_to_world_by_hand():
    # A camera at (1, 2, 3) looking down world +z, COLMAP's x right, y down: w2c = [I | -c].
    c2w = opengl_camera_to_world(np.array([[1.0, 0, 0, -1], [0, 1, 0, -2], [0, 0, 1, -3]]))
    assert np.allclose(c2w, [[1, 0, 0, 1], [0, -1, 0, 2], [0, 0, -1, 3], [0, 0, 0, 1]])


# ------------------------------------------------------------------ bad input


def _run(argv, capsys):
    """``nfplug process-data ARGV`` -> (exit code, stderr)."""
    code = main(["process-data", *map(str, argv)])
    return code, capsys.readouterr().err


def _assert_one_line_error(code, err, *words):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nfplug: error:"), err
    for word in words:
        assert str(word) in lines[0], (word, lines[0])


def _assert_nothing_left(out: Path):
    assert not out.exists()
    assert not list(out.parent.glob(f"{out.name}.tmp-*"))


@pytest.fixture
def three_photos(views, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        write_png(folder / f"p{i}.png", views[2][i])
    return folder


def test_two_photos_are_too_few(views, tmp_path, capsys):
    folder = tmp_path / "two"
    folder.mkdir()
    for i in range(2):
        write_png(folder / f"p{i}.png", views[2][i])
    (folder / "notes.txt").write_text("not a photo")
    code, err = _run([folder, "--output", tmp_path / "out"], capsys)
    _assert_one_line_error(code, err, folder, "at least 3")
    _assert_nothing_left(tmp_path / "out")


def test_corrupt_photo_is_named(three_photos, tmp_path, capsys):
    broken = three_photos / "broken.jpg"
    data = cv2.imencode(".jpg", (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8))[1].tobytes()
    broken.write_bytes(data[: len(data) // 2])  # truncated
    code, err = _run([three_photos, "--output", tmp_path / "out"], capsys)
    _assert_one_line_error(code, err, broken)
    _assert_nothing_left(tmp_path / "out")


def test_photos_of_different_sizes_need_several_cameras(three_photos, tmp_path, capsys):
    odd = three_photos / "p1.png"
    write_png(odd, cv2.resize(cv2.imread(str(odd))[..., ::-1] / 255.0, (300, 200)))
    code, err = _run([three_photos, "--output", tmp_path / "out"], capsys)
    _assert_one_line_error(code, err, odd, "300x200", "320x240", "--no-single-camera")
    _assert_nothing_left(tmp_path / "out")


def test_unreadable_video_is_named(tmp_path, capsys):
    clip = tmp_path / "clip.mp4"
    clip.write_text("this is not a video\n")
    code, err = _run([clip, "--output", tmp_path / "out"], capsys)
    _assert_one_line_error(code, err, clip, "video")
    _assert_nothing_left(tmp_path / "out")


def test_missing_input_is_named(tmp_path, capsys):
    code, err = _run([tmp_path / "nowhere", "--output", tmp_path / "out"], capsys)
    _assert_one_line_error(code, err, tmp_path / "nowhere", "no such file or folder")
    _assert_nothing_left(tmp_path / "out")


def test_existing_output_needs_overwrite(three_photos, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, err = _run([three_photos, "--output", out], capsys)
    _assert_one_line_error(code, err, "--output", out, "--overwrite")
    assert (out / "keep.txt").read_text() == "mine"
    assert not list(tmp_path.glob("out.tmp-*"))


def test_output_must_not_hold_the_input(three_photos, capsys):
    code, err = _run([three_photos, "--output", three_photos.parent, "--overwrite"], capsys)
    _assert_one_line_error(code, err, "--output", "holds the input")
    assert len(list(three_photos.iterdir())) == 3


@pytest.mark.parametrize(
    "option, value, words",
    [("--num-frames", "0", ["at least 3"]), ("--max-image-size", "10", ["at least 100"]), ("--min-registered", "1.5", ["between 0 and 1"])],
)
def test_bad_option_values(three_photos, tmp_path, capsys, option, value, words):
    code, err = _run([three_photos, "--output", tmp_path / "out", option, value], capsys)
    _assert_one_line_error(code, err, option, *words)
    _assert_nothing_left(tmp_path / "out")


def test_the_api_raises_nfplug_error(three_photos, tmp_path):
    with pytest.raises(NfplugError, match="^--seed: must be 0 or more, got -1$"):
        process_data(ProcessDataArgs(input=str(three_photos), output=str(tmp_path / "out"), seed=-1))
    _assert_nothing_left(tmp_path / "out")


def test_unrelated_photos_fail_with_numbers_and_leave_nothing(tmp_path, capsys):
    """Pure noise has no matches: no reconstruction, said in one line with a suggestion."""
    folder = tmp_path / "noise"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        write_png(folder / f"n{i}.png", rng.random((120, 160, 3)))
    code, err = _run([folder, "--output", tmp_path / "out"], capsys)
    _assert_one_line_error(code, err, "structure from motion", "3 images", "overlap")
    _assert_nothing_left(tmp_path / "out")


def test_help_shows_the_options():
    result = subprocess.run([sys.executable, "-m", "nfplug.cli", "process-data", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for option in ("--output", "--num-frames", "--matching", "--camera-model", "--no-single-camera", "--max-image-size", "--overwrite", "--min-registered"):
        assert option in result.stdout
