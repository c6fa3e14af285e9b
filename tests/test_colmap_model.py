"""COLMAP sparse models: round trips, rotation math, the real cup_360 capture, bad input."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import SHARED_DATA
from nfplug.data.colmap_model import (
    CAMERA_MODELS,
    ColmapCamera,
    ColmapImage,
    ColmapModel,
    camera_to_world,
    find_model,
    pinhole_and_distortion,
    qvec_to_rotmat,
    read_model,
    rotmat_to_qvec,
    world_to_camera,
    write_model,
)
from nfplug.errors import NfplugError

CUP = SHARED_DATA / "captures" / "cup_360" / "sparse" / "0"
needs_cup = pytest.mark.skipif(not (CUP / "cameras.bin").is_file(), reason=f"real COLMAP capture not found at {CUP}")


def random_qvec(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    return q if q[0] >= 0 else -q


def tiny_model() -> ColmapModel:
    """2 cameras of different models, 3 images (one without keypoints, one with a space in its
    name), 5 points of which one (99) no keypoint observes."""
    rng = np.random.default_rng(0)
    cameras = {
        1: ColmapCamera(1, "PINHOLE", 800, 600, np.array([500.5, 501.25, 400.1, 299.9])),
        7: ColmapCamera(7, "OPENCV", 640, 480, np.array([450.0, 451.0, 320.5, 239.5, -0.1, 0.02, 1e-3, -2e-3])),
    }
    point_ids = np.array([10, 11, 99, 12, 20], np.int64)
    images = {}
    for image_id, camera_id, name, ids in [
        (1, 1, "a.jpg", [10, -1, 11, 12]),
        (2, 7, "frames/b 2.png", []),
        (5, 7, "c.jpg", [20, 10, -1]),
    ]:
        ids = np.array(ids, np.int64)
        images[image_id] = ColmapImage(image_id, random_qvec(rng), rng.normal(size=3), camera_id, name,
                                       rng.uniform(0, 600, size=(len(ids), 2)), ids)  # fmt: skip
    return ColmapModel(cameras, images, rng.normal(size=(5, 3)), rng.integers(0, 256, (5, 3)).astype(np.uint8),
                       rng.uniform(0, 2, 5), point_ids)  # fmt: skip


def assert_same(a: np.ndarray, b: np.ndarray, exact: bool) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape
    if exact:
        assert a.tobytes() == b.tobytes()
    else:
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def assert_models_equal(a: ColmapModel, b: ColmapModel, exact: bool) -> None:
    assert list(a.cameras) == list(b.cameras) and list(a.images) == list(b.images)
    for ca, cb in zip(a.cameras.values(), b.cameras.values()):
        assert (ca.id, ca.model, ca.width, ca.height) == (cb.id, cb.model, cb.width, cb.height)
        assert_same(ca.params, cb.params, exact)
    for ia, ib in zip(a.images.values(), b.images.values()):
        assert (ia.id, ia.camera_id, ia.name) == (ib.id, ib.camera_id, ib.name)
        for field in ("qvec", "tvec", "xys", "point3d_ids"):
            assert_same(getattr(ia, field), getattr(ib, field), exact)
    for field in ("points", "colors", "errors", "point_ids"):
        assert_same(getattr(a, field), getattr(b, field), exact)


@pytest.mark.parametrize("binary", [True, False], ids=["bin", "txt"])
def test_round_trip(tmp_path, binary):
    model = tiny_model()
    write_model(model, tmp_path, binary=binary)
    suffix = ".bin" if binary else ".txt"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{s}{suffix}" for s in ("cameras", "images", "points3D"))
    assert_models_equal(read_model(tmp_path), model, exact=binary)


def test_written_tracks_list_every_observation(tmp_path):
    model = tiny_model()
    write_model(model, tmp_path, binary=False)
    tracks = {}
    for line in (tmp_path / "points3D.txt").read_text().splitlines():
        if not line.startswith("#"):
            tokens = line.split()
            tracks[int(tokens[0])] = sorted(zip(map(int, tokens[8::2]), map(int, tokens[9::2])))
    assert tracks == {10: [(1, 0), (5, 1)], 11: [(1, 2)], 99: [], 12: [(1, 3)], 20: [(5, 0)]}


def test_text_reader_tolerates_colmap_quirks(tmp_path):
    (tmp_path / "cameras.txt").write_text("# comment\n\n3 SIMPLE_RADIAL 100 80 90 50 40 0.01\n")
    # No POINTS2D line at all after the last image, a blank one after the first, CRLF endings.
    (tmp_path / "images.txt").write_text("# c\r\n4 1 0 0 0 0 0 0 3 x.png\r\n\r\n6 1 0 0 0 1 2 3 3 y y.png")
    (tmp_path / "points3D.txt").write_text("# no points\n")
    model = read_model(tmp_path)
    assert model.cameras[3].model == "SIMPLE_RADIAL" and model.cameras[3].params.tolist() == [90, 50, 40, 0.01]
    assert [im.name for im in model.images.values()] == ["x.png", "y y.png"]
    assert model.images[6].tvec.tolist() == [1, 2, 3] and model.images[6].xys.shape == (0, 2)
    assert model.points.shape == (0, 3) and model.colors.dtype == np.uint8 and model.point_ids.dtype == np.int64


def test_binary_preferred_and_text_not_written_over_binary(tmp_path):
    model = tiny_model()
    write_model(model, tmp_path, binary=True)
    (tmp_path / "cameras.txt").write_text("not a camera line\n")
    assert read_model(tmp_path).cameras.keys() == model.cameras.keys()
    with pytest.raises(NfplugError, match="cameras.bin"):
        write_model(model, tmp_path, binary=False)


def test_find_model(tmp_path):
    assert find_model(tmp_path) is None
    # Each candidate, from the last to the first, takes over once it holds a cameras file.
    for folder, name in [(".", "cameras.txt"), ("colmap/sparse/0", "cameras.txt"), ("sparse", "cameras.bin"), ("sparse/0", "cameras.bin")]:
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        (tmp_path / folder / name).write_bytes(b"")
        assert find_model(tmp_path) == tmp_path / folder


# --- rotations and poses ---


def test_qvec_to_rotmat_hand_computed():
    c = math.cos(math.pi / 4)
    np.testing.assert_allclose(qvec_to_rotmat([c, 0, 0, c]), [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-15)
    np.testing.assert_allclose(qvec_to_rotmat([2, 0, 0, 0]), np.eye(3))  # normalised first
    np.testing.assert_allclose(qvec_to_rotmat([0, 1, 0, 0]), np.diag([1, -1, -1]))


@pytest.mark.parametrize("axis", range(3))
def test_rotmat_to_qvec_half_turns(axis):
    """180 degrees about each axis: w = 0, the branches where the trace is not the largest."""
    R = -np.eye(3)
    R[axis, axis] = 1
    expected = np.zeros(4)
    expected[1 + axis] = 1
    np.testing.assert_allclose(rotmat_to_qvec(R), expected, atol=1e-15)


def test_rotmat_to_qvec_inverts_qvec_to_rotmat():
    rng = np.random.default_rng(1)
    for q in [random_qvec(rng) for _ in range(500)] + [np.array([1e-9, 1, 1e-9, 0]) / math.hypot(1, 1e-9)]:
        R = qvec_to_rotmat(q)
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-14)
        assert np.linalg.det(R) == pytest.approx(1)
        back = rotmat_to_qvec(R)
        assert back[0] >= 0
        np.testing.assert_allclose(back, q, atol=1e-12)


def test_camera_to_world_inverts_world_to_camera():
    image = tiny_model().images[5]
    w2c, c2w = np.eye(4), np.eye(4)
    w2c[:3], c2w[:3] = world_to_camera(image), camera_to_world(image)
    np.testing.assert_allclose(c2w @ w2c, np.eye(4), atol=1e-12)
    R = qvec_to_rotmat(image.qvec)
    np.testing.assert_allclose(c2w[:3, 3], -R.T @ image.tvec, atol=1e-12)
    np.testing.assert_allclose(w2c @ np.append(c2w[:3, 3], 1), [0, 0, 0, 1], atol=1e-12)  # centre maps to the origin
    # OpenCV convention: the camera's +z axis (third column of c2w) is its viewing direction.
    ahead = c2w[:3, 3] + 2.0 * c2w[:3, 2]
    np.testing.assert_allclose(world_to_camera(image) @ np.append(ahead, 1), [0, 0, 2], atol=1e-12)


@pytest.mark.parametrize(
    "model, params, expected",
    [
        ("SIMPLE_PINHOLE", [500, 320, 240], (500, 500, 320, 240, [0, 0, 0, 0])),
        ("PINHOLE", [500, 510, 320, 240], (500, 510, 320, 240, [0, 0, 0, 0])),
        ("SIMPLE_RADIAL", [500, 320, 240, 0.1], (500, 500, 320, 240, [0.1, 0, 0, 0])),
        ("RADIAL", [500, 320, 240, 0.1, -0.02], (500, 500, 320, 240, [0.1, -0.02, 0, 0])),
        ("OPENCV", [500, 510, 320, 240, 0.1, -0.02, 1e-3, 2e-3], (500, 510, 320, 240, [0.1, -0.02, 1e-3, 2e-3])),
        ("FULL_OPENCV", [500, 510, 320, 240, 0.1, -0.02, 1e-3, 2e-3] + [0] * 4, (500, 510, 320, 240, [0.1, -0.02, 1e-3, 2e-3])),
    ],
)
def test_pinhole_and_distortion(model, params, expected):
    fx, fy, cx, cy, dist = pinhole_and_distortion(ColmapCamera(1, model, 640, 480, np.array(params, np.float64)))
    assert (fx, fy, cx, cy) == expected[:4]
    assert dist.shape == (4,) and dist.tolist() == expected[4]


@pytest.mark.parametrize("model", ["OPENCV_FISHEYE", "FULL_OPENCV", "FOV"])
def test_pinhole_and_distortion_rejects_other_models(model):
    params = np.full(CAMERA_MODELS[model][1], 0.1)
    with pytest.raises(NfplugError, match=f"{model} is not supported .supported: SIMPLE_PINHOLE, PINHOLE"):
        pinhole_and_distortion(ColmapCamera(1, model, 640, 480, params))


# --- the real capture, and pycolmap as a reference ---


def project(camera: ColmapCamera, image: ColmapImage, points: np.ndarray) -> np.ndarray:
    """``[N, 2]`` pixels of world points through OpenCV's radial-tangential projection."""
    fx, fy, cx, cy, dist = pinhole_and_distortion(camera)
    w2c = world_to_camera(image)
    K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]])
    pixels, _ = cv2.projectPoints(points, cv2.Rodrigues(w2c[:, :3])[0], w2c[:, 3], K, dist)
    return pixels[:, 0]


