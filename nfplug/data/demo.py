"""The built-in demo scene: a small table-top still life, generated on first use.

Nothing is downloaded and nothing binary is committed: :func:`ensure_demo_scene`
renders the scene by analytic ray casting (deterministically, in a second or two) and
writes it in the Blender format, so it goes through
:func:`nfplug.data.scene.load_blender` like any user scene.

The scene (world ``z`` up, as in Blender, all inside ``[-1.5, 1.5]^3``): a wooden
table with four legs, and on it spheres and axis-aligned boxes of different colours
that hide each other from some views. Shading is Lambertian with a fixed directional
light, hard shadows and a sky-like ambient term, so colours do not depend on the view
direction. The background is transparent (alpha 0). Cameras sit on a sphere of radius
4 in the upper hemisphere looking at the origin, like the NeRF Blender scenes; use
near 2, far 6.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from nfplug.data.cameras import Cameras, generate_rays, look_at, opengl_to_opencv
from nfplug.runtime import cache_root

DEMO_NAME = "demo-v1"
IMAGE_SIZE = 64
CAMERA_ANGLE_X = 0.6911112070083618  # the NeRF Blender scenes' field of view
CAMERA_RADIUS = 4.0
N_VIEWS = 76  # 60 train, 8 val, 8 test
SUPERSAMPLING = 2  # 2x2 samples per pixel for anti-aliased edges
ELEVATION_RANGE = (math.radians(10.0), math.radians(75.0))

LIGHT_DIR = np.array([0.45, 0.3, 1.0]) / np.linalg.norm([0.45, 0.3, 1.0])
_EPS = 1e-6


@dataclass(frozen=True)
class _Sphere:
    centre: tuple[float, float, float]
    radius: float
    albedo: tuple[float, float, float]


@dataclass(frozen=True)
class _Box:
    lo: tuple[float, float, float]
    hi: tuple[float, float, float]
    albedo: tuple[float, float, float]


TABLE_TOP = -0.2
WOOD = (0.72, 0.53, 0.34)
OBJECTS: tuple[_Sphere | _Box, ...] = (
    _Box((-0.95, -0.95, TABLE_TOP - 0.12), (0.95, 0.95, TABLE_TOP), WOOD),
    _Box((-0.87, -0.87, -1.0), (-0.73, -0.73, TABLE_TOP - 0.12), WOOD),
    _Box((0.73, -0.87, -1.0), (0.87, -0.73, TABLE_TOP - 0.12), WOOD),
    _Box((-0.87, 0.73, -1.0), (-0.73, 0.87, TABLE_TOP - 0.12), WOOD),
    _Box((0.73, 0.73, -1.0), (0.87, 0.87, TABLE_TOP - 0.12), WOOD),
    _Sphere((0.35, -0.35, TABLE_TOP + 0.35), 0.35, (0.85, 0.14, 0.12)),
    _Box((-0.7, -0.65, TABLE_TOP), (-0.2, -0.15, TABLE_TOP + 0.65), (0.16, 0.32, 0.85)),
    _Sphere((-0.5, 0.45, TABLE_TOP + 0.25), 0.25, (0.18, 0.68, 0.25)),
    _Box((0.2, 0.25, TABLE_TOP), (0.6, 0.65, TABLE_TOP + 0.4), (0.95, 0.8, 0.15)),
    _Sphere((0.4, 0.45, TABLE_TOP + 0.58), 0.18, (0.95, 0.5, 0.1)),
    _Box((-0.1, 0.55, TABLE_TOP), (0.12, 0.77, TABLE_TOP + 1.05), (0.58, 0.27, 0.72)),
)


def signed_distance(points: np.ndarray) -> np.ndarray:
    """The scene's signed distance ``[N]`` at ``points [N, 3]`` (negative inside an object): the
    ground truth an exported mesh is checked against."""
    points = np.asarray(points, dtype=np.float64)
    distance = np.full(len(points), np.inf)
    for obj in OBJECTS:
        if isinstance(obj, _Sphere):
            d = np.linalg.norm(points - np.asarray(obj.centre), axis=1) - obj.radius
        else:
            lo, hi = np.asarray(obj.lo), np.asarray(obj.hi)
            q = np.abs(points - (lo + hi) / 2) - (hi - lo) / 2  # per axis: distance outside the slab
            d = np.linalg.norm(np.maximum(q, 0.0), axis=1) + np.minimum(q.max(axis=1), 0.0)
        distance = np.minimum(distance, d)
    return distance


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise dot product ``[R, 3] x [R, 3] -> [R]`` (faster than ``(a * b).sum(-1)``)."""
    return np.einsum("ij,ij->i", a, b)


