"""Loading scenes in the NeRF "Blender synthetic" format.

A scene is a folder holding ``transforms_{split}.json`` files (``train``, ``val``,
``test``) and the images they point to::

    {
      "camera_angle_x": 0.6911,                      # horizontal field of view, radians
      "frames": [
        {"file_path": "./train/r_0",                 # relative to the folder; ".png" optional
         "transform_matrix": [[...], [...], [...], [0, 0, 0, 1]]},   # 4x4 camera-to-world, OpenGL
        ...
      ]
    }

Optional top-level keys ``fl_x``, ``fl_y``, ``cx``, ``cy`` (pixels) override the
intrinsics derived from ``camera_angle_x``; ``w``, ``h`` give the image size they refer
to (they are rescaled if the images have another size). Camera matrices are converted
from OpenGL to OpenCV on load (see :mod:`nfplug.data.cameras`).

Every problem with the input raises :class:`~nfplug.errors.NfplugError` with a single
line naming the offending file.
"""

from __future__ import annotations

import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import torch
from torch import Tensor

from nfplug.data.cameras import Cameras, opengl_to_opencv
from nfplug.data.images import composite, read_image_file
from nfplug.errors import fail

STANDARD_SPLITS = ("train", "val", "test")
ROTATION_TOLERANCE = 1e-2
"""Largest ``|R^T R - I|`` entry a camera rotation may have: real poses are within ~1e-6, hand-written
ones rounded to 3 decimals within ~1e-3; a scaled, sheared or singular matrix is far beyond."""


@dataclass
class SceneSplit:
    """One split of a scene, ready for training or evaluation.

    Attributes:
        images: ``[N, H, W, 3]`` float32 in ``[0, 1]``, alpha-composited on the background.
        alphas: ``[N, H, W, 1]`` opacity of the original images (ones where they had no alpha
            channel). Compositing and area downscaling are linear, so
            ``images - (1 - alphas) * (background - other)`` re-composites exactly.
        cameras: the ``N`` cameras (OpenCV convention), intrinsics matching ``images``.
        near, far: ray bounds in world units.
        aabb: ``[6]`` scene box ``(xmin, ymin, zmin, xmax, ymax, zmax)``.
        name: scene name (the folder's name).
        split: ``"train"``, ``"val"``, ``"test"`` or another split name.
        paths: the ``N`` image files, in order.
    """

    images: Tensor
    alphas: Tensor
    cameras: Cameras
    near: float
    far: float
    aabb: tuple[float, ...]
    name: str
    split: str
    paths: list[str]


def available_splits(root: str | Path) -> list[str]:
    """The splits that have a ``transforms_{split}.json`` in ``root``: standard ones first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = {p.name[len("transforms_") : -len(".json")] for p in root.glob("transforms_*.json") if p.is_file()}
    return [s for s in STANDARD_SPLITS if s in found] + sorted(found - set(STANDARD_SPLITS))


def read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise fail(f"{path}: cannot read: {e}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise fail(f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_matrix(value: Any, where: str) -> np.ndarray:
    """A frame's ``transform_matrix`` as ``[4, 4]`` float64."""
    if not isinstance(value, list) or not all(isinstance(row, list) for row in value):
        raise fail(f"{where}: transform_matrix must be a 4x4 list of lists of numbers")
    shape = f"{len(value)}x{len(value[0])}" if value and len({len(r) for r in value}) == 1 else "ragged"
    if shape != "4x4":
        raise fail(f"{where}: transform_matrix must be 4x4, got {shape}")
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for row in value for x in row):
        raise fail(f"{where}: transform_matrix must contain only numbers")
    matrix = np.asarray(value, dtype=np.float64)
    if not np.isfinite(matrix).all():
        raise fail(f"{where}: transform_matrix has non-finite values (NaN or infinity)")
    check_rotation(matrix[:3, :3], where)
    return matrix


def check_rotation(rotation: np.ndarray, where: str) -> None:
    """``rotation [3, 3]`` must be a proper rotation: orthonormal columns, determinant +1."""
    deviation = float(np.abs(rotation.T @ rotation - np.eye(3)).max())
    det = float(np.linalg.det(rotation))
    if deviation > ROTATION_TOLERANCE or det < 0:
        problem = "a reflection" if deviation <= ROTATION_TOLERANCE else "singular" if abs(det) < 1e-6 else "not orthonormal"
        raise fail(
            f"{where}: transform_matrix rotation (upper-left 3x3) is {problem} (determinant {det:.3g}, "
            f"columns off orthonormal by up to {deviation:.3g}, tolerance {ROTATION_TOLERANCE}); "
            f"it must be a camera-to-world rotation"
        )


