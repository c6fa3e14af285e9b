"""Camera paths for videos (orbit, spiral, interpolate): hand-checked cases, cameras that keep the
scene in view on synthetic and real captures, and ``nfplug render --path`` end to end."""

from __future__ import annotations

import math
import typing
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from nfplug.cli import RenderArgs, main
from nfplug.config import DataConfig, RenderConfig
from nfplug.data.cameras import Cameras, look_at
from nfplug.data.colmap_model import qvec_to_rotmat, rotmat_to_qvec
from nfplug.data.normalize import fit_normalization
from nfplug.rendering.paths import (
    SPLIT_PATHS,
    SYNTHETIC_PATHS,
    camera_path,
    capture_order,
    catmull_rom,
    default_path,
    focus_depth,
    interpolate_path,
    keyframes,
    mean_pose,
    orbit_arc,
    orbit_path,
    slerp,
    spiral_focus,
    spiral_path,
    spiral_radii,
)
from nfplug.rendering.video import even_frame
from nfplug.training.scene_task import SceneTask

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FERN = DATA / "nerf_llff_data" / "fern"
CUP = DATA / "captures" / "cup_360"
W, H = 64, 48
K = torch.tensor([[50.0, 0.0, W / 2], [0.0, 50.0, H / 2], [0.0, 0.0, 1.0]], dtype=torch.float64)
Z = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)


def cameras_at(c2w: torch.Tensor) -> Cameras:
    return Cameras(c2w, K.expand(c2w.shape[0], 3, 3).clone(), W, H)


def project(cameras: Cameras, point) -> tuple[torch.Tensor, torch.Tensor]:
    """-> ``[N]`` depth of ``point`` in front of each camera and ``[N, 2]`` its pixel (pinhole, OpenCV)."""
    c2w, Ks = cameras.c2w.double(), cameras.K.double()
    local = torch.einsum("nji,nj->ni", c2w[:, :, :3], torch.as_tensor(point, dtype=torch.float64) - c2w[:, :, 3])
    pixel = torch.einsum("nij,nj->ni", Ks, local)
    return local[:, 2], pixel[:, :2] / pixel[:, 2:]


def assert_sees(cameras: Cameras, point, what: str) -> None:
    depth, xy = project(cameras, point)
    inside = (depth > 0) & (xy[:, 0] >= 0) & (xy[:, 0] < cameras.width) & (xy[:, 1] >= 0) & (xy[:, 1] < cameras.height)
    assert inside.all(), f"{what}: frames {torch.nonzero(~inside)[:, 0].tolist()} do not see the point (pixels {xy[~inside].tolist()})"


def assert_rotations(c2w: torch.Tensor) -> None:
    R = c2w[:, :, :3].double()
    torch.testing.assert_close(R.transpose(1, 2) @ R, torch.eye(3, dtype=torch.float64).expand_as(R), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(len(R), dtype=torch.float64), atol=1e-5, rtol=0)


def rotation_z(degrees: float) -> torch.Tensor:
    a = math.radians(degrees)
    return torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)


# ---------------------------------------------------------------------- hand-checked


def test_orbit_of_four_frames_around_a_ring_of_cameras() -> None:
    """Four cameras 2 from the origin, 30 degrees up, 90 degrees apart (all around): the full circle."""
    r, up = 2 * math.cos(math.radians(30)), 2 * math.sin(math.radians(30))  # sqrt(3), 1
    eye = torch.tensor([[r, 0.0, up], [0.0, -r, up], [-r, 0.0, up], [0.0, r, up]], dtype=torch.float64)
    path = orbit_path(cameras_at(look_at(eye, torch.zeros(3, dtype=torch.float64), Z)), 4)
    expected = torch.tensor([[r, 0, up], [0, r, up], [-r, 0, up], [0, -r, up]], dtype=torch.float64)
    torch.testing.assert_close(path.c2w[:, :, 3], expected)
    torch.testing.assert_close(path.c2w[:, :, 2], -expected / 2)  # forward: at the origin
    assert (path.c2w[:, 2, 1] < 0).all()  # image "down" points away from +z
    assert_rotations(path.c2w)
    assert path.dist is None and torch.equal(path.K[3], K)