@needs_cup
def test_cup_360_reprojects_onto_its_keypoints():
    model = read_model(find_model(CUP.parents[1]))
    assert len(model.images) == 77 and len(model.points) == 9262
    index = {point_id: i for i, point_id in enumerate(model.point_ids.tolist())}
    for image in list(model.images.values())[::15]:
        seen = image.point3d_ids >= 0
        assert seen.sum() > 100
        xyz = model.points[[index[p] for p in image.point3d_ids[seen].tolist()]]
        errors = np.linalg.norm(project(model.cameras[image.camera_id], image, xyz) - image.xys[seen], axis=1)
        assert errors.mean() < 2.0, (image.name, errors.mean())


@needs_cup
def test_cup_360_binary_and_text_round_trips(tmp_path):
    model = read_model(CUP)
    write_model(model, tmp_path / "bin")
    assert_models_equal(read_model(tmp_path / "bin"), model, exact=True)
    write_model(model, tmp_path / "txt", binary=False)
    assert_models_equal(read_model(tmp_path / "txt"), model, exact=False)


@needs_cup
def test_cup_360_matches_pycolmap(tmp_path):
    pycolmap = pytest.importorskip("pycolmap", reason="pycolmap not installed: no reference reader to compare with")
    model, reference = read_model(CUP), pycolmap.Reconstruction(str(CUP))
    assert len(model.images) == reference.num_images() and len(model.points) == reference.num_points3D()
    assert sorted(im.name for im in model.images.values()) == sorted(im.name for im in reference.images.values())
    for camera in model.cameras.values():
        assert camera.model == reference.cameras[camera.id].model.name
        np.testing.assert_array_equal(camera.params, reference.cameras[camera.id].params)
    for image in model.images.values():
        pose = reference.images[image.id].cam_from_world()
        np.testing.assert_allclose(world_to_camera(image), pose.matrix(), atol=1e-12)
    np.testing.assert_array_equal(model.points, np.stack([reference.points3D[i].xyz for i in model.point_ids.tolist()]))
    # What we write, COLMAP reads back whole, tracks derived from the keypoints included.
    for binary in (True, False):
        write_model(model, tmp_path / str(binary), binary=binary)
        written = pycolmap.Reconstruction(str(tmp_path / str(binary)))
        assert written.compute_num_observations() == reference.compute_num_observations() > 50000
        assert all(written.points3D[i].track.length() == p.track.length() for i, p in reference.points3D.items())


