"""Reading and writing COLMAP sparse models, as documented at https://colmap.github.io/format.html.

A model folder (usually ``scene/sparse/0``) holds ``cameras``, ``images`` and ``points3D``, each
binary (``.bin``) or text (``.txt``): the intrinsics per camera (``params`` in COLMAP's order
for the model, e.g. ``OPENCV``: ``fx, fy, cx, cy, k1, k2, p1, p2``); per registered image the
world-to-camera pose, the file name and the keypoints with the 3D point each one observes; the
sparse point cloud with colours, reprojection errors (pixels) and tracks. COLMAP's cameras are
OpenCV's (x right, y down, z forward), and pixel centres sit at ``+0.5`` as in
:mod:`nfplug.data.cameras`. Tracks are not kept on reading: the images' ``point3d_ids`` hold the
same information, and :func:`write_model` derives the tracks from them.

Every problem with the input raises :class:`~nfplug.errors.NfplugError` with a single line naming
the file, e.g. ``sparse/0/images.bin: truncated: ended at byte 4096 while reading image 12 of 77``.

Example::

    model = read_model(find_model("captures/cup_360"))
    c2w = camera_to_world(model.images[1])                           # [3, 4], OpenCV
    fx, fy, cx, cy, dist = pinhole_and_distortion(model.cameras[model.images[1].camera_id])
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple

import numpy as np

from nfplug.errors import NfplugError, fail

CAMERA_MODELS: Dict[str, Tuple[int, int]] = {
    "SIMPLE_PINHOLE": (0, 3), "PINHOLE": (1, 4), "SIMPLE_RADIAL": (2, 4), "RADIAL": (3, 5),
    "OPENCV": (4, 8), "OPENCV_FISHEYE": (5, 8), "FULL_OPENCV": (6, 12), "FOV": (7, 5),
    "SIMPLE_RADIAL_FISHEYE": (8, 4), "RADIAL_FISHEYE": (9, 5), "THIN_PRISM_FISHEYE": (10, 12),
    "RAD_TAN_THIN_PRISM_FISHEYE": (11, 16), "SIMPLE_DIVISION": (12, 4), "DIVISION": (13, 5),
    "SIMPLE_FISHEYE": (14, 3), "FISHEYE": (15, 4), "EUCM": (16, 6),
}  # fmt: skip
"""COLMAP camera model name -> (model id in ``cameras.bin``, number of parameters)."""
_MODEL_NAMES = {model_id: name for name, (model_id, _) in CAMERA_MODELS.items()}
_UNDISTORTABLE = "SIMPLE_PINHOLE, PINHOLE, SIMPLE_RADIAL, RADIAL, OPENCV, FULL_OPENCV with k3..k6 = 0"

# Binary records, little endian and packed (no padding), as COLMAP writes them.
_CAMERA_HEAD = np.dtype([("id", "<i4"), ("model_id", "<i4"), ("width", "<u8"), ("height", "<u8")])
_IMAGE_HEAD = np.dtype([("id", "<i4"), ("qvec", "<f8", 4), ("tvec", "<f8", 3), ("camera_id", "<i4")])
_KEYPOINT = np.dtype([("xy", "<f8", 2), ("point3d_id", "<i8")])
_POINT_HEAD = np.dtype([("id", "<u8"), ("xyz", "<f8", 3), ("rgb", "u1", 3), ("error", "<f8"), ("track_length", "<u8")])
_TRACK_ELEMENT = np.dtype([("image_id", "<i4"), ("point2d_idx", "<i4")])
_COUNT = struct.Struct("<Q")


@dataclass
class ColmapCamera:
    """One camera: ``model`` is a key of :data:`CAMERA_MODELS`, ``params`` ``[n]`` float64."""

    id: int
    model: str
    width: int
    height: int
    params: np.ndarray


@dataclass
class ColmapImage:
    """One registered image.

    Attributes:
        qvec: ``[4]`` float64 world-to-camera rotation as a quaternion ``(w, x, y, z)``.
        tvec: ``[3]`` float64 world-to-camera translation: ``x_cam = R(qvec) x_world + tvec``.
        name: the image path relative to the image folder, as stored.
        xys: ``[K, 2]`` float64 keypoints in pixels (may be empty).
        point3d_ids: ``[K]`` int64 id of the 3D point each keypoint observes, ``-1`` for none.
    """

    id: int
    qvec: np.ndarray
    tvec: np.ndarray
    camera_id: int
    name: str
    xys: np.ndarray
    point3d_ids: np.ndarray


@dataclass
class ColmapModel:
    """A sparse model: ``P`` points as ``points [P, 3]`` float64, ``colors [P, 3]`` uint8,
    ``errors [P]`` float64 (pixels) and ``point_ids [P]`` int64, in file order."""

    cameras: Dict[int, ColmapCamera]
    images: Dict[int, ColmapImage]
    points: np.ndarray
    colors: np.ndarray
    errors: np.ndarray
    point_ids: np.ndarray


def _check(
    cameras: Dict[int, ColmapCamera], images: Dict[int, ColmapImage], cameras_path: Path, images_path: Path
) -> None:
    """Raise on what the readers and COLMAP cannot use: bad intrinsics, poses or camera ids."""
    for c in cameras.values():
        n_params = CAMERA_MODELS.get(c.model, (0, -1))[1]
        if n_params < 0:
            known = ", ".join(CAMERA_MODELS)
            raise fail(f"{cameras_path}: camera {c.id}: unknown camera model {c.model!r} (known: {known})")
        if len(c.params) != n_params or not np.isfinite(c.params).all():
            raise fail(f"{cameras_path}: camera {c.id}: camera model {c.model} takes {n_params} finite parameters, "
                        f"got {np.asarray(c.params).tolist()}")  # fmt: skip
    for im in images.values():
        where = f"{images_path}: image {im.id} ({im.name})"
        if not (np.isfinite(im.qvec).all() and np.isfinite(im.tvec).all() and np.any(im.qvec)):
            raise fail(f"{where}: qvec {im.qvec.tolist()} must be a finite non-zero quaternion and "
                        f"tvec {im.tvec.tolist()} finite")  # fmt: skip
        if im.xys.shape != (len(im.point3d_ids), 2):
            raise fail(f"{where}: xys {im.xys.shape} does not match point3d_ids {im.point3d_ids.shape}")
        if im.camera_id not in cameras:
            raise fail(f"{where}: refers to camera {im.camera_id}, which {cameras_path.name} does not have")


class _Cursor:
    """Consecutive little-endian records of a binary file; reading past its end is an error."""

    def __init__(self, path: Path):
        self.path, self.pos, self.what = path, 0, "the count"
        try:
            self.data = path.read_bytes()
        except OSError as e:
            raise fail(f"{path}: cannot read: {e.strerror or e}") from None

    def take(self, dtype: np.dtype | str, count: int = 1) -> np.ndarray:
        end = self.pos + np.dtype(dtype).itemsize * count
        if end > len(self.data):
            raise self.truncated()
        records = np.frombuffer(self.data, dtype, count, self.pos)
        self.pos = end
        return records

    def count(self) -> int:
        return int(self.take("<u8")[0])

    def string(self) -> str:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise self.truncated()
        raw, self.pos = self.data[self.pos : end], end + 1
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise fail(f"{self.path}: {self.what}: name is not UTF-8: {raw[:60]!r}") from None

    def truncated(self) -> NfplugError:
        return fail(f"{self.path}: truncated: ended at byte {len(self.data)} while reading {self.what}")


def _read_cameras_bin(path: Path) -> Dict[int, ColmapCamera]:
    cursor, cameras = _Cursor(path), {}
    n = cursor.count()
    for i in range(n):
        cursor.what = f"camera {i + 1} of {n}"
        head = cursor.take(_CAMERA_HEAD)[0]
        model = _MODEL_NAMES.get(int(head["model_id"]))
        if model is None:
            known = f"0..{len(_MODEL_NAMES) - 1}"
            raise fail(f"{path}: {cursor.what}: unknown camera model id {head['model_id']} (known: {known})")
        params = cursor.take("<f8", CAMERA_MODELS[model][1]).astype(np.float64)
        cameras[int(head["id"])] = ColmapCamera(int(head["id"]), model, int(head["width"]), int(head["height"]), params)
    return cameras


def _read_images_bin(path: Path) -> Dict[int, ColmapImage]:
    cursor, images = _Cursor(path), {}
    n = cursor.count()
    for i in range(n):
        cursor.what = f"image {i + 1} of {n}"
        head, name = cursor.take(_IMAGE_HEAD)[0], cursor.string()
        keypoints = cursor.take(_KEYPOINT, cursor.count())
        images[int(head["id"])] = ColmapImage(
            int(head["id"]), head["qvec"].astype(np.float64), head["tvec"].astype(np.float64), int(head["camera_id"]),
            name, keypoints["xy"].astype(np.float64), keypoints["point3d_id"].astype(np.int64))  # fmt: skip
    return images


def _read_points_bin(path: Path) -> Tuple[np.ndarray, ...]:
    cursor = _Cursor(path)
    n, size, head = cursor.count(), len(cursor.data), _POINT_HEAD.itemsize
    offsets = np.empty(n, np.int64)
    for i in range(n):  # tracks have variable length: find where each point starts, then read all at once
        cursor.what = f"point {i + 1} of {n}"
        if cursor.pos + head > size:
            raise cursor.truncated()
        offsets[i] = cursor.pos
        cursor.pos += head + _TRACK_ELEMENT.itemsize * _COUNT.unpack_from(cursor.data, cursor.pos + head - 8)[0]
        if cursor.pos > size:
            raise fail(f"{path}: truncated: ended at byte {size} while reading the track of point {i + 1} of {n}")
    heads = np.frombuffer(cursor.data, np.uint8)[offsets[:, None] + np.arange(head)].view(_POINT_HEAD)[:, 0]
    return (heads["xyz"].astype(np.float64), heads["rgb"].astype(np.uint8), heads["error"].astype(np.float64),
            heads["id"].astype(np.int64))  # fmt: skip


def _data_lines(path: Path) -> Iterator[Tuple[int, str]]:
    """``(line number, line)`` of a text file, from 1, blank and ``#`` comment lines included."""
    try:
        return enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
    except (OSError, UnicodeDecodeError) as e:
        raise fail(f"{path}: cannot read: {getattr(e, 'strerror', None) or e}") from None