def test_orbit_of_a_partial_capture_sweeps_the_arc_it_covers() -> None:
    """Cameras at azimuths 100, 190 and 160 degrees (a 90-degree arc; the largest gap is 270):
    four frames at 100 + 45 (1 - cos(i 90 degrees)) = 100, 145, 190, 145, never behind the scene."""
    r, up = 2 * math.cos(math.radians(30)), 2 * math.sin(math.radians(30))
    azimuth = torch.tensor([100.0, 190.0, 160.0], dtype=torch.float64).deg2rad()
    eye = torch.stack([r * azimuth.cos(), r * azimuth.sin(), torch.full_like(azimuth, up)], dim=-1)
    path = orbit_path(cameras_at(look_at(eye, torch.zeros(3, dtype=torch.float64), Z)), 4)
    expected = torch.tensor([100.0, 145.0, 190.0, 145.0], dtype=torch.float64).deg2rad()
    centres = path.c2w[:, :, 3].double()
    torch.testing.assert_close(torch.remainder(torch.atan2(centres[:, 1], centres[:, 0]), 2 * math.pi), expected)
    torch.testing.assert_close(centres[:, 2], torch.full((4,), up, dtype=torch.float64))
    torch.testing.assert_close(path.c2w[:, :, 2].double(), -centres / 2)
    assert_rotations(path.c2w)


def test_orbit_arc_across_the_branch_cut_and_the_full_turn_threshold() -> None:
    """The covered arc may straddle +-180 degrees; neighbours up to 90 degrees apart count as all around."""
    start, arc = orbit_arc(torch.tensor([170.0, -170.0, 150.0], dtype=torch.float64).deg2rad())
    assert math.degrees(float(start)) == pytest.approx(150.0) and math.degrees(float(arc)) == pytest.approx(40.0)
    start, arc = orbit_arc(torch.tensor([10.0, 100.0, 190.0, 280.0], dtype=torch.float64).deg2rad())
    assert arc is None and math.degrees(float(start)) == pytest.approx(10.0)
    start, arc = orbit_arc(torch.tensor([10.0, 100.0, 190.0, 279.0], dtype=torch.float64).deg2rad())
    assert math.degrees(float(arc)) == pytest.approx(269.0)


def test_spiral_of_eight_frames_hand_checked() -> None:
    """Parallel cameras looking along +y; near 2, far 8: focus depth 1 / (0.25 / 2 + 0.75 / 8) = 32 / 7."""
    assert focus_depth(2.0, 8.0) == pytest.approx(32 / 7)
    generator = torch.Generator().manual_seed(0)
    eye = torch.rand(12, 3, generator=generator, dtype=torch.float64) * torch.tensor([2.0, 0.2, 1.0]) - torch.tensor([1.0, 0.1, 0.5])
    c2w = look_at(eye, eye + torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64), Z)
    cameras = cameras_at(c2w)
    pose = mean_pose(c2w)
    torch.testing.assert_close(pose[:, :3], c2w[0, :, :3])
    offsets = (eye - eye.mean(0)).abs()  # the mean camera's x, y, z are world x, -z, y
    radii = torch.from_numpy(np.percentile(offsets.numpy(), 90, axis=0))[[0, 2, 1]]
    torch.testing.assert_close(spiral_radii(cameras), radii)

    path = spiral_path(cameras, 8, near=2.0, far=8.0)  # 2 turns: a quarter turn per frame
    focus = eye.mean(0) + torch.tensor([0.0, 32 / 7, 0.0], dtype=torch.float64)
    torch.testing.assert_close(spiral_focus(pose, 2.0, 8.0), focus)
    rx, ry, rz = radii.tolist()
    torch.testing.assert_close(path.c2w[0, :, 3], eye.mean(0) + torch.tensor([rx, 0.0, 0.0], dtype=torch.float64))
    # theta = pi / 2: (0, ry, rz sin(pi / 4)) along (right, down, forward) = (x, -z, y)
    torch.testing.assert_close(path.c2w[1, :, 3], eye.mean(0) + torch.tensor([0.0, rz * math.sqrt(0.5), -ry], dtype=torch.float64))
    depth, xy = project(path, focus)
    assert (depth > 0).all()
    torch.testing.assert_close(xy, torch.tensor([W / 2, H / 2], dtype=torch.float64).expand(8, 2))
    assert (path.c2w[:, 2, 1] < 0).all()  # upright, as the capture: image "down" away from +z
    assert_rotations(path.c2w)


