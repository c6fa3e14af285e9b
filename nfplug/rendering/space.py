"""The spaces a scene is marched and stored in: world or NDC rays, with or without contraction.

The renderer marches rays through the occupancy grid in *marching space* and hands sample
positions to the field in *field space*:

- **Rays** (``rays``): ``world`` marches the (normalised) world rays; ``ndc`` maps them first
  to normalised device coordinates of one reference camera, as the NeRF paper does for
  forward-facing (LLFF) captures: the frustum from the near plane to infinity becomes a box,
  ``z`` running from -1 (near plane) to 1 (infinity), so even steps in NDC are even steps in
  disparity.
- **Contraction** (``contraction``): ``none`` gives the field world positions; ``sphere``
  (mip-NeRF 360) and ``cube`` (nerfstudio's L-infinity variant) give it
  ``contract((x - centre) / half)``, which is the identity inside the scene box (``|y| <= 1``)
  and squeezes everything beyond it into ``1 < |y| < 2``: the field's resolution goes to the
  scene, and the background out to infinity still gets a place.

The field always sees the world view direction; only positions change space.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor

from nfplug.errors import NfplugError

CONTRACTIONS = ("none", "sphere", "cube")
RAYS = ("world", "ndc")
CONTRACTED_BOX = (-2.0, -2.0, -2.0, 2.0, 2.0, 2.0)
"""The field's box under a contraction: every contracted point has ``|y| < 2``."""


def _norm(y: Tensor, kind: str) -> Tensor:
    if kind == "sphere":
        return y.norm(dim=-1, keepdim=True)
    return y.abs().amax(dim=-1, keepdim=True)


def contract(y: Tensor, kind: str = "sphere") -> Tensor:
    """``y [..., 3]`` (scene box at ``|y| <= 1``) -> contracted ``[..., 3]``, ``|.| < 2``.

    ``sphere``: ``y`` if ``|y|_2 <= 1`` else ``(2 - 1/|y|) y/|y|`` (mip-NeRF 360, eq. 10);
    ``cube``: the same with the L-infinity norm (nerfstudio's ``SceneContraction(order=inf)``).
    Continuous with a continuous gradient at ``|y| = 1``; monotone along every ray from the origin.
    """
    if kind == "none":
        return y
    n = _norm(y, kind).clamp_min(1e-12)
    return torch.where(n <= 1, y, (2 - 1 / n) * (y / n))


def uncontract(z: Tensor, kind: str = "sphere") -> Tensor:
    """Inverse of :func:`contract` for ``|z| < 2`` (``|z| >= 2`` is infinitely far: clamped just inside)."""
    if kind == "none":
        return z
    m = _norm(z, kind).clamp(1e-12, 2 - 1e-6)
    return torch.where(m <= 1, z, z / m / (2 - m))


def ndc_rays(rays_o: Tensor, rays_d: Tensor, w2c: Tensor, intrinsics: Sequence[float], near: float) -> Tuple[Tensor, Tensor]:
    """World rays -> NDC rays of the reference camera ``w2c [3, 4]`` (OpenCV: looking down ``+z``).

    The origin moves along its ray to the near plane ``z = near``; then
    ``x' = (fx x/z + cx - W/2) / (W/2)``, ``y'`` likewise, ``z' = 1 - 2 near / z``. The direction is
    the NDC line's, normalised (so ``t`` in NDC is arc length, as the marcher expects).
    Differentiable in ``rays_o`` and ``rays_d``. ``intrinsics``: ``(fx, fy, cx, cy, W, H)``.
    """
    fx, fy, cx, cy, w, h = (float(v) for v in intrinsics)
    R, t = w2c[:, :3].to(rays_o), w2c[:, 3].to(rays_o)
    o = rays_o @ R.T + t
    d = rays_d @ R.T
    dz = d[:, 2].clamp_min(1e-6)  # rays that turn away from the reference camera's view: nearly parallel to it
    o = o + ((near - o[:, 2]) / dz)[:, None] * torch.stack([d[:, 0], d[:, 1], dz], -1)
    ox, oy, oz = o.unbind(-1)
    sx, sy = fx / (w / 2), fy / (h / 2)
    o_ndc = torch.stack([sx * ox / oz + (cx - w / 2) / (w / 2), sy * oy / oz + (cy - h / 2) / (h / 2), 1 - 2 * near / oz], -1)
    d_ndc = torch.stack([sx * (d[:, 0] / dz - ox / oz), sy * (d[:, 1] / dz - oy / oz), 2 * near / oz], -1)
    return o_ndc, d_ndc / d_ndc.norm(dim=-1, keepdim=True)


def world_to_ndc(points: Tensor, w2c: Tensor, intrinsics: Sequence[float], near: float) -> Tensor:
    """World points ``[N, 3]`` (in front of the reference camera) -> NDC, the map :func:`ndc_rays` uses."""
    fx, fy, cx, cy, w, h = (float(v) for v in intrinsics)
    p = points @ w2c[:, :3].to(points).T + w2c[:, 3].to(points)
    x, y, z = p.unbind(-1)
    return torch.stack([fx * x / z / (w / 2) + (cx - w / 2) / (w / 2), fy * y / z / (h / 2) + (cy - h / 2) / (h / 2), 1 - 2 * near / z], -1)