def _box_slabs(box: _Box, rays_o: np.ndarray, rays_d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Entry distances ``t_near [R, 3]`` per slab and the exit distance ``t_far [R]``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (np.asarray(box.lo) - rays_o) / rays_d
        t2 = (np.asarray(box.hi) - rays_o) / rays_d
    t_exit = np.maximum(t1, t2)
    return np.minimum(t1, t2), np.minimum(np.minimum(t_exit[:, 0], t_exit[:, 1]), t_exit[:, 2])


def _intersect(obj: _Sphere | _Box, rays_o: np.ndarray, rays_d: np.ndarray) -> np.ndarray:
    """Distance ``t [R]`` along unit rays to their first hit with one object, inf on a miss."""
    if isinstance(obj, _Sphere):
        oc = rays_o - np.asarray(obj.centre)
        b = _dot(oc, rays_d)
        disc = b * b - (_dot(oc, oc) - obj.radius**2)
        t = -b - np.sqrt(np.maximum(disc, 0.0))
        return np.where((disc >= 0) & (t > _EPS), t, np.inf)
    t_near, t_far = _box_slabs(obj, rays_o, rays_d)
    t_min = np.maximum(np.maximum(t_near[:, 0], t_near[:, 1]), t_near[:, 2])
    return np.where((t_far >= t_min) & (t_min > _EPS), t_min, np.inf)


def _normal(obj: _Sphere | _Box, rays_o: np.ndarray, rays_d: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Outward unit normals ``[R, 3]`` at the ``points [R, 3]`` where the rays enter the object."""
    if isinstance(obj, _Sphere):
        return (points - np.asarray(obj.centre)) / obj.radius
    axis = _box_slabs(obj, rays_o, rays_d)[0].argmax(-1)
    rows = np.arange(len(rays_d))
    normal = np.zeros_like(rays_d)
    normal[rows, axis] = -np.sign(rays_d[rows, axis])
    return normal


def _first_hit(rays_o: np.ndarray, rays_d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``t [R]`` (inf on a miss) and index ``[R]`` into ``OBJECTS`` of the nearest object."""
    t_all = np.stack([_intersect(obj, rays_o, rays_d) for obj in OBJECTS])
    nearest = t_all.argmin(0)
    return t_all[nearest, np.arange(len(rays_o))], nearest


def _shade(rays_o: np.ndarray, rays_d: np.ndarray) -> np.ndarray:
    """Straight-alpha RGBA ``[R, 4]`` of ``[R]`` rays: Lambert + shadows + sky ambient."""
    t, nearest = _first_hit(rays_o, rays_d)
    hit = np.isfinite(t)
    points = rays_o + np.where(hit, t, 0.0)[:, None] * rays_d
    normal = np.zeros_like(rays_o)
    albedo = np.zeros_like(rays_o)
    for k, obj in enumerate(OBJECTS):
        on = hit & (nearest == k)
        normal[on] = _normal(obj, rays_o[on], rays_d[on], points[on])
        albedo[on] = obj.albedo
    lit = np.zeros(len(t), dtype=bool)
    shadow_o = points[hit] + 1e-4 * normal[hit]
    lit[hit] = ~np.isfinite(_first_hit(shadow_o, np.broadcast_to(LIGHT_DIR, shadow_o.shape).copy())[0])
    diffuse = np.clip(normal @ LIGHT_DIR, 0.0, None) * lit
    ambient = 0.3 + 0.1 * normal[:, 2]
    rgb = np.clip(albedo * (ambient + 0.75 * diffuse)[:, None], 0.0, 1.0)
    return np.concatenate([rgb * hit[:, None], hit[:, None].astype(np.float64)], axis=-1)


def _camera_positions() -> np.ndarray:
    """``[N_VIEWS, 3]`` camera centres on a golden-angle spiral over the upper hemisphere band."""
    i = np.arange(N_VIEWS) + 0.5
    lo, hi = (math.sin(e) for e in ELEVATION_RANGE)
    z = lo + (hi - lo) * i / N_VIEWS
    azimuth = i * math.pi * (3.0 - math.sqrt(5.0))
    ring = np.sqrt(1.0 - z**2)
    return CAMERA_RADIUS * np.stack([ring * np.cos(azimuth), ring * np.sin(azimuth), z], axis=-1)


def _split_indices() -> dict[str, list[int]]:
    """Interleave held-out views along the spiral so they cover all elevations."""
    val = [i for i in range(N_VIEWS) if i % 9 == 4]
    test = [i for i in range(N_VIEWS) if i % 9 == 8]
    train = [i for i in range(N_VIEWS) if i not in val and i not in test]
    return {"train": train, "val": val, "test": test}


def _camera_rays() -> np.ndarray:
    """Unit directions ``[S * S, 3]`` in the camera frame of the supersampled pixels, row-major."""
    size = IMAGE_SIZE * SUPERSAMPLING
    focal = 0.5 * size / math.tan(0.5 * CAMERA_ANGLE_X)
    K = torch.tensor([[focal, 0.0, size / 2], [0.0, focal, size / 2], [0.0, 0.0, 1.0]], dtype=torch.float64)
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    pixel_xy = torch.stack([cols.flatten(), rows.flatten()], dim=-1).double() + 0.5
    identity = Cameras(torch.eye(3, 4, dtype=torch.float64)[None], K[None], size, size)
    return generate_rays(identity, torch.zeros(len(pixel_xy), dtype=torch.long), pixel_xy)[1].numpy()


def _render(c2w: np.ndarray, dirs_cam: np.ndarray) -> np.ndarray:
    """RGBA uint8 ``[IMAGE_SIZE, IMAGE_SIZE, 4]`` seen by one OpenCV camera ``c2w [3, 4]``.

    ``dirs_cam`` comes from :func:`_camera_rays`; rotating them is cheaper than
    generating rays per view.
    """
    rays_d = dirs_cam @ c2w[:, :3].T
    rays_o = np.broadcast_to(c2w[:, 3], rays_d.shape)
    size = IMAGE_SIZE * SUPERSAMPLING
    rgba = _shade(rays_o, rays_d).reshape(size, size, 4)
    # Average premultiplied colour so that edge pixels composite correctly on any background.
    premultiplied = np.concatenate([rgba[..., :3] * rgba[..., 3:], rgba[..., 3:]], axis=-1)
    s = SUPERSAMPLING
    pooled = premultiplied.reshape(IMAGE_SIZE, s, IMAGE_SIZE, s, 4).mean(axis=(1, 3))
    alpha = pooled[..., 3:]
    rgb = np.where(alpha > 0, pooled[..., :3] / np.maximum(alpha, 1e-12), 0.0)
    return np.round(np.concatenate([rgb, alpha], axis=-1) * 255.0).clip(0, 255).astype(np.uint8)


def generate_demo_scene(out_dir: Path) -> None:
    """Render the demo scene into ``out_dir`` (created) in the Blender format."""
    eye = torch.from_numpy(_camera_positions())
    c2w = look_at(eye, torch.zeros(3, dtype=torch.float64), torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    bottom_row = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64).expand(len(c2w), 1, 4)
    c2w_gl = opengl_to_opencv(torch.cat([c2w, bottom_row], dim=1))
    dirs_cam = _camera_rays()
    for split, indices in _split_indices().items():
        (out_dir / split).mkdir(parents=True)
        frames = []
        for k, i in enumerate(indices):
            rgba = _render(c2w[i].numpy(), dirs_cam)
            cv2.imwrite(str(out_dir / split / f"r_{k}.png"), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
            matrix = [[round(float(v), 12) for v in row] for row in c2w_gl[i]]
            frames.append({"file_path": f"./{split}/r_{k}", "transform_matrix": matrix})
        meta = {"camera_angle_x": CAMERA_ANGLE_X, "frames": frames}
        (out_dir / f"transforms_{split}.json").write_text(json.dumps(meta, indent=2) + "\n")


def _is_complete(scene_dir: Path) -> bool:
    return all((scene_dir / f"transforms_{split}.json").is_file() for split in _split_indices())


def ensure_demo_scene(cache_dir: Path | None = None) -> Path:
    """The demo scene's folder, generating it there on first use.

    Args:
        cache_dir: cache root; default ``$NFPLUG_CACHE`` if set, else ``~/.cache/nfplug``.

    Returns:
        ``cache_dir / "demo-v1"``, a Blender-format scene with train, val and test splits.

    The scene is rendered into a temporary folder next to it and renamed into place,
    so an interrupted generation never leaves a half-written scene behind.
    """
    if cache_dir is None:
        cache_dir = cache_root()
    cache_dir = Path(cache_dir).expanduser()
    scene_dir = cache_dir / DEMO_NAME
    if _is_complete(scene_dir):
        return scene_dir
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{DEMO_NAME}-", dir=cache_dir))
    try:
        generate_demo_scene(tmp_dir)
        if scene_dir.exists() and not _is_complete(scene_dir):
            shutil.rmtree(scene_dir)  # left behind by hand-editing; it is only our cache
        try:
            tmp_dir.rename(scene_dir)
        except OSError:
            if not _is_complete(scene_dir):  # lost no race with a concurrent generator
                raise
    finally:
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir)
    return scene_dir