def test_spiral_frames_look_at_the_focus_and_stay_within_the_radii() -> None:
    generator = torch.Generator().manual_seed(1)
    eye = torch.randn(20, 3, generator=generator, dtype=torch.float64) * torch.tensor([0.5, 0.05, 0.3])
    target = eye + torch.tensor([0.0, 5.0, 0.0]) + torch.randn(20, 3, generator=generator, dtype=torch.float64) * 0.3
    cameras = cameras_at(look_at(eye, target, Z))
    path = spiral_path(cameras, 30, near=1.0, far=10.0)
    pose = mean_pose(cameras.c2w)
    offsets = (path.c2w[:, :, 3] - pose[:, 3]) @ pose[:, :3]
    assert (offsets.abs() <= spiral_radii(cameras) + 1e-9).all()
    assert offsets[:, 0].max() > 0.99 * spiral_radii(cameras)[0]  # it does go out that far
    depth, xy = project(path, spiral_focus(pose, 1.0, 10.0))
    assert (depth > 0).all()
    torch.testing.assert_close(xy, torch.tensor([W / 2, H / 2], dtype=torch.float64).expand(30, 2))
    assert path.dist is None


def test_keyframes_round_halves_up() -> None:
    assert keyframes(4, 6) == [0, 2, 3, 5]  # 0, 1.67, 3.33, 5
    assert keyframes(3, 4) == [0, 2, 3]  # 0, 1.5, 3
    assert keyframes(5, 13) == [0, 3, 6, 9, 12]
    assert keyframes(1, 7) == [0]


def test_capture_order_compares_numbers_as_numbers() -> None:
    assert capture_order(["a/10.jpg", "a/2.jpg", "a/1.jpg", "a/IMG_9.jpg"]) == [2, 1, 0, 3]
    assert capture_order(["frame_00010.png", "frame_00002.png"]) == [1, 0]


def test_catmull_rom_on_evenly_spaced_points_of_a_line_is_the_line() -> None:
    points = torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 0.0], [2.0, 4.0, 0.0], [3.0, 6.0, 0.0]], dtype=torch.float64)
    s = torch.tensor([0.0, 0.25, 1.5, 2.9, 3.0], dtype=torch.float64)
    for alpha in (0.0, 0.5):
        torch.testing.assert_close(catmull_rom(points, s, alpha), s[:, None] * points[1])


def test_interpolate_passes_through_every_camera_at_its_keyframe() -> None:
    generator = torch.Generator().manual_seed(2)
    angles = torch.tensor([0.0, 0.3, 0.5, 1.2, 1.3, 2.0], dtype=torch.float64)  # unevenly spaced, as a hand-held capture
    eye = torch.stack([3 * torch.cos(angles), 3 * torch.sin(angles), 0.5 + 0.3 * torch.sin(3 * angles)], dim=-1)
    targets = torch.randn(6, 3, generator=generator, dtype=torch.float64) * 0.3
    cameras = cameras_at(look_at(eye, targets, Z))
    path = interpolate_path(cameras, 23)
    keys = keyframes(6, 23)
    assert keys == [0, 4, 9, 13, 18, 22]
    torch.testing.assert_close(path.c2w[keys], cameras.c2w, atol=1e-5, rtol=0)
    assert_rotations(path.c2w)
    step = (path.c2w[1:, :, 3] - path.c2w[:-1, :, 3]).norm(dim=-1)
    for i in range(5):  # no jumps: the frames between two cameras are spread along the chord between them
        even = (eye[i + 1] - eye[i]).norm() / (keys[i + 1] - keys[i])
        assert step[keys[i] : keys[i + 1]].max() < 1.5 * even
    assert path.dist is None and torch.equal(path.K[5], K)
    fewer = interpolate_path(cameras, 3)  # fewer frames than cameras: spread over the path, ends kept
    torch.testing.assert_close(fewer.c2w[[0, 2]], cameras.c2w[[0, 5]], atol=1e-5, rtol=0)
    assert len(interpolate_path(cameras.subset(torch.tensor([3])), 4)) == 4