def _skip(line: str) -> bool:
    return not line.strip() or line.lstrip().startswith("#")


def _malformed(path: Path, lineno: int, expected: str, line: str) -> NfplugError:
    shown = line if len(line) <= 80 else line[:77] + "..."
    return fail(f"{path}: line {lineno}: malformed, expected {expected}, got {shown!r}")


def _read_cameras_txt(path: Path) -> Dict[int, ColmapCamera]:
    cameras = {}
    for lineno, line in _data_lines(path):
        if _skip(line):
            continue
        tokens = line.split()
        try:
            cameras[int(tokens[0])] = ColmapCamera(int(tokens[0]), tokens[1], int(tokens[2]), int(tokens[3]),
                                                   np.array(tokens[4:], np.float64))  # fmt: skip
        except (ValueError, IndexError):
            raise _malformed(path, lineno, "CAMERA_ID MODEL WIDTH HEIGHT PARAMS[]", line) from None
    return cameras


def _read_images_txt(path: Path) -> Dict[int, ColmapImage]:
    images, lines = {}, _data_lines(path)
    for lineno, line in lines:
        if _skip(line):
            continue
        # The second line of a pair lists the keypoints; COLMAP leaves it empty when there are none.
        points_lineno, points_line = next(lines, (lineno + 1, ""))
        tokens = line.strip().split(None, 9)
        try:
            image_id, camera_id, name = int(tokens[0]), int(tokens[8]), tokens[9]
            pose = np.array(tokens[1:8], np.float64)
        except (ValueError, IndexError):
            raise _malformed(path, lineno, "IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME", line) from None
        try:
            keypoints = np.array(points_line.split(), np.float64).reshape(-1, 3)
        except ValueError:
            raise _malformed(path, points_lineno, "X Y POINT3D_ID triplets", points_line) from None
        images[image_id] = ColmapImage(image_id, pose[:4], pose[4:], camera_id, name, keypoints[:, :2].copy(),
                                       keypoints[:, 2].astype(np.int64))  # fmt: skip
    return images


