"""Camera paths for videos of a trained scene: an orbit, LLFF's spiral, or a path through the capture.

Every path is a set of pinhole :class:`~nfplug.data.cameras.Cameras` (OpenCV: x right, y down,
z forward; no lens distortion) in the scene's canonical frame (:mod:`nfplug.data.normalize`):
world ``+z`` is up and, for object and 360-degree captures, the origin is the point the cameras
look at; for forward-facing captures it is the mean camera centre.

- ``orbit``: a closed circle around the origin at the cameras' mean distance and elevation, or,
  for a capture that covers part of the circle, a sweep there and back over the arc it covers.
- ``spiral``: LLFF's ``render_path_spiral`` (Mildenhall et al. 2019, ``load_llff.py``): a spiral
  about the mean camera, in its image plane, every frame looking at one point ahead of it.
- ``interpolate``: a centripetal Catmull-Rom spline through the training camera centres in capture
  order, orientations by quaternion slerp; given at least as many frames as cameras, it passes
  through every camera.

Dataset splits (``val``, ``test``, ``train``) are paths too: their cameras as they are.
"""

from __future__ import annotations

import math
import re
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from nfplug.data.cameras import Cameras, look_at
from nfplug.data.colmap_model import qvec_to_rotmat, rotmat_to_qvec
from nfplug.errors import NfplugError

SYNTHETIC_PATHS = ("orbit", "spiral", "interpolate")
"""Paths made up from the training or held-out cameras; ``--frames`` sets their length."""
SPLIT_PATHS = ("val", "test", "train")
"""Paths that are a dataset split's own cameras."""

SPIRAL_TURNS = 2.0
SPIRAL_Z_RATE = 0.5
"""LLFF's ``N_rots = 2`` and ``zrate = .5``: two turns in the image plane, one slow swing along the axis."""
SPIRAL_RADIUS_PERCENTILE = 0.9
SPIRAL_FOCUS_WEIGHT = 0.75
"""LLFF's ``dt``: the focus depth is the weighted harmonic mean ``1 / ((1 - dt) / near + dt / far)``."""


def default_path(layout: str) -> str:
    """The path ``nfplug render`` uses when none is given: ``spiral`` for forward-facing captures
    (an orbit would turn away from what they saw), ``orbit`` otherwise."""
    return "spiral" if layout == "forward-facing" else "orbit"


def camera_path(task: Any, name: str, n_frames: int) -> Cameras:
    """The cameras of path ``name`` for a :class:`~nfplug.training.scene_task.SceneTask`.

    ``orbit`` is fitted to the held-out split's cameras (a Blender scene's val split), so it loads
    no training images; ``spiral`` and ``interpolate`` to the training cameras, ``interpolate`` in
    :func:`capture_order`.
    """
    if name == "orbit":
        return orbit_path(task.split(task.eval_split_name).cameras, n_frames)
    if name == "spiral":
        near, far = task.depth_bounds  # world depths (the marched near/far are NDC's with NDC rays)
        if not 0 < near < far:
            raise NfplugError(f"--path spiral: the scene has no usable near/far bounds (near {near:g}, far {far:g})")
        return spiral_path(task.split("train").cameras, n_frames, near, far)
    if name == "interpolate":
        train = task.split("train")
        ordered = train.cameras.subset(torch.tensor(capture_order(train.paths)))
        return interpolate_path(ordered, n_frames, look_at_centre=getattr(task, "layout", "") == "360")
    return task.split(name).cameras


def capture_order(paths: Sequence[str]) -> List[int]:
    """Indices that put image ``paths`` in capture order: by name, numbers compared as numbers
    (``2.jpg`` before ``10.jpg``; the same as plain name order for zero-padded names, as
    ``process-data`` writes them)."""

    def key(path: str) -> list:
        return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", str(path))]

    return sorted(range(len(paths)), key=lambda i: key(paths[i]))


# ------------------------------------------------------------------ orbit