def test_slerp_halfway_between_0_and_90_degrees_about_z_is_45() -> None:
    q = torch.from_numpy(np.stack([rotmat_to_qvec(rotation_z(0).numpy()), rotmat_to_qvec(rotation_z(90).numpy())]))
    torch.testing.assert_close(q[1], torch.tensor([math.sqrt(0.5), 0, 0, math.sqrt(0.5)], dtype=torch.float64))
    half = slerp(q[:1], q[1:], torch.tensor([0.5], dtype=torch.float64))
    torch.testing.assert_close(torch.from_numpy(qvec_to_rotmat(half[0].numpy())), rotation_z(45))
    quarter = slerp(q[:1], q[1:], torch.tensor([0.25], dtype=torch.float64))
    torch.testing.assert_close(torch.from_numpy(qvec_to_rotmat(quarter[0].numpy())), rotation_z(22.5))
    # the shorter way round: -q is the same rotation as q
    other_sign = slerp(q[:1], -q[1:], torch.tensor([0.5], dtype=torch.float64))
    torch.testing.assert_close(torch.from_numpy(qvec_to_rotmat(other_sign[0].numpy())), rotation_z(45))


# ------------------------------------------------------------- cameras look at the scene


def arc_capture() -> tuple[Cameras, np.ndarray]:
    """Cameras on a third of a circle around a cluster of points, in an arbitrary world frame
    (up is -y, centre (1, 2, 3)), brought into the canonical frame as the engine does."""
    rng = np.random.default_rng(4)
    centre = np.array([1.0, 2.0, 3.0])
    points = centre + rng.normal(size=(200, 3)) * 0.3
    angles = np.linspace(0.2, 0.2 + 2 * np.pi / 3, 15)
    radius = 4 + 0.3 * rng.uniform(-1, 1, 15)
    eye = np.stack([radius * np.cos(angles), -1.5 + 0.3 * np.sin(2 * angles), radius * np.sin(angles)], axis=-1) + centre
    aim = centre + rng.normal(size=(15, 3)) * 0.1
    c2w = look_at(torch.from_numpy(eye), torch.from_numpy(aim), torch.tensor([0.0, -1.0, 0.0], dtype=torch.float64))
    transform = fit_normalization(c2w.numpy())
    return cameras_at(transform.apply_c2w(c2w)), transform.apply_points(points)


