"""The scene task: NeRF training on posed images through the occupancy-grid renderer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from torch import Tensor

from nfplug.api import Field, FieldContext, RayBatch
from nfplug.config import DataConfig, RenderConfig
from nfplug.data.cameras import Cameras, generate_rays
from nfplug.data.demo import ensure_demo_scene
from nfplug.data.scene import SceneSplit, available_splits, load_blender
from nfplug.errors import NfplugError
from nfplug.rendering.scene_renderer import SceneRenderer


def resolve_scene_root(path: str) -> Path:
    """'demo' is the built-in procedural scene (generated on first use)."""
    return ensure_demo_scene() if path == "demo" else Path(path)


def lookup_pixels(images: Tensor, image_index: Tensor, pixel_xy: Tensor, mode: str = "nearest") -> Tensor:
    """Ground truth at continuous pixel positions (pixel ``(c, r)`` covers ``[c, c+1) x [r, r+1)``).

    ``mode`` 'nearest': the pixel the position falls in (as the NeRF papers do); 'bilinear':
    interpolated between the 4 nearest pixel centres, borders replicated, so a pixel centre
    gives exactly its pixel. images ``[N, H, W, C]``, image_index ``[B]``, pixel_xy ``[B, 2]``
    -> ``[B, C]``. The ground truth is piecewise constant with 'nearest' (no gradient to
    ``pixel_xy``); with 'bilinear' the gradient flows through the interpolation weights, so a
    sampler that follows ``d loss / d pixel_xy`` (softmine) sees the image's slope too.
    """
    h, w = images.shape[1:3]
    if mode == "nearest":
        cols = pixel_xy[:, 0].detach().floor().long().clamp(0, w - 1)
        rows = pixel_xy[:, 1].detach().floor().long().clamp(0, h - 1)
        return images[image_index, rows, cols]
    if mode != "bilinear":
        raise ValueError(f"lookup_pixels: unknown mode {mode!r} (nearest, bilinear)")
    u = (pixel_xy[:, 0] - 0.5).clamp(0, w - 1)
    v = (pixel_xy[:, 1] - 0.5).clamp(0, h - 1)
    c0, r0 = u.detach().floor().long(), v.detach().floor().long()
    c1, r1 = (c0 + 1).clamp(max=w - 1), (r0 + 1).clamp(max=h - 1)
    fu, fv = (u - c0).unsqueeze(-1), (v - r0).unsqueeze(-1)
    top = images[image_index, r0, c0] * (1 - fu) + images[image_index, r0, c1] * fu
    bottom = images[image_index, r1, c0] * (1 - fu) + images[image_index, r1, c1] * fu
    return top * (1 - fv) + bottom * fv


@dataclass
class View:
    """One rendered evaluation view: ``rgb``/``gt`` ``[H, W, C]``, ``depth``/``opacity`` ``[H, W]``.

    ``mask [H, W]`` bool, if set, restricts PSNR and SSIM to those pixels (a pixel hold-out).
    """

    rgb: Tensor
    depth: Tensor
    opacity: Tensor
    gt: Optional[Tensor]
    mask: Optional[Tensor] = None


class SceneTask:
    """Loads a Blender-format scene and renders it through a :class:`SceneRenderer`."""

    name = "scene"
    train_mask = None  # every pixel of every training image is trainable

    def __init__(self, data: DataConfig, render: RenderConfig, device: torch.device, *, load_train: bool = True) -> None:
        self.data = data
        self.device = device
        self.root = resolve_scene_root(data.path)
        if not self.root.exists():
            raise NfplugError(f"--data: {self.root}: no such scene folder")
        self._splits: Dict[str, SceneSplit] = {}
        if load_train:  # the held-out split too, so a broken file fails now, not at the first evaluation
            self._splits["train"] = load_blender(self.root, "train", downscale=data.downscale)
            self.split(self._eval_split_name())
        first = self._splits.get("train")
        self.train: Optional[SceneSplit] = first
        probe = first or self.split(self._eval_split_name())
        self.aabb = tuple(probe.aabb)
        self.near, self.far = probe.near, probe.far
        self.renderer = SceneRenderer(self.aabb, self.near, self.far, render).to(device)
        if first is not None:
            self.images = first.images.to(device)
            self.alphas = first.alphas.to(device)
            self.cameras = _cameras_to(first.cameras, device)

    # ------------------------------------------------------------------ data
    def _eval_split_name(self) -> str:
        splits = available_splits(self.root)
        for name in (self.data.val_split, "val", "test"):
            if name in splits:
                return name
        raise NfplugError(f"{self.root}: no held-out split (looked for transforms_{self.data.val_split}.json, _val, _test)")

    @property
    def eval_split_name(self) -> str:
        return self._eval_split_name()

    def splits(self) -> List[str]:
        return available_splits(self.root)

    def split(self, name: str) -> SceneSplit:
        if name not in self._splits:
            self._splits[name] = load_blender(self.root, name, downscale=self.data.downscale)
        return self._splits[name]

    def field_context(self) -> FieldContext:
        return FieldContext(task="scene", aabb=self.aabb, out_channels=3)

    @property
    def scene_name(self) -> str:
        return "demo" if self.data.path == "demo" else self.root.resolve().name

    # -------------------------------------------------------------- training
    def before_step(self, step: int, field: Field) -> Optional[str]:
        """Occupancy-grid update; returns a warning message if the grid had to be re-opened."""
        if self.renderer.update_grid(step, field):
            return (
                f"step {step}: the occupancy grid emptied out (density collapsed, renders would be "
                f"background only); re-opened every visible cell to recover "
                f"(recovery #{self.renderer.grid_recoveries}). If this repeats, lower --optim.lr."
            )
        return None

    def background(self, n: int, generator: torch.Generator) -> Tensor:
        kind = self.data.background
        if kind == "random":
            return torch.rand(n, 3, generator=generator).to(self.device)
        value = 1.0 if kind == "white" else 0.0
        return torch.full((n, 3), value, device=self.device)

    def train_forward(self, field: Field, batch: RayBatch, generator: torch.Generator) -> tuple[Tensor, Tensor, Dict[str, float]]:
        """-> prediction ``[B, 3]``, ground truth ``[B, 3]``, statistics."""
        rays_o, rays_d = generate_rays(self.cameras, batch.image_index, batch.pixel_xy)
        bkgd = self.background(rays_o.shape[0], generator)
        out = self.renderer.render(field, rays_o, rays_d, bkgd, stratified=True, generator=generator)
        gt = lookup_pixels(self.images, batch.image_index, batch.pixel_xy, self.data.gt_lookup)
        if self.data.background != "white":
            gt = self._recomposite(gt, batch, bkgd)
        return out.colors, gt, {"samples_per_ray": out.n_samples / max(1, rays_o.shape[0])}

    def _recomposite(self, gt_white: Tensor, batch: RayBatch, bkgd: Tensor) -> Tensor:
        """Ground truth on ``bkgd`` from the white-composited images and their alpha."""
        a = lookup_pixels(self.alphas, batch.image_index, batch.pixel_xy, self.data.gt_lookup)
        return gt_white - (1.0 - a) * (1.0 - bkgd)

    def predict_errors(self, field: Field, image_index: Tensor, pixel_xy: Tensor) -> Tensor:
        """Per-pixel L1 error summed over channels, without gradients, in chunks."""
        errors = []
        chunk = self.renderer.config.chunk_rays
        with torch.no_grad():
            for i in range(0, image_index.shape[0], chunk):
                idx, xy = image_index[i : i + chunk], pixel_xy[i : i + chunk]
                rays_o, rays_d = generate_rays(self.cameras, idx, xy)
                bkgd = torch.ones(idx.shape[0], 3, device=self.device)
                out = self.renderer.render(field, rays_o, rays_d, bkgd)
                errors.append((out.colors - lookup_pixels(self.images, idx, xy, self.data.gt_lookup)).abs().sum(-1))
        return torch.cat(errors) if errors else torch.zeros(0, device=self.device)

    # ------------------------------------------------------------ evaluation
    @torch.no_grad()
    def render_camera(self, field: Field, cameras: Cameras, index: int) -> View:
        """Render camera ``index`` of ``cameras`` on white, without ground truth."""
        cams = _cameras_to(cameras, self.device)
        h, w = cams.height, cams.width
        rows, cols = torch.meshgrid(torch.arange(h, device=self.device), torch.arange(w, device=self.device), indexing="ij")
        pixel_xy = torch.stack([cols, rows], dim=-1).reshape(-1, 2).float() + 0.5
        image_index = torch.full((h * w,), index, dtype=torch.long, device=self.device)
        rays_o, rays_d = generate_rays(cams, image_index, pixel_xy)
        bkgd = torch.ones(3, device=self.device)
        out = self.renderer.render_chunked(field, rays_o, rays_d, bkgd)
        return View(
            rgb=out.colors.reshape(h, w, 3).clamp(0, 1),
            depth=out.depths.reshape(h, w),
            opacity=out.opacities.reshape(h, w),
            gt=None,
        )

    def render_view(self, field: Field, split: str, index: int) -> View:
        s = self.split(split)
        view = self.render_camera(field, s.cameras, index)
        view.gt = s.images[index].to(self.device)
        return view

    def n_views(self, split: str) -> int:
        return self.split(split).images.shape[0]

    # ------------------------------------------------------------ state
    def state_dict(self) -> Dict[str, Any]:
        return {"estimator": self.renderer.estimator.state_dict(), "grid_recoveries": self.renderer.grid_recoveries}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.renderer.estimator.load_state_dict(state["estimator"])
        self.renderer.grid_recoveries = int(state.get("grid_recoveries", 0))


def _cameras_to(cameras: Cameras, device: torch.device) -> Cameras:
    return Cameras(c2w=cameras.c2w.to(device), K=cameras.K.to(device), width=cameras.width, height=cameras.height)