@dataclass
class SceneSpace:
    """Where rays are marched and where the field lives (see the module doc).

    Attributes:
        rays: ``world`` or ``ndc``.
        contraction: ``none``, ``sphere`` or ``cube``.
        box: ``[6]`` the box mapped to ``|y| <= 1`` by a contraction.
        ndc_w2c: ``[3, 4]`` world-to-camera of the NDC reference camera (``rays == 'ndc'``).
        ndc_intrinsics: ``(fx, fy, cx, cy, W, H)`` of that camera.
        ndc_near: its near plane (world units along its axis).
    """

    rays: str = "world"
    contraction: str = "none"
    box: Optional[Tuple[float, ...]] = None
    ndc_w2c: Optional[Tensor] = None
    ndc_intrinsics: Optional[Tuple[float, ...]] = None
    ndc_near: float = 0.0

    def __post_init__(self) -> None:
        if self.rays not in RAYS or self.contraction not in CONTRACTIONS:
            raise NfplugError(f"scene space: rays must be one of {RAYS} and contraction one of {CONTRACTIONS}, got {self.rays!r}, {self.contraction!r}")
        if self.contraction != "none" and (self.box is None or len(self.box) != 6):
            raise NfplugError("scene space: a contraction needs the scene box it maps to |y| <= 1")
        if self.rays == "ndc" and (self.ndc_w2c is None or self.ndc_intrinsics is None or not self.ndc_near > 0):
            raise NfplugError("scene space: NDC rays need a reference camera and a positive near plane")
        if self.box is not None:
            lo, hi = torch.tensor(self.box[:3], dtype=torch.float32), torch.tensor(self.box[3:], dtype=torch.float32)
            self._centre, self._half = (lo + hi) / 2, (hi - lo) / 2

    def march_rays(self, rays_o: Tensor, rays_d: Tensor) -> Tuple[Tensor, Tensor]:
        """World rays -> the rays the occupancy grid is marched along (unit directions)."""
        if self.rays == "world":
            return rays_o, rays_d
        return ndc_rays(rays_o, rays_d, self.ndc_w2c, self.ndc_intrinsics, self.ndc_near)

    def to_field(self, x: Tensor) -> Tensor:
        """Marching-space positions ``[N, 3]`` -> the positions the field is queried at."""
        if self.contraction == "none":
            return x
        return contract((x - self._centre.to(x)) / self._half.to(x), self.contraction)

    def field_aabb(self, marching_box: Sequence[float]) -> Tuple[float, ...]:
        """The box the field covers, given the outermost box the rays are marched in."""
        return CONTRACTED_BOX if self.contraction != "none" else tuple(float(v) for v in marching_box)

    def to_json(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"rays": self.rays, "contraction": self.contraction}
        if self.box is not None:
            out["contraction_box"] = list(self.box)
        if self.rays == "ndc":
            out["ndc"] = {"w2c": self.ndc_w2c.tolist(), "intrinsics": list(self.ndc_intrinsics), "near": self.ndc_near}
        return out

    @staticmethod
    def from_json(values: Optional[Dict[str, Any]]) -> "SceneSpace":
        """Inverse of :meth:`to_json`; ``None`` (a run from before spaces existed): world rays, no contraction."""
        if values is None:
            return SceneSpace()
        ndc = values.get("ndc")
        box = values.get("contraction_box")
        return SceneSpace(
            rays=str(values["rays"]),
            contraction=str(values["contraction"]),
            box=tuple(float(v) for v in box) if box is not None else None,
            ndc_w2c=torch.tensor(ndc["w2c"], dtype=torch.float32) if ndc else None,
            ndc_intrinsics=tuple(float(v) for v in ndc["intrinsics"]) if ndc else None,
            ndc_near=float(ndc["near"]) if ndc else 0.0,
        )

    def describe(self) -> str:
        parts = ["NDC rays" if self.rays == "ndc" else "world rays"]
        if self.contraction != "none":
            parts.append(f"{self.contraction} contraction")
        return ", ".join(parts)


def mean_camera_w2c(c2w: Tensor) -> Tensor:
    """``[3, 4]`` world-to-camera of the average of OpenCV cameras ``c2w [N, 3, 4]``: at their mean
    centre, looking along their mean viewing direction, with their mean 'down' (``+y``)."""
    c2w = c2w.double()
    forward = c2w[:, :, 2].mean(0)
    forward = forward / forward.norm()
    down = c2w[:, :, 1].mean(0)
    right = torch.linalg.cross(down, forward)
    right = right / right.norm()
    down = torch.linalg.cross(forward, right)
    R = torch.stack([right, down, forward], 0)  # rows: camera axes in world
    centre = c2w[:, :, 3].mean(0)
    return torch.cat([R, (-R @ centre)[:, None]], 1).float()


def ndc_box(corner_rays: Tuple[Tensor, Tensor], w2c: Tensor, intrinsics: Sequence[float], near: float, pad: float = 0.05) -> Tuple[float, ...]:
    """The NDC box holding every given ray from the near plane to infinity (rays map to segments in
    NDC whose ends are at ``z' = -1`` and ``z' -> 1``), padded by ``pad`` of its size in x and y."""
    o, d = ndc_rays(*corner_rays, w2c, intrinsics, near)
    start = o
    end_t = (1.0 - o[:, 2]) / d[:, 2].clamp_min(1e-9)
    end = o + end_t[:, None] * d
    pts = torch.cat([start, end])
    lo, hi = pts.amin(0), pts.amax(0)
    size = hi - lo
    lo, hi = lo - pad * size, hi + pad * size
    lo[2], hi[2] = -1.0, 1.0
    if not math.isfinite(float(lo.min())) or not math.isfinite(float(hi.max())):
        raise NfplugError("NDC rays: a training camera looks away from the reference camera (not a forward-facing capture)")
    return tuple(float(v) for v in (*lo, *hi))