def forward_capture() -> tuple[Cameras, np.ndarray, float, float]:
    """LLFF-like: 20 nearly parallel cameras on a plane, points 3 to 6 in front of them; near and far
    are the points' depth range padded as LLFF's loader pads ``poses_bounds``."""
    rng = np.random.default_rng(5)
    grid = np.stack(np.meshgrid(np.linspace(-1, 1, 5), np.linspace(-0.5, 0.5, 4)), -1).reshape(-1, 2)
    eye = np.stack([grid[:, 0], -grid[:, 1], rng.uniform(-0.1, 0.1, 20)], axis=-1)  # world: x right, y up, z back
    aim = eye + np.array([0.0, 0.0, -5.0]) + rng.normal(size=(20, 3)) * 0.2
    c2w = look_at(torch.from_numpy(eye), torch.from_numpy(aim), torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    points = np.stack([rng.uniform(-1.5, 1.5, 300), rng.uniform(-1, 1, 300), -rng.uniform(3, 6, 300)], axis=-1)
    transform = fit_normalization(c2w.numpy())
    near, far = 0.9 * 3 * transform.scale, 1.1 * 6.2 * transform.scale
    return cameras_at(transform.apply_c2w(c2w)), transform.apply_points(points), near, far


@pytest.mark.parametrize("name", ["orbit", "interpolate"])
def test_paths_around_a_partial_arc_see_the_scene(name: str) -> None:
    cameras, points = arc_capture()
    assert np.linalg.norm(points.mean(0)) < 0.2  # the engine centred the frame on what the arc looks at
    path = orbit_path(cameras, 24) if name == "orbit" else interpolate_path(cameras, 40)
    assert_sees(path, points.mean(0), name)
    assert_rotations(path.c2w)


@pytest.mark.parametrize("name", ["spiral", "interpolate"])
def test_paths_of_a_forward_facing_capture_see_the_scene(name: str) -> None:
    cameras, points, near, far = forward_capture()
    assert_sees(cameras, points.mean(0), "the capture itself")
    path = spiral_path(cameras, 40, near, far) if name == "spiral" else interpolate_path(cameras, 40)
    assert_sees(path, points.mean(0), name)


def real_task(path: Path, **data) -> SceneTask:
    return SceneTask(DataConfig(path=str(path), **data), RenderConfig(grid_resolution=16), torch.device("cpu"), load_train=True)


@pytest.mark.skipif(not (FERN / "poses_bounds.npy").is_file(), reason=f"{FERN} not present")
def test_fern_spiral_and_interpolate_see_the_focus_point() -> None:
    """Fern ships no sparse points: the point LLFF's spiral looks at, at the focal depth on the mean axis."""
    task = real_task(FERN)
    assert task.layout == "forward-facing" and default_path(task.layout) == "spiral"
    focus = spiral_focus(mean_pose(task.split("train").cameras.c2w.double()), *task.depth_bounds)
    for name in ("spiral", "interpolate"):
        path = camera_path(task, name, 30)
        assert len(path) == 30 and path.dist is None
        assert_sees(path, focus, f"fern {name}")


@pytest.mark.skipif(not (CUP / "sparse").is_dir(), reason=f"{CUP} not present")
def test_cup_360_orbit_and_interpolate_see_the_points_median() -> None:
    """Photos 1.jpg ... 80.jpg: in plain name order (10, 11, ..., 19, 2, 20, ...) the path would
    jump across the capture and lose the cup; in capture order it keeps it in view."""
    task = real_task(CUP, downscale=4)
    points = task.transform.apply_points(task.dataset.hints().points.double().numpy())
    median = np.median(points, axis=0)
    assert task.layout == "360"
    for name, frames in (("orbit", 30), ("interpolate", 30), ("interpolate", 120)):  # 120: between photos 156 degrees apart too
        assert_sees(camera_path(task, name, frames), median, f"cup_360 {name} ({frames} frames)")


def test_interpolate_looking_at_the_centre_stays_upright_between_rolled_photos() -> None:
    """A 360 capture with some photos held upside down: slerp turns through views past the scene;
    looking at the centre, every frame faces the origin with image y pointing down (world -z)."""
    angles = torch.linspace(0, 2.5, 6, dtype=torch.float64)
    eye = torch.stack([2 * torch.cos(angles), 2 * torch.sin(angles), 0.4 * torch.ones(6, dtype=torch.float64)], dim=-1)
    c2w = look_at(eye, torch.zeros(3, dtype=torch.float64), Z)
    c2w[1::2, :, :2] *= -1  # every other photo rolled by 180 degrees about its viewing axis
    path = interpolate_path(cameras_at(c2w), 41, look_at_centre=True)
    forward, centre = path.c2w[:, :, 2].double(), path.c2w[:, :, 3].double()
    torch.testing.assert_close(forward, -centre / centre.norm(dim=-1, keepdim=True), atol=1e-6, rtol=0)
    assert (path.c2w[:, 2, 1] < 0).all()  # image y (down) has a negative world z: upright
    assert_rotations(path.c2w)
    torch.testing.assert_close(path.c2w[keyframes(6, 41), :, 3], c2w[:, :, 3].to(path.c2w.dtype), atol=1e-5, rtol=0)


# ---------------------------------------------------------------------- the command


def test_every_path_is_in_the_cli_literal_and_its_help(capsys) -> None:
    names = typing.get_args(typing.get_type_hints(RenderArgs)["path"])
    assert set(names) == set(SYNTHETIC_PATHS) | set(SPLIT_PATHS)
    with pytest.raises(SystemExit) as exit_info:
        main(["render", "--help"])
    assert exit_info.value.code in (0, None)
    help_text = capsys.readouterr().out
    for name in names:
        assert name in help_text
    assert main(["render", "RUN", "--path", "helix"]) == 2
    assert "--path" in capsys.readouterr().err


def make_forward_llff(root: Path, n: int = 9) -> None:
    """An LLFF folder (poses_bounds.npy, images_4/) of ``n`` parallel cameras on a plane, 32x24 random images."""
    folder = root / "images_4"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(6)
    rows = []
    for i in range(n):
        cv2.imwrite(str(folder / f"img_{i:02d}.png"), rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))
        centre = [0.2 * (i % 3) - 0.2, 0.2 * (i // 3) - 0.2, 0.0]
        c2w = np.concatenate([np.eye(3), np.array(centre)[:, None]], axis=1)  # OpenCV, all looking along +z
        pose = np.stack([c2w[:, 1], c2w[:, 0], -c2w[:, 2], c2w[:, 3], [24 * 4, 32 * 4, 30.0 * 4]], axis=-1)
        rows.append(np.concatenate([pose.ravel(), [2.0, 6.0]]))
    np.save(root / "poses_bounds.npy", np.array(rows))


@pytest.fixture(scope="module")
def forward_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("paths")
    make_forward_llff(root / "scene")
    run = root / "run"
    argv = ["train", "--data", str(root / "scene"), "--max-steps", "2", "--batch-size", "64", "--render.grid-resolution", "16",
            "--field.log2-hashmap-size", "12", "--no-progress", "--output", str(run)]
    assert main(argv) == 0
    return run


@pytest.mark.parametrize("name", ["spiral", "interpolate"])
def test_render_path_end_to_end(forward_run: Path, name: str, tmp_path: Path) -> None:
    out = tmp_path / name
    assert main(["render", str(forward_run), "--path", name, "--frames", "3", "--output", str(out)]) == 0
    assert sorted(p.name for p in out.glob("*_*.png")) == [f"{kind}_{i:04d}.png" for kind in ("depth", "rgb") for i in range(3)]
    assert (out / "video.mp4").stat().st_size > 0 and (out / "depth.mp4").stat().st_size > 0


def test_forward_facing_runs_render_the_spiral_by_default(forward_run: Path, capsys) -> None:
    assert main(["render", str(forward_run), "--frames", "2"]) == 0
    printed = capsys.readouterr().out
    assert "forward-facing scene: rendering --path spiral" in printed
    assert len(list((forward_run / "renders" / "spiral").glob("rgb_*.png"))) == 2
    assert not (forward_run / "renders" / "orbit").exists()
    assert main(["render", str(forward_run), "--path", "orbit", "--frames", "2"]) == 0  # asked for: no switch
    assert "rendering --path spiral" not in capsys.readouterr().out
    assert len(list((forward_run / "renders" / "orbit").glob("rgb_*.png"))) == 2


def test_video_frames_are_padded_to_even_sizes_by_repeating_the_edge() -> None:
    frame = np.arange(3 * 5 * 1, dtype=np.uint8).reshape(3, 5, 1)  # odd height and width
    padded = even_frame(frame)
    assert padded.shape == (4, 6, 1)
    assert (padded[:3, :5] == frame).all()
    assert (padded[3, :5] == frame[2]).all() and (padded[:3, 5] == frame[:, 4]).all() and padded[3, 5, 0] == frame[2, 4, 0]
    assert even_frame(padded) is not padded and (even_frame(padded) == padded).all()  # already even: unchanged