@pytest.mark.parametrize("model", ["RADIAL", "OPENCV"])
def test_projection_matches_pycolmap(model):
    pycolmap = pytest.importorskip("pycolmap", reason="pycolmap not installed: no reference projection to compare with")
    params = {"RADIAL": [500, 320, 240, 0.1, -0.05], "OPENCV": [500, 510, 320, 240, 0.1, -0.05, 2e-3, -1e-3]}[model]
    camera = ColmapCamera(1, model, 640, 480, np.array(params, np.float64))
    image = ColmapImage(1, np.array([1.0, 0, 0, 0]), np.zeros(3), 1, "x", np.zeros((0, 2)), np.zeros(0, np.int64))
    points = np.random.default_rng(2).uniform([-0.5, -0.4, 1], [0.5, 0.4, 2], size=(50, 3))
    reference = pycolmap.Camera(model=model, width=640, height=480, params=params).img_from_cam(points)
    np.testing.assert_allclose(project(camera, image, points), reference, atol=1e-9)


def test_camera_model_table_matches_pycolmap():
    pycolmap = pytest.importorskip("pycolmap", reason="pycolmap not installed: no reference model table")
    for name, (model_id, n_params) in CAMERA_MODELS.items():
        assert int(pycolmap.CameraModelId.__members__[name]) == model_id
        assert len(pycolmap.Camera(model=name, width=10, height=10).params_info.split(",")) == n_params


