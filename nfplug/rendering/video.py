"""Rendering a trained scene along a camera path into PNG frames, depth maps and an mp4."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import cv2
import imageio.v2 as imageio
import numpy as np
import torch
from tqdm import tqdm

from nfplug.data.cameras import Cameras
from nfplug.rendering.paths import camera_path
from nfplug.training.rundir import check_writable, writing


@dataclass
class Written:
    n_frames: int
    video: Optional[Path]
    seconds_per_frame: float = 0.0  # rendering only (not writing the files)


def colorize_depth(depth: torch.Tensor, opacity: torch.Tensor, near: float, far: float) -> np.ndarray:
    """``[H, W]`` expected depth (normalised by opacity, as nerfacc returns it) -> ``[H, W, 3]`` uint8.

    Depth is mapped from [near, far] through the turbo colormap; empty pixels
    (opacity ~ 0) are black.
    """
    d = depth.clamp(near, far)
    scaled = ((d - near) / (far - near) * 255).to(torch.uint8).cpu().numpy()
    colored = cv2.applyColorMap(scaled, cv2.COLORMAP_TURBO)[..., ::-1]
    return np.where((opacity.cpu().numpy() > 0.05)[..., None], colored, 0).astype(np.uint8)


def to_uint8(rgb: torch.Tensor) -> np.ndarray:
    return (rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()


def even_frame(frame: np.ndarray) -> np.ndarray:
    """``[H, W, C]`` padded to even ``H`` and ``W`` by repeating its last row and column: H.264 in
    yuv420p (what players expect) needs even sizes, and imageio would otherwise resize each frame
    with a warning."""
    return np.pad(frame, ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0)), mode="edge")


def _save(path: Path, array: np.ndarray) -> None:
    """Write an 8-bit image file; a failed write is one line naming ``path``."""
    with writing(path):
        imageio.imwrite(path, array)


def write_image(image: torch.Tensor, path: Path) -> Path:
    """``[H, W, C]`` in [0, 1] -> 8-bit PNG (grayscale when C = 1)."""
    check_writable(path.parent)  # creates it; one line if it cannot be written
    array = to_uint8(image)
    _save(path, array[..., 0] if array.shape[2] == 1 else array)
    return path


def scaled(cameras: Cameras, scale: float) -> Cameras:
    """The same cameras rendering ``scale`` times more pixels per side."""
    width, height = max(1, round(cameras.width * scale)), max(1, round(cameras.height * scale))
    factor = torch.tensor([width / cameras.width, height / cameras.height, 1.0], dtype=cameras.K.dtype)
    return Cameras(c2w=cameras.c2w, K=cameras.K * factor[:, None], width=width, height=height, dist=cameras.dist)


def render_path(task: Any, field: Any, path: str, out: Path, *, frames: int, fps: int, scale: float = 1.0) -> Written:
    """Render ``path`` into ``out``: rgb_NNNN.png, depth_NNNN.png, video.mp4, depth.mp4.

    ``path`` is 'orbit', 'spiral' or 'interpolate' (``frames`` pinhole cameras, see
    :mod:`nfplug.rendering.paths`) or a split name (that split's cameras as they are).
    """
    cameras = camera_path(task, path, frames)
    if scale != 1.0:
        cameras = scaled(cameras, scale)
    check_writable(out)  # creates it; one line if it cannot be written, before rendering
    rgbs, depths = [], []
    n = cameras.c2w.shape[0]
    rendering = 0.0
    for i in tqdm(range(n), desc=f"render {path}", dynamic_ncols=True):
        start = time.perf_counter()
        view = task.render_camera(field, cameras, i)
        rendering += time.perf_counter() - start
        rgb = to_uint8(view.rgb)
        depth = colorize_depth(view.depth, view.opacity, task.near, task.far)
        _save(out / f"rgb_{i:04d}.png", rgb)
        _save(out / f"depth_{i:04d}.png", depth)
        rgbs.append(rgb)
        depths.append(depth)
    video = out / "video.mp4"
    for target, frames_of in ((video, rgbs), (out / "depth.mp4", depths)):
        with writing(target):
            imageio.mimwrite(target, [even_frame(f) for f in frames_of], fps=fps, macro_block_size=2, quality=8)
    return Written(n, video, rendering / max(1, n))