def _read_points_txt(path: Path) -> Tuple[np.ndarray, ...]:
    rows = []
    for lineno, line in _data_lines(path):
        if _skip(line):
            continue
        tokens = line.split()
        try:
            if len(tokens) < 8 or len(tokens) % 2 or not all(0 <= int(c) <= 255 for c in tokens[4:7]):
                raise ValueError
            rows.append((int(tokens[0]), *map(float, tokens[1:4]), *map(int, tokens[4:7]), float(tokens[7])))
        except ValueError:
            raise _malformed(path, lineno, "POINT3D_ID X Y Z R G B ERROR TRACK[]", line) from None
    table = np.array(rows, np.float64).reshape(-1, 8)
    point_ids = np.array([row[0] for row in rows], np.int64)  # ids may exceed float64's exact integers
    return table[:, 1:4].copy(), table[:, 4:7].astype(np.uint8), table[:, 7].copy(), point_ids


_STEMS = ("cameras", "images", "points3D")
_READERS = {
    ".bin": (_read_cameras_bin, _read_images_bin, _read_points_bin),
    ".txt": (_read_cameras_txt, _read_images_txt, _read_points_txt),
}


def read_model(folder: str | Path) -> ColmapModel:
    """Read the COLMAP model in ``folder``: ``cameras``, ``images`` and ``points3D``, each
    ``.bin`` or ``.txt`` (``.bin`` when both exist). Track lists are skipped (see the module doc).

    Raises:
        NfplugError: a missing or unreadable file, truncated binary, malformed text line, unknown
            camera model, wrong parameter count, non-finite pose or intrinsics, zero quaternion,
            or an image whose camera id is not among the cameras.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise fail(f"{folder}: not a folder, expected a COLMAP model (cameras, images, points3D)")
    paths = [next((folder / f"{stem}{suffix}" for suffix in _READERS if (folder / f"{stem}{suffix}").is_file()), None)
             for stem in _STEMS]  # fmt: skip
    if not any(paths):
        raise fail(f"{folder}: no COLMAP model: neither .bin nor .txt files of cameras, images and points3D")
    for stem, path in zip(_STEMS, paths):
        if path is None:
            raise fail(f"{folder}: COLMAP model incomplete: neither {stem}.bin nor {stem}.txt exists")
    cameras = _READERS[paths[0].suffix][0](paths[0])
    images = _READERS[paths[1].suffix][1](paths[1])
    _check(cameras, images, paths[0], paths[1])
    points, colors, errors, point_ids = _READERS[paths[2].suffix][2](paths[2])
    return ColmapModel(cameras, images, points, colors, errors, point_ids)


def _tracks(model: ColmapModel) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Track elements ``[T]`` (``_TRACK_ELEMENT``) grouped by point, and the ``[P]`` start and
    end of each point's group, derived from the images' ``point3d_ids``."""
    ids, image_ids, indices = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for image in model.images.values():
        ids.append(np.asarray(image.point3d_ids, np.int64))
        image_ids.append(np.full(len(image.point3d_ids), image.id))
        indices.append(np.arange(len(image.point3d_ids)))
    ids, image_ids, indices = (np.concatenate(a) for a in (ids, image_ids, indices))
    seen = np.flatnonzero(ids >= 0)
    order = seen[np.argsort(ids[seen], kind="stable")]
    track = np.empty(len(order), _TRACK_ELEMENT)
    track["image_id"], track["point2d_idx"] = image_ids[order], indices[order]
    starts = np.searchsorted(ids[order], model.point_ids, "left")
    return track, starts, np.searchsorted(ids[order], model.point_ids, "right")