# --- bad input: one line that names the file ---


def raises_one_line(call, *fragments: str) -> str:
    with pytest.raises(NfplugError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


@pytest.mark.parametrize("stem", ["cameras", "images", "points3D"])
@pytest.mark.parametrize("keep", [0.5, -1], ids=["half", "last-byte"])
def test_truncated_binary(tmp_path, stem, keep):
    write_model(tiny_model(), tmp_path)
    path = tmp_path / f"{stem}.bin"
    data = path.read_bytes()
    cut = int(len(data) * keep) if keep > 0 else len(data) - 1
    path.write_bytes(data[:cut])
    raises_one_line(lambda: read_model(tmp_path), f"{stem}.bin", f"truncated: ended at byte {cut} while reading")


def test_truncated_images_bin_names_the_image(tmp_path):
    write_model(tiny_model(), tmp_path)
    path = tmp_path / "images.bin"
    path.write_bytes(path.read_bytes()[:-10])
    raises_one_line(lambda: read_model(tmp_path), "while reading image 3 of 3")


def test_truncated_track_in_points3d_bin(tmp_path):
    write_model(tiny_model(), tmp_path)
    path = tmp_path / "points3D.bin"
    path.write_bytes(path.read_bytes()[:-3])  # the last point (20) is seen once: cut inside its track
    raises_one_line(lambda: read_model(tmp_path), "points3D.bin", "while reading the track of point 5 of 5")


def test_unknown_model_id_in_binary(tmp_path):
    write_model(tiny_model(), tmp_path)
    data = bytearray((tmp_path / "cameras.bin").read_bytes())
    data[12:16] = (42).to_bytes(4, "little")  # the first camera's model id, after the count and its id
    (tmp_path / "cameras.bin").write_bytes(bytes(data))
    raises_one_line(lambda: read_model(tmp_path), "cameras.bin", "camera 1 of 2", "unknown camera model id 42")


def edit_line(path: Path, starts: str, after: int, edit) -> int:
    """Apply ``edit`` to the line ``after`` lines below the first that starts with ``starts``; its number."""
    lines = path.read_text().split("\n")
    index = next(i for i, line in enumerate(lines) if line.startswith(starts)) + after
    lines[index] = edit(lines[index])
    path.write_text("\n".join(lines))
    return index + 1


def replace_token(index: int, value: str):
    def edit(line: str) -> str:
        tokens = line.split(" ")
        tokens[index] = value
        return " ".join(tokens)

    return edit


IMAGE_2 = ("2 ", 0)  # "2 qw qx qy qz tx ty tz 7 frames/b 2.png"
IMAGE_1_KEYPOINTS = ("1 ", 1)


@pytest.mark.parametrize(
    "file, where, edit, fragments",
    [
        ("images.txt", IMAGE_2, replace_token(3, "abc"), ["images.txt", "line {lineno}: malformed", "QW QX"]),
        ("images.txt", IMAGE_2, lambda line: " ".join(line.split()[:8]), ["images.txt", "line {lineno}: malformed"]),
        ("images.txt", IMAGE_1_KEYPOINTS, lambda line: line + " 1.5", ["images.txt", "line {lineno}", "X Y POINT3D_ID"]),
        ("images.txt", IMAGE_2, replace_token(8, "3"), ["images.txt", "image 2 (frames/b 2.png)", "camera 3"]),
        ("images.txt", IMAGE_2, replace_token(6, "nan"), ["images.txt", "image 2", "finite"]),
        ("images.txt", IMAGE_2, lambda line: "2 0 0 0 0 " + line.split(" ", 5)[5], ["images.txt", "image 2", "non-zero"]),
        ("cameras.txt", ("1 ", 0), replace_token(1, "FOO_MODEL"), ["cameras.txt", "camera 1", "unknown camera model 'FOO_MODEL'"]),
        ("cameras.txt", ("1 ", 0), lambda line: line.rsplit(" ", 1)[0], ["cameras.txt", "camera 1", "PINHOLE takes 4", "got"]),
        ("cameras.txt", ("7 ", 0), replace_token(5, "inf"), ["cameras.txt", "camera 7", "finite"]),
        ("cameras.txt", ("7 ", 0), replace_token(2, "wide"), ["cameras.txt", "line {lineno}", "CAMERA_ID MODEL WIDTH"]),
        ("points3D.txt", ("10 ", 0), replace_token(4, "300"), ["points3D.txt", "line {lineno}", "POINT3D_ID X Y Z R G B"]),
    ],
    ids=["bad-number", "few-tokens", "keypoints-not-triplets", "missing-camera", "nan-tvec", "zero-qvec",
         "unknown-model", "param-count", "inf-param", "bad-width", "bad-colour"],  # fmt: skip
)
def test_bad_text(tmp_path, file, where, edit, fragments):
    write_model(tiny_model(), tmp_path, binary=False)
    lineno = edit_line(tmp_path / file, *where, edit)
    raises_one_line(lambda: read_model(tmp_path), *(f.format(lineno=lineno) for f in fragments))


def test_invalid_model_not_written(tmp_path):
    model = tiny_model()
    model.images[5].tvec[1] = float("nan")
    raises_one_line(lambda: write_model(model, tmp_path), "images.bin", "image 5", "finite")
    assert not (tmp_path / "images.bin").exists()


def test_missing_files(tmp_path):
    raises_one_line(lambda: read_model(tmp_path / "nope"), "nope", "not a folder")
    raises_one_line(lambda: read_model(tmp_path), str(tmp_path), "neither .bin nor .txt")
    write_model(tiny_model(), tmp_path)
    (tmp_path / "points3D.bin").unlink()
    raises_one_line(lambda: read_model(tmp_path), "points3D.bin nor points3D.txt")


def test_unreadable_file(tmp_path, monkeypatch):
    write_model(tiny_model(), tmp_path)

    def deny(path: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(Path, "read_bytes", deny)
    raises_one_line(lambda: read_model(tmp_path), "cameras.bin", "cannot read", "Permission denied")