def orbit_path(cameras: Cameras, n_frames: int) -> Cameras:
    """A closed camera path around the origin at the cameras' mean distance and elevation, for videos.

    Cameras all around the scene (no two neighbours, by azimuth, more than
    :data:`ORBIT_MAX_GAP_DEGREES` apart) give a full circle, starting at the azimuth of the first
    camera and turning counter-clockwise seen from above. A capture that covers only part of the
    circle (a fox on a wall, an object shot from one side) gives a sweep over the arc it covers
    instead, there and back, easing at the ends: a full turn would spend half the video looking at
    what no photo saw. The arc runs from the camera after the largest azimuth gap to the one before
    it. Distances and elevations are averaged, never positions, so the path stays on the circle.
    Every frame looks at the origin, upright (world ``z`` up); intrinsics are the first camera's.

    Args:
        cameras: ``N`` cameras the path is fitted to.
        n_frames: number of cameras on the path; frame ``n_frames`` would equal frame 0.

    Returns:
        ``n_frames`` cameras.
    """
    centres = cameras.c2w[:, :, 3]
    radius = centres.norm(dim=-1).clamp_min(1e-8)
    # Keep clear of the poles, where "up" is parallel to the viewing direction.
    max_elevation = math.radians(89.0)
    elevation = torch.asin((centres[:, 2] / radius).clamp(-1.0, 1.0)).mean().clamp(-max_elevation, max_elevation)
    start, arc = orbit_arc(torch.atan2(centres[:, 1], centres[:, 0]))
    phase = torch.arange(n_frames, dtype=centres.dtype, device=centres.device) * (2 * math.pi / n_frames)
    azimuth = start + (phase if arc is None else arc * 0.5 * (1.0 - torch.cos(phase)))
    r = radius.mean()
    eye = torch.stack(
        [
            r * torch.cos(elevation) * torch.cos(azimuth),
            r * torch.cos(elevation) * torch.sin(azimuth),
            (r * torch.sin(elevation)).expand_as(azimuth),
        ],
        dim=-1,
    )
    up = torch.tensor([0.0, 0.0, 1.0], dtype=centres.dtype, device=centres.device)
    return _pinhole(look_at(eye, torch.zeros_like(up), up), cameras)


ORBIT_MAX_GAP_DEGREES = 90.0
"""An orbit is a full circle when no two cameras neighbouring in azimuth are further apart than this."""