def parse_frame(root: Path, frame: Any, where: str) -> tuple[np.ndarray, Path]:
    """A ``frames[]`` entry of a transforms file -> (``transform_matrix [4, 4]``, the image's path)."""
    if not isinstance(frame, dict):
        raise fail(f"{where}: expected an object, got {type(frame).__name__}")
    for key in ("file_path", "transform_matrix"):
        if key not in frame:
            raise fail(f"{where}: missing key '{key}'")
    if not isinstance(frame["file_path"], str) or not frame["file_path"]:
        raise fail(f"{where}: 'file_path' must be a non-empty string")
    return parse_matrix(frame["transform_matrix"], where), resolve_image(root, frame["file_path"], where)


def resolve_image(root: Path, file_path: str, where: str) -> Path:
    """``file_path`` relative to ``root``; the original data omits the ``.png`` suffix."""
    path = root / file_path
    if path.is_file():
        return path
    with_png = path.with_name(path.name + ".png")
    if with_png.is_file():
        return with_png
    suffix = "" if path.suffix else f" (nor {with_png.name})"
    raise fail(f"{where}: image file not found: {path}{suffix}")


def _read_image(path: Path, background: np.ndarray) -> np.ndarray:
    """An image as ``[H, W, 4]`` float32 in ``[0, 1]``: RGB composited on ``background``, then alpha (1 if none)."""
    image = read_image_file(path)
    channels = image.shape[2]
    if channels == 4:
        return np.concatenate([composite(image, background), image[:, :, 3:]], axis=2)
    rgb = np.repeat(image, 3, axis=2) if channels == 1 else image
    return np.concatenate([rgb, np.ones_like(image[:, :, :1])], axis=2)


def _intrinsics(meta: dict, transforms: Path, width: int, height: int) -> np.ndarray:
    """``K [3, 3]`` for images of ``width x height`` pixels."""
    for key in ("camera_angle_x", "fl_x", "fl_y", "cx", "cy", "w", "h"):
        if key in meta and not (_finite_number(meta[key]) and meta[key] > 0):
            raise fail(f"{transforms}: '{key}' must be a positive finite number, got {meta[key]!r}")
    # Explicit intrinsics refer to a w x h image; rescale them to the images at hand.
    sx = width / meta["w"] if "w" in meta else 1.0
    sy = height / meta["h"] if "h" in meta else 1.0
    if "fl_x" in meta:
        fx = meta["fl_x"] * sx
        fy = meta.get("fl_y", meta["fl_x"]) * sy
    elif "camera_angle_x" in meta:
        if meta["camera_angle_x"] >= math.pi:
            raise fail(f"{transforms}: 'camera_angle_x' must be below pi radians, got {meta['camera_angle_x']}")
        fx = 0.5 * width / math.tan(0.5 * meta["camera_angle_x"])
        fy = meta["fl_y"] * sy if "fl_y" in meta else fx
    else:
        raise fail(f"{transforms}: missing key 'camera_angle_x' (horizontal field of view in radians)")
    cx = meta["cx"] * sx if "cx" in meta else 0.5 * width
    cy = meta["cy"] * sy if "cy" in meta else 0.5 * height
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def read_images(paths: Sequence[Path], background: Sequence[float]) -> list[np.ndarray]:
    """Read ``paths`` in parallel as ``[H, W, 4]`` float32 (RGB composited on ``background``, then
    alpha); all must have the same size (one-line NfplugError naming the odd file otherwise)."""
    bg = np.asarray(background, dtype=np.float32)
    # OpenCV logs its own warnings for broken files; ours name the file instead.
    log_level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            images = list(pool.map(lambda p: _read_image(Path(p), bg), paths))
    finally:
        cv2.utils.logging.setLogLevel(log_level)
    height, width = images[0].shape[:2]
    for path, image in zip(paths, images):
        if image.shape[:2] != (height, width):
            raise fail(
                f"{path}: image is {image.shape[1]}x{image.shape[0]} but {Path(paths[0]).name} is {width}x{height}; "
                f"all images of a split must have the same size"
            )
    return images