def _cameras_bin(model: ColmapModel) -> bytes:
    parts = [_COUNT.pack(len(model.cameras))]
    for c in model.cameras.values():
        parts += [np.array((c.id, CAMERA_MODELS[c.model][0], c.width, c.height), _CAMERA_HEAD).tobytes(),
                  np.asarray(c.params, "<f8").tobytes()]  # fmt: skip
    return b"".join(parts)


def _images_bin(model: ColmapModel) -> bytes:
    parts = [_COUNT.pack(len(model.images))]
    for im in model.images.values():
        keypoints = np.empty(len(im.point3d_ids), _KEYPOINT)
        keypoints["xy"], keypoints["point3d_id"] = im.xys, im.point3d_ids
        parts += [np.array((im.id, im.qvec, im.tvec, im.camera_id), _IMAGE_HEAD).tobytes(), im.name.encode() + b"\0",
                  _COUNT.pack(len(keypoints)), keypoints.tobytes()]  # fmt: skip
    return b"".join(parts)


def _points_bin(model: ColmapModel) -> bytes:
    track, starts, ends = _tracks(model)
    heads = np.empty(len(model.point_ids), _POINT_HEAD)
    heads["id"], heads["xyz"], heads["rgb"] = model.point_ids, model.points, model.colors
    heads["error"], heads["track_length"] = model.errors, ends - starts
    head_bytes, track_bytes, h, t = heads.tobytes(), track.tobytes(), _POINT_HEAD.itemsize, _TRACK_ELEMENT.itemsize
    parts = [_COUNT.pack(len(heads))]
    for i, (start, end) in enumerate(zip(starts.tolist(), ends.tolist())):
        parts += [head_bytes[i * h : (i + 1) * h], track_bytes[start * t : end * t]]
    return b"".join(parts)