def orbit_arc(azimuth: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
    """``(start, arc)`` of the azimuths ``[N]`` (radians) that cameras cover: ``arc`` is None and
    ``start`` the first camera's azimuth when they go all around (:data:`ORBIT_MAX_GAP_DEGREES`);
    otherwise the covered arc runs counter-clockwise from ``start`` over ``arc`` radians (the
    complement of the largest gap between neighbours)."""
    if azimuth.numel() < 2:
        return azimuth[0], None
    ordered = torch.sort(torch.remainder(azimuth, 2 * math.pi)).values
    gaps = torch.cat([ordered.diff(), ordered[:1] + 2 * math.pi - ordered[-1:]])
    largest = int(gaps.argmax())
    if gaps[largest] <= math.radians(ORBIT_MAX_GAP_DEGREES) + 1e-9:
        return azimuth[0], None
    return ordered[(largest + 1) % len(ordered)], 2 * math.pi - gaps[largest]


# ------------------------------------------------------------------ spiral


def mean_pose(c2w: Tensor) -> Tensor:
    """The average camera ``[3, 4]`` (OpenCV) of ``c2w [N, 3, 4]``, as LLFF's ``poses_avg``.

    Centre: the mean centre. Forward: the normalised mean viewing direction, kept exactly; right
    and down are re-orthonormalised from the mean down axis.
    """
    centre = c2w[:, :, 3].mean(0)
    forward = _unit(c2w[:, :, 2].mean(0))
    right = _unit(torch.cross(c2w[:, :, 1].mean(0), forward, dim=-1))
    down = torch.cross(forward, right, dim=-1)
    return torch.stack([right, down, forward, centre], dim=-1)


def focus_depth(near: float, far: float) -> float:
    """LLFF's focus depth ``1 / ((1 - dt) / near + dt / far)`` with ``dt = 0.75``, in scene units."""
    return 1.0 / ((1.0 - SPIRAL_FOCUS_WEIGHT) / near + SPIRAL_FOCUS_WEIGHT / far)


def spiral_radii(cameras: Cameras) -> Tensor:
    """``[3]`` the 90th percentile of ``|camera centre - mean centre|`` along the mean camera's x, y, z."""
    pose = mean_pose(cameras.c2w.double())
    offsets = (cameras.c2w.double()[:, :, 3] - pose[:, 3]) @ pose[:, :3]  # in the mean camera's axes
    return torch.quantile(offsets.abs(), SPIRAL_RADIUS_PERCENTILE, dim=0)


def spiral_path(cameras: Cameras, n_frames: int, near: float, far: float) -> Cameras:
    """LLFF's ``render_path_spiral`` about the mean of ``cameras`` (forward-facing captures).

    Frame ``i`` at angle ``theta = 2 * 2 pi * i / n_frames`` sits at the mean camera's centre plus
    ``(rx cos theta, ry sin theta, rz sin(theta / 2))`` in the mean camera's axes (radii from
    :func:`spiral_radii`), and looks at the focus point, :func:`focus_depth` ``(near, far)`` ahead of
    the mean camera on its axis, with the mean camera's up. Intrinsics are the first camera's.

    Args:
        cameras: ``N`` (training) cameras, OpenCV.
        n_frames: frames of the path.
        near, far: the scene's ray bounds (``0 < near < far``), canonical units.

    Returns:
        ``n_frames`` pinhole cameras.
    """
    if not 0 < near < far:
        raise ValueError(f"spiral_path: need 0 < near < far, got {near}, {far}")
    pose = mean_pose(cameras.c2w.double())
    radii = spiral_radii(cameras)
    theta = torch.arange(n_frames, dtype=torch.float64) * (2 * math.pi * SPIRAL_TURNS / n_frames)
    offsets = torch.stack([torch.cos(theta), torch.sin(theta), torch.sin(theta * SPIRAL_Z_RATE)], dim=-1) * radii
    eye = pose[:, 3] + offsets @ pose[:, :3].T
    frames = look_at(eye, spiral_focus(pose, near, far), -pose[:, 1])
    return _pinhole(frames.to(cameras.c2w.dtype), cameras)


def spiral_focus(pose: Tensor, near: float, far: float) -> Tensor:
    """``[3]`` the point every frame of :func:`spiral_path` looks at: :func:`focus_depth` ahead of
    the mean camera ``pose [3, 4]`` (:func:`mean_pose`) on its axis."""
    return pose[:, 3] + focus_depth(near, far) * pose[:, 2]


# ------------------------------------------------------------------ interpolate


def keyframes(n_cameras: int, n_frames: int) -> List[int]:
    """Frame index of each camera on an interpolated path: ``round(i (n_frames - 1) / (n_cameras - 1))``,
    halves rounded up, computed exactly in integers."""
    if n_cameras == 1:
        return [0]
    return [(2 * i * (n_frames - 1) + n_cameras - 1) // (2 * (n_cameras - 1)) for i in range(n_cameras)]


def path_parameters(n_cameras: int, n_frames: int) -> Tensor:
    """``[n_frames]`` float64 position of each frame along the cameras, in ``[0, n_cameras - 1]``
    (``2.25``: a quarter of the way from camera 2 to camera 3).

    With at least as many frames as cameras, camera ``i`` is exactly at frame :func:`keyframes` ``[i]``
    and the frames between two keyframes are spread evenly; with fewer, the frames are spread
    evenly over the whole path and land on the cameras only where they happen to.
    """
    frames = torch.arange(n_frames, dtype=torch.float64)
    if n_cameras == 1 or n_frames == 1:
        return torch.zeros(n_frames, dtype=torch.float64)
    if n_frames < n_cameras:
        return frames * (n_cameras - 1) / (n_frames - 1)
    keys = keyframes(n_cameras, n_frames)
    segment = torch.searchsorted(torch.tensor(keys[1:-1], dtype=torch.float64), frames, right=True)
    start = torch.tensor(keys, dtype=torch.float64)[segment]
    length = torch.tensor(keys, dtype=torch.float64).diff()[segment]
    return segment + (frames - start) / length


def catmull_rom(points: Tensor, s: Tensor, alpha: float = 0.5) -> Tensor:
    """Catmull-Rom spline through ``points [n, D]`` at parameters ``s [F]`` in ``[0, n - 1]`` -> ``[F, D]``.

    ``alpha`` 0.5 is the centripetal spline (Yuksel et al. 2011, "Parameterization and
    applications of Catmull-Rom curves"): no cusps or self-intersections within a segment, even
    for unevenly spaced points; 0 is the uniform spline. Written in Hermite form, segment ``i``
    from ``P_i`` to ``P_{i+1}`` with knot gaps ``d_k = |P_{k+1} - P_k|^alpha`` and tangents
    ``m_i = d_i ((P_i - P_{i-1}) / d_{i-1} - (P_{i+1} - P_{i-1}) / (d_{i-1} + d_i) + (P_{i+1} - P_i) / d_i)``,
    so it passes through ``points[i]`` at ``s = i`` exactly. The ends use mirrored points
    ``2 P_0 - P_1`` and ``2 P_{n-1} - P_{n-2}``. Coincident points give a standing segment.
    """
    n = points.shape[0]
    if n == 1:
        return points.expand(s.shape[0], -1).clone()
    padded = torch.cat([2 * points[:1] - points[1:2], points, 2 * points[-1:] - points[-2:-1]])
    gaps = (padded.diff(dim=0).norm(dim=-1) ** alpha).clamp_min(1e-12)  # gaps[k]: padded k -> k + 1
    segment = s.floor().long().clamp(0, n - 2)
    t = (s - segment)[:, None]
    p0, p1, p2, p3 = (padded[segment + k] for k in range(4))
    d0, d1, d2 = (gaps[segment + k][:, None] for k in range(3))
    m1 = d1 * ((p1 - p0) / d0 - (p2 - p0) / (d0 + d1) + (p2 - p1) / d1)
    m2 = d1 * ((p2 - p1) / d1 - (p3 - p1) / (d1 + d2) + (p3 - p2) / d2)
    t2, t3 = t * t, t * t * t
    return (2 * t3 - 3 * t2 + 1) * p1 + (t3 - 2 * t2 + t) * m1 + (-2 * t3 + 3 * t2) * p2 + (t3 - t2) * m2


def interpolate_path(cameras: Cameras, n_frames: int, *, look_at_centre: bool = False) -> Cameras:
    """A smooth path through ``cameras`` in their order (capture order for photos and video).

    Centres follow :func:`catmull_rom` (centripetal), orientations :func:`slerp` between
    consecutive cameras, both at :func:`path_parameters`: with ``n_frames >= N`` camera ``i`` is
    frame :func:`keyframes` ``[i]`` exactly. Intrinsics are the first camera's.

    With ``look_at_centre`` (360-degree captures) every frame instead looks at the origin, upright
    (world ``+z`` up): photos taken far apart (a turn of 150 degrees, one held upside down) would
    otherwise slerp through orientations that look past the scene. Frames whose view is nearly
    vertical keep the slerped orientation.

    Args:
        cameras: ``N`` cameras, OpenCV, in path order.
        n_frames: frames of the path.
        look_at_centre: orient every frame towards the origin (see above).

    Returns:
        ``n_frames`` pinhole cameras.
    """
    c2w = cameras.c2w.double()
    n = c2w.shape[0]
    s = path_parameters(n, n_frames)
    eye = catmull_rom(c2w[:, :, 3], s)
    quaternions = torch.from_numpy(np.stack([rotmat_to_qvec(R) for R in c2w[:, :, :3].numpy()]))
    segment = s.floor().long().clamp(0, max(n - 2, 0))
    following = (segment + 1).clamp(max=n - 1)
    between = slerp(quaternions[segment], quaternions[following], s - segment)
    rotation = torch.from_numpy(np.stack([qvec_to_rotmat(q) for q in between.numpy()]))
    if look_at_centre:
        up = torch.tensor([0.0, 0.0, 1.0], dtype=eye.dtype)
        facing = look_at(eye, torch.zeros(3, dtype=eye.dtype), up)[:, :, :3]
        usable = (eye.norm(dim=-1) > 1e-6) & (_unit(-eye) @ up).abs().lt(0.99)
        rotation = torch.where(usable[:, None, None], facing, rotation)
    frames = torch.cat([rotation, eye[:, :, None]], dim=-1)
    return _pinhole(frames.to(cameras.c2w.dtype), cameras)


# ------------------------------------------------------------------ rotations


def slerp(q0: Tensor, q1: Tensor, t: Tensor) -> Tensor:
    """Spherical linear interpolation of unit quaternions ``[..., 4]`` ``(w, x, y, z)`` at ``t [...]``
    in ``[0, 1]`` (Shoemake 1985), along the shorter arc (``q`` and ``-q`` are the same rotation).
    Quaternions to and from matrices: :func:`~nfplug.data.colmap_model.rotmat_to_qvec`,
    :func:`~nfplug.data.colmap_model.qvec_to_rotmat`."""
    dot = (q0 * q1).sum(-1, keepdim=True)
    q1 = torch.where(dot < 0, -q1, q1)
    dot = dot.abs().clamp(max=1.0)
    t = t[..., None].to(q0.dtype)
    angle = torch.acos(dot)
    sin = torch.sin(angle)
    nearly_equal = sin < 1e-6  # the weights tend to (1 - t, t)
    safe = torch.where(nearly_equal, torch.ones_like(sin), sin)
    w0 = torch.where(nearly_equal, 1 - t, torch.sin((1 - t) * angle) / safe)
    w1 = torch.where(nearly_equal, t, torch.sin(t * angle) / safe)
    q = w0 * q0 + w1 * q1
    return q / q.norm(dim=-1, keepdim=True)


# ------------------------------------------------------------------ helpers


def _unit(v: Tensor) -> Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _pinhole(c2w: Tensor, like: Cameras) -> Cameras:
    """Cameras at ``c2w [F, 3, 4]`` with ``like``'s first intrinsics and image size, no distortion."""
    K = like.K[:1].expand(c2w.shape[0], 3, 3).clone()
    return Cameras(c2w, K, like.width, like.height)