def downscale_images(images: list[np.ndarray], K: np.ndarray, factor: int, where: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """Shrink images to ``(W // factor, H // factor)`` (area interpolation) and scale ``K [..., 3, 3]`` to match."""
    if factor == 1:
        return images, K
    height, width = images[0].shape[:2]
    if width // factor < 1 or height // factor < 1:
        raise fail(f"{where}: downscale {factor} is larger than the {width}x{height} images")
    size = (width // factor, height // factor)
    images = [cv2.resize(image, size, interpolation=cv2.INTER_AREA) for image in images]
    images = [image[:, :, None] if image.ndim == 2 else image for image in images]
    return images, np.diag([size[0] / width, size[1] / height, 1.0]) @ K


def load_blender(
    root: str | Path,
    split: str,
    *,
    downscale: int = 1,
    background: tuple[float, float, float] = (1.0, 1.0, 1.0),
    near: float = 2.0,
    far: float = 6.0,
    aabb: tuple[float, ...] = (-1.5, -1.5, -1.5, 1.5, 1.5, 1.5),
) -> SceneSplit:
    """Load one split of a Blender-format scene.

    Args:
        root: the scene folder (holding ``transforms_{split}.json``).
        split: ``"train"``, ``"val"``, ``"test"`` or any ``split`` with a transforms file.
        downscale: integer factor ``N``; images are resized to ``(W // N, H // N)`` with
            area interpolation (after compositing) and the intrinsics scaled to match.
        background: RGB in ``[0, 1]`` that transparent pixels are composited on.
        near, far: ray bounds, world units (the Blender scenes use 2 and 6).
        aabb: scene box ``(xmin, ymin, zmin, xmax, ymax, zmax)``.

    Returns:
        The split, images ``[N, H // downscale, W // downscale, 3]`` float32.

    Raises:
        NfplugError: one line naming the file, for any problem with the input.
    """
    root = Path(root)
    if not root.is_dir():
        raise fail(f"{root}: scene folder not found")
    transforms = root / f"transforms_{split}.json"
    if not transforms.is_file():
        splits = available_splits(root)
        present = f"splits present: {', '.join(splits)}" if splits else "no transforms_*.json files there"
        raise fail(f"{transforms}: not found ({present})")
    if isinstance(downscale, bool) or not isinstance(downscale, int) or downscale < 1:
        raise fail(f"{transforms}: downscale must be an integer >= 1, got {downscale!r}")

    meta = read_json(transforms)
    if not isinstance(meta, dict):
        raise fail(f"{transforms}: expected a JSON object at the top level, got {type(meta).__name__}")
    if "camera_angle_x" not in meta and "fl_x" not in meta:
        raise fail(f"{transforms}: missing key 'camera_angle_x' (horizontal field of view in radians)")
    if "frames" not in meta:
        raise fail(f"{transforms}: missing key 'frames'")
    frames = meta["frames"]
    if not isinstance(frames, list):
        raise fail(f"{transforms}: 'frames' must be a list, got {type(frames).__name__}")
    if not frames:
        raise fail(f"{transforms}: 'frames' is empty")

    matrices, paths = [], []
    for i, frame in enumerate(frames):
        matrix, path = parse_frame(root, frame, f"{transforms}: frame {i}")
        matrices.append(matrix)
        paths.append(path)

    images = read_images(paths, background)
    height, width = images[0].shape[:2]
    K = _intrinsics(meta, transforms, width, height)
    images, K = downscale_images(images, K, downscale, transforms)
    height, width = images[0].shape[:2]

    c2w = opengl_to_opencv(torch.from_numpy(np.stack(matrices))[:, :3, :]).float()
    cameras = Cameras(
        c2w=c2w,
        K=torch.from_numpy(K).float().expand(len(frames), 3, 3).clone(),
        width=width,
        height=height,
    )
    rgba = torch.from_numpy(np.stack(images))
    return SceneSplit(
        images=rgba[..., :3].contiguous(),
        alphas=rgba[..., 3:].contiguous(),
        cameras=cameras,
        near=float(near),
        far=float(far),
        aabb=tuple(float(v) for v in aabb),
        name=root.resolve().name,
        split=split,
        paths=[str(p) for p in paths],
    )