def _floats(values: np.ndarray) -> str:
    return " ".join(map(repr, np.asarray(values, np.float64).ravel().tolist()))  # repr: shortest exact digits


def _cameras_txt(model: ColmapModel) -> str:
    lines = ["# Camera list, one line per camera: CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]"]
    lines += [f"{c.id} {c.model} {c.width} {c.height} {_floats(c.params)}" for c in model.cameras.values()]
    return "\n".join(lines) + "\n"


def _images_txt(model: ColmapModel) -> str:
    lines = ["# Image list, two lines per image: IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
             "# and POINTS2D[] as (X, Y, POINT3D_ID)"]  # fmt: skip
    for im in model.images.values():
        lines.append(f"{im.id} {_floats(im.qvec)} {_floats(im.tvec)} {im.camera_id} {im.name}")
        lines.append(" ".join(f"{x!r} {y!r} {p}" for (x, y), p in zip(im.xys.tolist(), im.point3d_ids.tolist())))
    return "\n".join(lines) + "\n"


def _points_txt(model: ColmapModel) -> str:
    track, starts, ends = _tracks(model)
    pairs = np.stack([track["image_id"], track["point2d_idx"]], axis=1).tolist()
    lines = ["# 3D point list, one line per point: POINT3D_ID, X, Y, Z, R, G, B, ERROR,",
             "# TRACK[] as (IMAGE_ID, POINT2D_IDX)"]  # fmt: skip
    for i, (start, end) in enumerate(zip(starts.tolist(), ends.tolist())):
        track_text = "".join(f" {image_id} {idx}" for image_id, idx in pairs[start:end])
        r, g, b = model.colors[i].tolist()
        error = float(model.errors[i])
        lines.append(f"{model.point_ids[i]} {_floats(model.points[i])} {r} {g} {b} {error!r}{track_text}")
    return "\n".join(lines) + "\n"


_WRITERS = {".bin": (_cameras_bin, _images_bin, _points_bin), ".txt": (_cameras_txt, _images_txt, _points_txt)}


def write_model(model: ColmapModel, folder: str | Path, *, binary: bool = True) -> None:
    """Write ``model`` to ``folder`` (created if needed) as ``cameras``, ``images`` and ``points3D``
    ``.bin`` files (``binary``) or ``.txt`` files, readable by COLMAP and :func:`read_model`.

    Each point's track is derived from the images' ``point3d_ids``, so it is complete when the
    images are; a point no keypoint observes gets an empty track.

    Raises:
        NfplugError: an invalid camera or image (as :func:`read_model` would report it), ``.bin``
            files in ``folder`` when writing text (:func:`read_model` would read those instead), or
            an OSError.
    """
    folder = Path(folder)
    suffix = ".bin" if binary else ".txt"
    _check(model.cameras, model.images, folder / f"cameras{suffix}", folder / f"images{suffix}")
    for stale in [folder / f"{stem}.bin" for stem in _STEMS if not binary and (folder / f"{stem}.bin").exists()]:
        raise fail(f"{stale}: exists, read_model would read it instead of the text; remove it or write binary")
    contents = [write(model) for write in _WRITERS[suffix]]
    for stem, content in zip(_STEMS, contents):
        path = folder / f"{stem}{suffix}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content) if binary else path.write_text(content, encoding="utf-8")
        except OSError as e:
            raise fail(f"{path}: cannot write: {e.strerror or e}") from None


