"""Pinhole cameras and ray generation.

Camera convention: OpenCV. A camera-to-world matrix ``c2w [3, 4]`` holds the camera
axes as columns: ``x`` to the right of the image, ``y`` down the image, ``z`` forward
into the scene; its last column is the camera centre. Blender / NeRF
``transform_matrix`` files use OpenGL instead (``y`` up, camera looking down ``-z``);
:func:`opengl_to_opencv` converts by negating the ``y`` and ``z`` axes.

Lens distortion follows OpenCV's radial-tangential model (COLMAP's ``OPENCV``; ``k1 k2 p1
p2``), applied per ray: :func:`generate_rays` undistorts each pixel position before
un-projecting it, so the images are used as captured (no resampling blur, no lost borders)
and the rays stay differentiable in the pixel position.

Pixel coordinates are continuous, ``[..., 0]`` the column (x) and ``[..., 1]`` the row
(y), with the centre of pixel ``(col, row)`` at ``(col + 0.5, row + 0.5)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor


@dataclass
class Cameras:
    """A set of pinhole cameras sharing one image size.

    Attributes:
        c2w: ``[N, 3, 4]`` camera-to-world, OpenCV convention (x right, y down, z forward).
        K: ``[N, 3, 3]`` intrinsics in pixels (``fx, fy`` on the diagonal, ``cx, cy``
            in the last column).
        width, height: image size in pixels.
        dist: ``[N, 4]`` OpenCV distortion ``k1, k2, p1, p2`` per camera, or ``None`` (pinhole).
    """

    c2w: Tensor
    K: Tensor
    width: int
    height: int
    dist: Optional[Tensor] = None

    def __len__(self) -> int:
        return self.c2w.shape[0]

    def to(self, device: torch.device | str) -> Cameras:
        dist = None if self.dist is None else self.dist.to(device)
        return Cameras(self.c2w.to(device), self.K.to(device), self.width, self.height, dist)

    def subset(self, index: Tensor) -> Cameras:
        """The cameras at ``index`` (a ``[M]`` long tensor)."""
        dist = None if self.dist is None else self.dist[index]
        return Cameras(self.c2w[index], self.K[index], self.width, self.height, dist)


UNDISTORT_ITERATIONS = 20
"""Fixed-point iterations of :func:`undistort` (OpenCV's ``undistortPoints`` iterates the same
way); phone lenses converge to ~1e-7 of a focal length in well under 20."""


def distort(xy: Tensor, dist: Tensor) -> Tensor:
    """Apply OpenCV radial-tangential distortion to normalised coordinates.

    Args:
        xy: ``[B, 2]`` undistorted normalised image coordinates ``(x / z, y / z)``.
        dist: ``[B, 4]`` ``k1, k2, p1, p2``.

    Returns:
        ``[B, 2]`` distorted normalised coordinates:
        ``x' = x (1 + k1 r^2 + k2 r^4) + 2 p1 x y + p2 (r^2 + 2 x^2)`` and
        ``y' = y (1 + k1 r^2 + k2 r^4) + p1 (r^2 + 2 y^2) + 2 p2 x y``.
    """
    x, y = xy[:, 0], xy[:, 1]
    k1, k2, p1, p2 = dist.unbind(-1)
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2 * r2
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return torch.stack([xd, yd], dim=-1)


def undistort(xy_distorted: Tensor, dist: Tensor) -> Tensor:
    """Invert :func:`distort` by fixed-point iteration ``xy <- (xy' - tangential(xy)) / radial(xy)``.

    Differentiable with respect to ``xy_distorted`` (through the iterations).
    """
    k1, k2, p1, p2 = dist.unbind(-1)
    xy = xy_distorted
    for _ in range(UNDISTORT_ITERATIONS):
        x, y = xy[:, 0], xy[:, 1]
        r2 = x * x + y * y
        radial = 1 + k1 * r2 + k2 * r2 * r2
        dx = 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        dy = p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
        xy = torch.stack([(xy_distorted[:, 0] - dx) / radial, (xy_distorted[:, 1] - dy) / radial], dim=-1)
    return xy


def opengl_to_opencv(c2w: Tensor) -> Tensor:
    """Convert camera-to-world matrices between the OpenGL and OpenCV conventions.

    Negates the camera's ``y`` and ``z`` axes (columns 1 and 2). The flip is its own
    inverse, so the same call converts OpenCV back to OpenGL.

    Args:
        c2w: ``[..., 3, 4]`` or ``[..., 4, 4]`` camera-to-world matrices.

    Returns:
        matrices of the same shape in the other convention.
    """
    flip = torch.ones(c2w.shape[-1], dtype=c2w.dtype, device=c2w.device)
    flip[1:3] = -1.0
    return c2w * flip


def generate_rays(cameras: Cameras, image_index: Tensor, pixel_xy: Tensor) -> tuple[Tensor, Tensor]:
    """Rays through continuous pixel positions (undistorted first if the cameras have ``dist``).

    Differentiable with respect to ``pixel_xy`` (samplers that move their pixels need
    ``d loss / d pixel_xy``).

    Args:
        cameras: the cameras, ``N`` of them.
        image_index: ``[B]`` long, the camera of each ray.
        pixel_xy: ``[B, 2]`` continuous pixel coordinates (x = column, y = row, pixel
            centres at ``+0.5``).

    Returns:
        ``rays_o [B, 3]`` camera centres and ``rays_d [B, 3]`` unit directions, in world
        coordinates.

    Example:
        >>> K = torch.tensor([[[2.0, 0, 2], [0, 2.0, 2], [0, 0, 1]]])
        >>> cams = Cameras(torch.eye(3, 4)[None], K, width=4, height=4)
        >>> generate_rays(cams, torch.tensor([0]), torch.tensor([[2.0, 2.0]]))[1]
        tensor([[0., 0., 1.]])
    """
    c2w = cameras.c2w[image_index]
    K = cameras.K[image_index]
    x = (pixel_xy[:, 0] - K[:, 0, 2]) / K[:, 0, 0]
    y = (pixel_xy[:, 1] - K[:, 1, 2]) / K[:, 1, 1]
    if cameras.dist is not None:
        x, y = undistort(torch.stack([x, y], dim=-1), cameras.dist[image_index]).unbind(-1)
    dirs_cam = torch.stack([x, y, torch.ones_like(x)], dim=-1)
    rays_d = (c2w[:, :, :3] @ dirs_cam[:, :, None])[:, :, 0]
    rays_d = rays_d / rays_d.norm(dim=-1, keepdim=True)
    rays_o = c2w[:, :, 3]
    return rays_o, rays_d


def pixel_centres(height: int, width: int, device: torch.device | str = "cpu") -> Tensor:
    """``[height * width, 2]`` centres (x = column + 0.5, y = row + 0.5) of every pixel, row by row."""
    rows, cols = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij")
    return torch.stack([cols, rows], dim=-1).reshape(-1, 2).float() + 0.5


def look_at(eye: Tensor, target: Tensor, up: Tensor) -> Tensor:
    """OpenCV camera-to-world matrices of cameras at ``eye`` looking at ``target``.

    Args:
        eye: ``[N, 3]`` camera centres.
        target: ``[3]`` or ``[N, 3]`` points to look at.
        up: ``[3]`` world up; image ``y`` (down) points away from it. Must not be
            parallel to the viewing direction.

    Returns:
        ``c2w [N, 3, 4]``.
    """
    forward = target - eye
    forward = forward / forward.norm(dim=-1, keepdim=True)
    right = torch.cross(forward, up.expand_as(forward), dim=-1)
    right = right / right.norm(dim=-1, keepdim=True)
    down = torch.cross(forward, right, dim=-1)
    return torch.stack([right, down, forward, eye], dim=-1)


def orbit_path(cameras: Cameras, n_frames: int) -> Cameras:
    """An orbit around the origin (or over the arc the cameras cover): :func:`nfplug.rendering.paths.orbit_path`,
    where the camera paths live (kept here for existing imports)."""
    from nfplug.rendering.paths import orbit_path as orbit

    return orbit(cameras, n_frames)
