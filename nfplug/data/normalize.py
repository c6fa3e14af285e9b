"""Pose normalisation and the render setup (scene box, near, far) of captured scenes.

Structure from motion returns cameras in an arbitrary frame: any orientation, origin and
scale. Before training, the engine maps them into a canonical frame, as nerfstudio's and
instant-ngp's loaders do:

1. **Orient**: rotate so the cameras' mean "up" (minus the image ``y`` axis) becomes world
   ``+z``; then the orbit videos and the occupancy grid see the scene upright.
2. **Centre**: on the point the cameras look at, the least-squares meeting point of their
   optical axes (as instant-ngp's ``colmap2nerf.py``), when the cameras converge on it (a
   360-degree or object capture); otherwise (forward-facing captures, whose axes are nearly
   parallel) on the mean camera centre (nerfstudio's default).
3. **Scale**: so the farthest camera centre coordinate is 1: every camera lies in
   ``[-1, 1]^3``.

The result is a :class:`SceneTransform` ``x -> scale * (R x + t)``. The engine stores it in
the run folder (``scene.json``, with the render setup) and applies it to every split, so evaluation,
render paths and exports of a run stay in the frame it was trained in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from nfplug.api import SceneHints
from nfplug.data.cameras import Cameras
from nfplug.errors import NfplugError

DEFAULT_BOX = (-1.5, -1.5, -1.5, 1.5, 1.5, 1.5)
"""Scene box when a dataset gives none and normalisation has nothing better (the Blender scenes' box)."""


@dataclass(frozen=True)
class SceneTransform:
    """``x_canonical = scale * (rotation @ x + translation)``.

    Attributes:
        rotation: ``[3, 3]`` proper rotation.
        translation: ``[3]``.
        scale: positive.
    """

    rotation: np.ndarray
    translation: np.ndarray
    scale: float

    @staticmethod
    def identity() -> SceneTransform:
        return SceneTransform(np.eye(3), np.zeros(3), 1.0)

    def apply_points(self, points: np.ndarray) -> np.ndarray:
        """``[..., 3]`` world points -> canonical."""
        return self.scale * (points @ self.rotation.T + self.translation)

    def apply_c2w(self, c2w: Tensor) -> Tensor:
        """``[N, 3, 4]`` camera-to-world (any convention) -> canonical: rotated, centres moved and scaled."""
        R = torch.as_tensor(self.rotation, dtype=c2w.dtype, device=c2w.device)
        t = torch.as_tensor(self.translation, dtype=c2w.dtype, device=c2w.device)
        rot = R @ c2w[:, :, :3]
        centre = self.scale * (c2w[:, :, 3] @ R.T + t)
        return torch.cat([rot, centre[:, :, None]], dim=-1)

    def to_json(self) -> dict:
        matrix = np.concatenate([self.scale * self.rotation, self.scale * self.translation[:, None]], axis=1)
        return {
            "rotation": self.rotation.tolist(),
            "translation": self.translation.tolist(),
            "scale": self.scale,
            "matrix": matrix.tolist(),
            "note": "canonical = scale * (rotation @ world + translation); 'matrix' is the same map as 3x4",
        }

    @staticmethod
    def from_json(values: Any, where: Path) -> SceneTransform:
        try:
            rotation = np.asarray(values["rotation"], dtype=np.float64)
            translation = np.asarray(values["translation"], dtype=np.float64)
            scale = float(values["scale"])
        except (KeyError, TypeError, ValueError) as e:
            raise NfplugError(f"{where}: not a scene normalisation ({type(e).__name__}: {e})") from None
        ok = rotation.shape == (3, 3) and translation.shape == (3,) and math.isfinite(scale) and scale > 0
        if not ok or not (np.isfinite(rotation).all() and np.isfinite(translation).all()):
            raise NfplugError(f"{where}: not a scene normalisation (needs a finite 3x3 rotation, 3 translations, a positive scale)")
        if np.abs(rotation.T @ rotation - np.eye(3)).max() > 1e-4 or np.linalg.det(rotation) < 0:
            raise NfplugError(f"{where}: 'rotation' is not a rotation matrix")
        return SceneTransform(rotation, translation, scale)


def rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The rotation ``[3, 3]`` that turns unit vector ``a`` onto unit vector ``b`` (about their common normal)."""
    a = a / np.linalg.norm(a)
    b = b / np.linalg.norm(b)
    v, c = np.cross(a, b), float(np.dot(a, b))
    if c < -1 + 1e-9:  # opposite: half a turn about any axis normal to a
        axis = np.cross(a, [1.0, 0.0, 0.0] if abs(a[0]) < 0.9 else [0.0, 1.0, 0.0])
        axis /= np.linalg.norm(axis)
        return 2 * np.outer(axis, axis) - np.eye(3)
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx / (1 + c)


def focus_point(c2w: np.ndarray) -> Optional[np.ndarray]:
    """The point nearest (least squares) to every camera's optical axis, or ``None`` when the axes
    do not meet in front of the cameras (nearly parallel axes: forward-facing captures).

    c2w: ``[N, 3, 4]`` OpenCV (column 2 is the viewing direction).
    """
    origins, dirs = c2w[:, :, 3], c2w[:, :, 2] / np.linalg.norm(c2w[:, :, 2], axis=-1, keepdims=True)
    projectors = np.eye(3)[None] - dirs[:, :, None] * dirs[:, None, :]  # onto each axis' normal plane
    A, b = projectors.sum(0), np.einsum("nij,nj->i", projectors, origins)
    eigenvalues = np.linalg.eigvalsh(A)
    if eigenvalues[0] < 0.05 * eigenvalues[-1]:  # axes close to parallel: the point is ill-defined
        return None
    point = np.linalg.solve(A, b)
    in_front = np.einsum("ni,ni->n", point[None] - origins, dirs) > 0
    return point if in_front.mean() > 0.9 else None


def fit_normalization(c2w: np.ndarray) -> SceneTransform:
    """Orient, centre and scale cameras ``c2w [N, 3, 4]`` (OpenCV) into the canonical frame (module doc)."""
    c2w = np.asarray(c2w, dtype=np.float64)
    up = -c2w[:, :, 1].mean(0)
    rotation = rotation_between(up, np.array([0.0, 0.0, 1.0])) if np.linalg.norm(up) > 1e-6 else np.eye(3)
    focus = focus_point(c2w)
    centre = focus if focus is not None else c2w[:, :, 3].mean(0)
    translation = -rotation @ centre
    extent = np.abs(c2w[:, :, 3] @ rotation.T + translation).max()
    scale = 1.0 / extent if extent > 1e-9 else 1.0
    return SceneTransform(rotation, translation, float(scale))


def render_bounds(hints: SceneHints, transform: SceneTransform, cameras: Cameras) -> Tuple[Tuple[float, ...], float, float]:
    """The scene box ``(xmin, ymin, zmin, xmax, ymax, zmax)``, near and far for the renderer, in the
    canonical frame, from what the dataset knows (``hints``) and the (canonical) ``cameras``.

    - A dataset that is already canonical (``normalize=False``) gives its own box and bounds.
    - Sparse points: the box holding the central 96% of them on each axis, padded by 10%.
    - Known near/far (LLFF bounds): the box holding every camera's view frustum between them.
    - Otherwise the cameras' box ``[-1, 1]^3``.
    ``near`` is the dataset's near (scaled) if known, else 1% of the box's size; ``far`` the
    farthest a ray from a camera can travel inside the box.
    """
    if not hints.normalize:
        aabb = tuple(hints.aabb or DEFAULT_BOX)
        return aabb, float(hints.near if hints.near is not None else 0.0), float(hints.far if hints.far is not None else 1e3)
    centres = cameras.c2w[:, :, 3].double().numpy()
    if hints.points is not None and len(hints.points) >= 8:
        points = transform.apply_points(np.asarray(hints.points, dtype=np.float64))
        lo, hi = np.percentile(points, 2, axis=0), np.percentile(points, 98, axis=0)
    elif hints.near is not None and hints.far is not None:
        corners = _frustum_corners(cameras, hints.near * transform.scale, hints.far * transform.scale)
        lo, hi = np.minimum(corners.min(0), centres.min(0)), np.maximum(corners.max(0), centres.max(0))
    elif hints.aabb is not None:
        box = np.asarray(hints.aabb, dtype=np.float64).reshape(2, 3)
        corners = np.array([[box[i, 0], box[j, 1], box[k, 2]] for i in (0, 1) for j in (0, 1) for k in (0, 1)])
        corners = transform.apply_points(corners)
        lo, hi = corners.min(0), corners.max(0)
    else:
        lo, hi = -np.ones(3), np.ones(3)
    pad = 0.1 * (hi - lo).max()
    lo, hi = lo - pad, hi + pad
    size = float((hi - lo).max())
    near = hints.near * transform.scale * 0.9 if hints.near is not None else 0.01 * size
    farthest_corner = np.linalg.norm(np.maximum(np.abs(centres - lo), np.abs(centres - hi)), axis=-1).max()
    far = hints.far * transform.scale * 1.1 if hints.far is not None else float(farthest_corner)
    return tuple(float(v) for v in (*lo, *hi)), float(near), float(max(far, near * 2))


def _frustum_corners(cameras: Cameras, near: float, far: float) -> np.ndarray:
    """``[N * 8, 3]`` corners of every camera's view frustum between depths ``near`` and ``far``."""
    w, h = cameras.width, cameras.height
    pixels = torch.tensor([[0.0, 0.0], [w, 0.0], [0.0, h], [w, h]], dtype=torch.float64)
    K = cameras.K.double()
    corners = []
    for depth in (near, far):
        x = (pixels[None, :, 0] - K[:, None, 0, 2]) / K[:, None, 0, 0]
        y = (pixels[None, :, 1] - K[:, None, 1, 2]) / K[:, None, 1, 1]
        cam = torch.stack([x, y, torch.ones_like(x)], dim=-1) * depth  # [N, 4, 3]
        c2w = cameras.c2w.double()
        corners.append(torch.einsum("nij,nkj->nki", c2w[:, :, :3], cam) + c2w[:, None, :, 3])
    return torch.cat(corners, dim=1).reshape(-1, 3).numpy()