def find_model(root: str | Path) -> Optional[Path]:
    """The COLMAP model folder of a scene: the first of ``root/sparse/0``, ``root/sparse``,
    ``root/colmap/sparse/0`` and ``root`` that holds ``cameras.bin`` or ``cameras.txt``; else None."""
    root = Path(root)
    for folder in (root / "sparse" / "0", root / "sparse", root / "colmap" / "sparse" / "0", root):
        if (folder / "cameras.bin").is_file() or (folder / "cameras.txt").is_file():
            return folder
    return None


def qvec_to_rotmat(qvec: np.ndarray) -> np.ndarray:
    """The ``[3, 3]`` rotation of a quaternion ``(w, x, y, z)``, normalised first (Hamilton convention)."""
    q = np.asarray(qvec, np.float64)
    norm = np.linalg.norm(q)
    if not np.isfinite(norm) or norm == 0:
        raise NfplugError(f"qvec_to_rotmat: {q.tolist()} is not a quaternion of finite, non-zero norm")
    w, x, y, z = q / norm
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])  # fmt: skip


def rotmat_to_qvec(R: np.ndarray) -> np.ndarray:
    """The unit quaternion ``[4]`` ``(w, x, y, z)`` with ``w >= 0`` of a ``[3, 3]`` rotation.

    Shepperd's method: divides by the largest of ``4w², 4x², 4y², 4z²`` so it stays accurate
    near 180-degree rotations, where ``w`` is close to 0.
    """
    R = np.asarray(R, np.float64)
    q = np.empty(4)
    k = int(np.argmax([np.trace(R), R[0, 0], R[1, 1], R[2, 2]]))
    if k == 0:
        s = 2 * np.sqrt(1 + np.trace(R))
        q[:] = s / 4, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s
    else:
        i, j, l = k - 1, k % 3, (k + 1) % 3
        s = 2 * np.sqrt(1 + R[i, i] - R[j, j] - R[l, l])
        q[0], q[1 + i] = (R[l, j] - R[j, l]) / s, s / 4
        q[1 + j], q[1 + l] = (R[j, i] + R[i, j]) / s, (R[l, i] + R[i, l]) / s
    q /= np.linalg.norm(q)
    return -q if q[0] < 0 else q


def world_to_camera(image: ColmapImage) -> np.ndarray:
    """``[3, 4]`` world-to-camera ``[R | t]``, OpenCV convention: ``x_cam = R x_world + t``."""
    return np.concatenate([qvec_to_rotmat(image.qvec), np.reshape(image.tvec, (3, 1))], axis=1)


def camera_to_world(image: ColmapImage) -> np.ndarray:
    """``[3, 4]`` camera-to-world ``[R^T | -R^T t]``, OpenCV convention (x right, y down, z forward):
    the columns are the camera axes in world space and the last one is the camera centre."""
    R = qvec_to_rotmat(image.qvec)
    return np.concatenate([R.T, -R.T @ np.reshape(image.tvec, (3, 1))], axis=1)


def pinhole_and_distortion(camera: ColmapCamera) -> Tuple[float, float, float, float, np.ndarray]:
    """``fx, fy, cx, cy`` (pixels) and ``dist [4] = (k1, k2, p1, p2)`` of OpenCV's radial-tangential
    model (``cv2.projectPoints`` / ``cv2.undistort``), which COLMAP's models below are special cases of.

    ``SIMPLE_PINHOLE`` and ``PINHOLE`` give zeros, ``SIMPLE_RADIAL`` ``(k, 0, 0, 0)``, ``RADIAL``
    ``(k1, k2, 0, 0)``, ``OPENCV`` and ``FULL_OPENCV`` with ``k3..k6 = 0`` ``(k1, k2, p1, p2)``.

    Raises:
        NfplugError: any other model (fisheye, ``FULL_OPENCV`` with higher terms, ...).
    """
    p = np.asarray(camera.params, np.float64)
    if camera.model in ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL"):
        fx = fy = p[0]
        cx, cy, dist = p[1], p[2], p[3:]
    elif camera.model in ("PINHOLE", "OPENCV") or (camera.model == "FULL_OPENCV" and not p[8:].any()):
        fx, fy, cx, cy, dist = p[0], p[1], p[2], p[3], p[4:8]
    else:
        model = camera.model
        raise NfplugError(f"camera {camera.id}: camera model {model} is not supported (supported: {_UNDISTORTABLE})")
    return float(fx), float(fy), float(cx), float(cy), np.pad(dist, (0, 4 - len(dist)))
