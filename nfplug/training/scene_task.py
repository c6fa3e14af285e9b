"""The scene task: NeRF training on posed images through the occupancy-grid renderer."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, get_args, get_type_hints

import numpy as np
import torch
from torch import Tensor

from nfplug.api import DatasetContext, Field, FieldContext, RayBatch
from nfplug.config import DataConfig, RenderConfig
from nfplug.data.cameras import Cameras, generate_rays, pixel_centres
from nfplug.data.demo import ensure_demo_scene
from nfplug.data.formats import open_dataset
from nfplug.distributed import share_generator
from nfplug.data.normalize import SceneTransform, fit_normalization, focus_point, render_bounds
from nfplug.data.scene import SceneSplit
from nfplug.errors import NfplugError, fail
from nfplug.profiling import section
from nfplug.rendering.background import LearnedBackground
from nfplug.rendering.scene_renderer import DEFAULT_SAMPLES_PER_CELL, SceneRenderer
from nfplug.rendering.space import SceneSpace, mean_camera_w2c, ndc_box


VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")
FORWARD_FACING_RAYS = "world"
"""Rays for forward-facing captures by default: world rays beat NDC rays on fern in 10 minutes
(README, ``tools/bench_real.py --groups fern-rays``)."""
OBJECT_SAMPLES_PER_CELL = (2.0, 3.0)
"""The range of object scenes' default marching samples per grid-cell diagonal (README): lego at
200x200 reached 0.3 dB more in 10 minutes with 3 than with 2 (0.67 dB less with 1.5), and at
100x100 0.1 dB less with 3 than with 2."""
UNBOUNDED_CONTRACTION = "none"
"""Field space for unbounded captures by default (measured on fern and cup_360: README, tools/bench_real.py)."""
BACKGROUNDS = tuple(kind for kind in get_args(get_type_hints(DataConfig)["background"]) if kind != "auto")
"""The backgrounds a run can have trained on (``--data.background`` without 'auto')."""
UNBOUNDED_BACKGROUND = "learned"
"""Background of unbounded (360-degree) captures by default: learned beat white by 2.7 dB on cup_360
in 10 minutes (README, ``tools/bench_real.py --groups cup-background``)."""
SCENE_FILE = "scene.json"
"""The render setup of a run (format, pose normalisation, box, near, far), kept in the run folder so
evaluation, renders and resumes use exactly the frame the run was trained in."""


def unbounded_levels(aabb_scale: Optional[float]) -> int:
    """Grid levels of an unbounded capture: 4 (nerfacc's unbounded examples), or as many as reach
    instant-ngp's ``aabb_scale`` (the scene spans that multiple of the cameras' box): 1 + log2 of it."""
    if aabb_scale is None:
        return 4
    return int(np.clip(round(np.log2(max(aabb_scale, 1.0))) + 1, 1, 8))


def training_pixel_size(cameras: Cameras, box: tuple) -> float:
    """The width a pixel covers at the centre of ``box`` (``[6]``), as a fraction of the box's
    largest side: the median over ``cameras`` of distance to the centre / focal length (pixels)."""
    lo, hi = torch.tensor(box[:3], dtype=torch.float64), torch.tensor(box[3:], dtype=torch.float64)
    distance = (cameras.c2w[:, :, 3].double() - (lo + hi) / 2).norm(dim=-1)
    focal = (cameras.K[:, 0, 0].double() * cameras.K[:, 1, 1].double()).sqrt()
    return float((distance / focal).median()) / float((hi - lo).max())


def object_samples_per_cell(pixel_size: Optional[float], grid_resolution: int) -> float:
    """An object scene's default marching samples per grid-cell diagonal: one a training pixel's
    width at the box's centre (``sqrt(3) / (resolution * pixel_size)``), within
    :data:`OBJECT_SAMPLES_PER_CELL`, the range measured; 2 without a pixel size."""
    if pixel_size is None:
        return DEFAULT_SAMPLES_PER_CELL
    low, high = OBJECT_SAMPLES_PER_CELL
    return float(min(high, max(low, math.sqrt(3.0) / (grid_resolution * pixel_size))))


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
    """Reads a scene through its dataset plugin and renders it through a :class:`SceneRenderer`.

    Captures are normalised (:mod:`nfplug.data.normalize`) with the transform fitted to the
    training cameras, or the one stored in ``run_dir`` (``scene.json``) for an existing run.
    """

    name = "scene"
    train_mask = None  # every pixel of every training image is trainable

    def __init__(self, data: DataConfig, render: RenderConfig, device: torch.device, *, load_train: bool = True, run_dir: Optional[Path] = None) -> None:
        self.data = data
        self.device = device
        self.root = resolve_scene_root(data.path)
        if not self.root.exists():
            raise NfplugError(f"--data: {self.root}: no such scene folder")
        if not self.root.is_dir():
            hint = f"; for a video, run 'nfplug process-data {self.root} --output SCENE' first" if self.root.suffix.lower() in VIDEO_SUFFIXES else ""
            raise NfplugError(f"--data: {self.root}: not a folder (a scene is a folder; an image file must be PNG or JPEG){hint}")
        context = DatasetContext(root=self.root, downscale=data.downscale, holdout_every=data.holdout_every)
        self.format, self.dataset = open_dataset(self.root, data.format, context)
        self._splits: Dict[str, SceneSplit] = {}
        self.render_config = render
        stored = Path(run_dir) / SCENE_FILE if run_dir is not None else None
        if stored is not None and stored.is_file():
            self._read_setup(stored)
        else:
            self._fit_setup()
        if load_train:  # the held-out split too, so a broken file fails now, not at the first evaluation
            self.split("train")
            self.split(self._eval_split_name())
        if self.samples_per_cell is None:
            self.samples_per_cell = object_samples_per_cell(self.pixel_size, render.grid_resolution)
        first = self._splits.get("train")
        self.train: Optional[SceneSplit] = first
        self.renderer = SceneRenderer(
            self.aabb, self.near, self.far, render, levels=self.levels, cone_angle=self.cone_angle, space=self.space,
            samples_per_cell=self.samples_per_cell,
        ).to(device)
        self.learned_background = LearnedBackground().to(device) if self.background_kind == "learned" else None
        if first is not None:
            self.images = first.images.to(device)
            self.alphas = first.alphas.to(device)
            self.cameras = _cameras_to(first.cameras, device)

    # ------------------------------------------------------------------ data
    def _fit_setup(self) -> None:
        """Normalisation and render setup from the dataset's hints, its training cameras and the
        ``--render`` options that override them.

        Object scenes (Blender: ``normalize=False``) keep their box, one grid level, even steps.
        Captures reach beyond their box (backgrounds): the grid gets 4 levels, each twice the size
        of the one inside it, around a base box holding the sparse points and the cameras; steps
        grow with distance (cone angle 0.004); far is the outermost box's far side. Forward-facing
        captures (LLFF) keep one level over the box their view frustums span between the depth
        bounds.
        """
        hints = self.dataset.hints()
        cfg = self.render_config
        self.layout, self.aabb_scale = hints.layout, hints.aabb_scale
        self.object_scene = not hints.normalize
        self.transform = SceneTransform.identity()
        train = None
        if hints.normalize:
            if "train" not in self.dataset.splits():
                raise NfplugError(f"--data: {self.root}: the {self.format} dataset has no 'train' split (splits: {', '.join(self.dataset.splits())})")
            train = self.dataset.load("train")
            c2w = train.cameras.c2w.double().numpy()
            if self.layout == "unknown":  # cameras that converge on a point see it all around
                self.layout = "360" if focus_point(c2w) is not None else "forward-facing"
        forward_facing = hints.normalize and self.layout == "forward-facing"
        rays = cfg.rays if cfg.rays != "auto" else (FORWARD_FACING_RAYS if forward_facing else "world")
        if rays == "ndc" and train is None:
            raise NfplugError(f"--render.rays ndc: needs a captured scene with cameras to normalise ({self.format} scenes are already canonical)")
        # Forward-facing captures keep one level: their box already spans the depth bounds (or NDC's).
        unbounded = hints.normalize and not forward_facing
        self.levels = cfg.grid_levels or (unbounded_levels(hints.aabb_scale) if unbounded and rays == "world" else 1)
        self.cone_angle = cfg.cone_angle if cfg.cone_angle is not None else (0.004 if unbounded and rays == "world" else 0.0)
        self.samples_per_cell = cfg.samples_per_cell  # None: object scenes' default, once the training cameras are read
        contraction = cfg.contraction if cfg.contraction != "auto" else (UNBOUNDED_CONTRACTION if unbounded and rays == "world" else "none")
        auto_background = UNBOUNDED_BACKGROUND if unbounded and rays == "world" else "white"
        self.background_kind = self.data.background if self.data.background != "auto" else auto_background
        if train is None:  # already canonical: the dataset's own box and bounds
            self.aabb, self.near, self.far = render_bounds(hints, self.transform, None)
        else:
            self.transform = fit_normalization(c2w)
            self._splits["train"] = self._to_scene_split(train, "train", bounds=False)
            cameras = self._splits["train"].cameras
            self.aabb, self.near, self.far = render_bounds(hints, self.transform, cameras)
            if self.levels > 1:  # the base box holds the cameras too; the far plane is the outermost box
                centres = cameras.c2w[:, :, 3].double().numpy()
                lo, hi = np.minimum(self.aabb[:3], centres.min(0)), np.maximum(self.aabb[3:], centres.max(0))
                self.aabb = tuple(float(v) for v in (*lo, *hi))
                outer = np.array(self.field_box()).reshape(2, 3)
                farthest = np.abs(centres[:, None, :] - outer[None]).max(1)  # per axis, to the farther face
                self.far = float(np.linalg.norm(farthest, axis=-1).max())
        # World depths the cameras see (spiral paths focus between them), whatever space is marched.
        self.depth_bounds = (float(cfg.near if cfg.near is not None else self.near), float(cfg.far if cfg.far is not None else self.far))
        if rays == "ndc":
            self._to_ndc(cfg)
        else:
            if cfg.aabb is not None:
                self.aabb = tuple(float(v) for v in cfg.aabb)
            self.near = cfg.near if cfg.near is not None else self.near
            self.far = cfg.far if cfg.far is not None else self.far
            self.space = SceneSpace(contraction=contraction, box=tuple(self.aabb) if contraction != "none" else None)
        if rays == "ndc" and contraction != "none":
            raise NfplugError(f"--render.contraction {contraction}: NDC rays already reach infinity inside their box; use --render.contraction none or --render.rays world")
        if not self.near < self.far:
            raise NfplugError(f"--render.near / --render.far: near {self.near:g} must be below far {self.far:g}")
        if "train" in self._splits:
            self._splits["train"] = self._with_bounds(self._splits["train"])

    def _to_ndc(self, cfg: RenderConfig) -> None:
        """NDC rays of the mean training camera: the near plane is the dataset's near (or
        ``--render.near``); the box holds every training camera's frustum out to infinity, in NDC;
        the marched range is the whole box."""
        cameras = self._splits["train"].cameras
        w2c = mean_camera_w2c(cameras.c2w)
        K = cameras.K[0]
        intrinsics = (float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]), cameras.width, cameras.height)
        near = cfg.near if cfg.near is not None else self.near
        if not near > 0:
            raise NfplugError(f"--render.near: NDC rays need a positive near plane, got {near:g}")
        w, h = cameras.width, cameras.height
        corners = torch.tensor([[0.0, 0.0], [w, 0.0], [0.0, h], [w, h], [w / 2, h / 2]])
        index = torch.arange(len(cameras)).repeat_interleave(len(corners))
        rays = generate_rays(cameras, index, corners.repeat(len(cameras), 1))
        self.space = SceneSpace(rays="ndc", ndc_w2c=w2c, ndc_intrinsics=intrinsics, ndc_near=float(near))
        self.aabb = tuple(float(v) for v in cfg.aabb) if cfg.aabb is not None else ndc_box(rays, w2c, intrinsics, near)
        lo, hi = np.array(self.aabb[:3]), np.array(self.aabb[3:])
        self.near, self.far = 0.0, float(np.linalg.norm(hi - lo))
        if cfg.far is not None:
            raise NfplugError("--render.far: NDC rays reach infinity (z = 1); leave --render.far unset or use --render.rays world")

    @property
    def n_train_images(self) -> int:
        """Training images (for per-image appearance): counted from the split, or from ``scene.json``."""
        if "train" in self._splits:
            return len(self._splits["train"].paths)
        return getattr(self, "_n_train_images", 0)

    def field_box(self) -> tuple:
        """The box the field covers: the grid's outermost level (the scene box scaled ``2^(levels-1)``)."""
        if self.levels == 1:
            return tuple(self.aabb)
        lo, hi = np.array(self.aabb[:3]), np.array(self.aabb[3:])
        centre, half = (lo + hi) / 2, (hi - lo) / 2 * 2 ** (self.levels - 1)
        return tuple(float(v) for v in (*(centre - half), *(centre + half)))

    def _read_setup(self, path: Path) -> None:
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
            self.transform = SceneTransform.from_json(values["normalization"], path)
            self.aabb = tuple(float(v) for v in values["aabb"])
            self.near, self.far = float(values["near"]), float(values["far"])
            self.depth_bounds = tuple(float(v) for v in values.get("depth_bounds", (self.near, self.far)))
            self.levels = int(values.get("grid_levels", 1))
            self.cone_angle = float(values.get("cone_angle", 0.0))
            self.samples_per_cell = float(self.render_config.samples_per_cell or values.get("samples_per_cell", DEFAULT_SAMPLES_PER_CELL))
            self.layout = str(values.get("layout", "unknown"))
            self.aabb_scale = float(values["aabb_scale"]) if values.get("aabb_scale") is not None else None
            self.space = SceneSpace.from_json(values.get("space"))
            self._n_train_images = int(values.get("train_images", 0))
            self._pixel_size = float(values["pixel_size"]) if values.get("pixel_size") is not None else None
            # Runs from before 'auto' existed trained on the background their config names (white by default).
            self.background_kind = str(values.get("background", self.data.background if self.data.background != "auto" else "white"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise fail(f"{path}: not a readable scene setup ({type(e).__name__}: {e})") from None
        if len(self.aabb) != 6 or not all(lo < hi for lo, hi in zip(self.aabb[:3], self.aabb[3:])) or not 0 <= self.near < self.far:
            raise NfplugError(f"{path}: 'aabb' must be 6 numbers with min < max and 0 <= near < far")
        if not 1 <= self.levels <= 12 or not 0 <= self.cone_angle <= 1:
            raise NfplugError(f"{path}: 'grid_levels' must be 1 to 12 and 'cone_angle' 0 to 1")
        if not 0 < self.samples_per_cell < float("inf"):
            raise NfplugError(f"{path}: 'samples_per_cell' must be a positive number, got {self.samples_per_cell}")
        if self._pixel_size is not None and not 0 < self._pixel_size < float("inf"):
            raise NfplugError(f"{path}: 'pixel_size' must be a positive number, got {self._pixel_size}")
        if self.background_kind not in BACKGROUNDS:
            raise NfplugError(f"{path}: 'background' must be one of {', '.join(BACKGROUNDS)}, got {self.background_kind!r}")

    def describe(self) -> str:
        """One line: the format, the splits' sizes, the box and whether the poses were normalised."""
        train, held = self.split("train"), self.split(self._eval_split_name())
        box = ", ".join(f"{lo:.2f}..{hi:.2f}" for lo, hi in zip(self.aabb[:3], self.aabb[3:]))
        t = self.transform
        identity = t.scale == 1 and not t.translation.any() and (t.rotation == np.eye(3)).all()
        frame = "poses as given" if identity else f"poses normalised (scale {t.scale:.3g})"
        return (
            f"{self.format} scene {self.root}: {len(train.paths)} train / {len(held.paths)} {held.split} images of "
            f"{train.cameras.width}x{train.cameras.height}{', lens distortion per ray' if train.cameras.dist is not None else ''}; "
            f"{frame}; {self.space.describe()}; box {box}, {self.levels} grid level(s), cone angle {self.cone_angle:g}, marching step {self.renderer.render_step_size:.3g}, "
            f"near {self.near:.3g}, far {self.far:.3g}"
        )

    def setup(self) -> Dict[str, Any]:
        """The scene's frame and render setup: format, layout, normalisation, box, near, far."""
        return {
            "format": self.format,
            "layout": self.layout,
            "aabb_scale": self.aabb_scale,
            "normalization": self.transform.to_json(),
            "aabb": list(self.aabb),
            "grid_levels": self.levels,
            "cone_angle": self.cone_angle,
            "samples_per_cell": self.samples_per_cell,
            "space": self.space.to_json(),
            "field_aabb": list(self.space.field_aabb(self.field_box())),
            "train_images": self.n_train_images,
            "pixel_size": self.pixel_size,
            "near": self.near,
            "far": self.far,
            "depth_bounds": list(self.depth_bounds),
            "background": self.background_kind,
        }

    def save_setup(self, run_dir: Path) -> None:
        """Write :meth:`setup` as ``scene.json`` into the run folder."""
        from nfplug.training.run import write_json_atomic

        write_json_atomic(Path(run_dir) / SCENE_FILE, self.setup())

    def _to_scene_split(self, split, name: str, bounds: bool = True) -> SceneSplit:
        cameras = split.cameras
        cameras = Cameras(self.transform.apply_c2w(cameras.c2w.double()).float(), cameras.K, cameras.width, cameras.height, cameras.dist)
        scene = SceneSplit(split.images, split.alphas, cameras, 0.0, 0.0, (), self.root.resolve().name, name, split.paths)
        return self._with_bounds(scene) if bounds else scene

    def _with_bounds(self, split: SceneSplit) -> SceneSplit:
        split.near, split.far, split.aabb = self.near, self.far, tuple(self.aabb)
        return split

    def _eval_split_name(self) -> str:
        splits = self.splits()
        for name in (self.data.val_split, "val", "test"):
            if name in splits:
                return name
        raise NfplugError(f"{self.root}: no held-out split (looked for '{self.data.val_split}', 'val', 'test'; the {self.format} dataset has {', '.join(splits)})")

    @property
    def eval_split_name(self) -> str:
        return self._eval_split_name()

    def splits(self) -> List[str]:
        return self.dataset.splits()

    def split(self, name: str) -> SceneSplit:
        if name not in self._splits:
            if name not in self.splits():
                raise NfplugError(f"{self.root}: no split '{name}' (the {self.format} dataset has {', '.join(self.splits())})")
            self._splits[name] = self._to_scene_split(self.dataset.load(name), name)
        return self._splits[name]

    def field_context(self) -> FieldContext:
        return FieldContext(
            task="scene", aabb=self.space.field_aabb(self.field_box()), out_channels=3, n_images=self.n_train_images, pixel_size=self.pixel_size
        )

    @property
    def pixel_size(self) -> Optional[float]:
        """:attr:`FieldContext.pixel_size`: from the training cameras, or from ``scene.json``. Only for
        object scenes in their own box (Blender, the demo); ``None`` for captures (their content
        lies at many distances, and the rule it feeds was measured on objects) and for object scenes
        given several grid levels, a contraction or NDC rays."""
        if hasattr(self, "_pixel_size"):
            return self._pixel_size
        if not self.object_scene or self.levels != 1 or self.space.rays != "world" or self.space.contraction != "none":
            return None
        if "train" not in self._splits:
            return None
        return training_pixel_size(self._splits["train"].cameras, self.field_box())

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

    def parameters(self) -> List[Tensor]:
        """The task's own trainable parameters (the learned background), optimised with the field's."""
        return list(self.learned_background.parameters()) if self.learned_background is not None else []

    def background(self, n: int, generator: torch.Generator, rays_d: Optional[Tensor] = None) -> Tensor:
        """Training background of ``n`` rays ``[n, 3]`` (a learned one needs their directions)."""
        kind = self.background_kind
        if kind == "learned":
            return self.learned_background(rays_d)
        if kind == "random":
            return torch.rand(n, 3, generator=generator).to(self.device)
        value = 1.0 if kind == "white" else 0.0
        return torch.full((n, 3), value, device=self.device)

    def train_forward(
        self, field: Field, batch: RayBatch, generator: torch.Generator, share: Optional[Tuple[int, int]] = None
    ) -> tuple[Tensor, Tensor, Dict[str, float]]:
        """-> prediction ``[B, 3]``, ground truth ``[B, 3]``, statistics (``regularizer``: a scalar
        tensor the trainer adds to the loss, with ``--render.distortion-weight``). ``share``:
        ``(start, total)`` when ``batch`` is rows ``start:start+B`` of a ``total``-ray batch split over
        processes; each ray then draws the random numbers it would draw in one process."""
        with section("rays and ground truth"):
            rays_o, rays_d = generate_rays(self.cameras, batch.image_index, batch.pixel_xy)
            random_bkgd = self.background_kind == "random"
            bkgd = self.background(rays_o.shape[0], share_generator(generator, share, 3) if random_bkgd else generator, rays_d.detach())
            gt = lookup_pixels(self.images, batch.image_index, batch.pixel_xy, self.data.gt_lookup)
            if self.background_kind != "white":
                gt = self._recomposite(gt, batch, bkgd.detach())
        weight = self.render_config.distortion_weight
        out = self.renderer.render(
            field, rays_o, rays_d, bkgd, stratified=True, generator=share_generator(generator, share), image_index=batch.image_index, with_distortion=weight > 0,
            step_size=self.renderer.train_step_size,
        )
        stats: Dict[str, Any] = {"samples_per_ray": out.n_samples / max(1, rays_o.shape[0])}
        if weight > 0:
            stats["regularizer"] = weight * out.distortion.mean()
        return out.colors, gt, stats

    def eval_background(self, rays_d: Tensor) -> Tensor:
        """Background for evaluation and renders: the learned one if there is one, else white."""
        if self.learned_background is not None:
            return self.learned_background(rays_d)
        return torch.ones(rays_d.shape[0], 3, device=rays_d.device)

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
                out = self.renderer.render(field, rays_o, rays_d, self.eval_background(rays_d), image_index=idx)
                errors.append((out.colors - lookup_pixels(self.images, idx, xy, self.data.gt_lookup)).abs().sum(-1))
        return torch.cat(errors) if errors else torch.zeros(0, device=self.device)

    # ------------------------------------------------------------ evaluation
    @torch.no_grad()
    def render_camera(self, field: Field, cameras: Cameras, index: int) -> View:
        """Render camera ``index`` of ``cameras`` on white, without ground truth."""
        cams = _cameras_to(cameras, self.device)
        h, w = cams.height, cams.width
        pixel_xy = pixel_centres(h, w, self.device)
        image_index = torch.full((h * w,), index, dtype=torch.long, device=self.device)
        rays_o, rays_d = generate_rays(cams, image_index, pixel_xy)
        out = self.renderer.render_chunked(field, rays_o, rays_d, self.eval_background(rays_d))
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
        state = {"estimator": self.renderer.estimator.state_dict(), "grid_recoveries": self.renderer.grid_recoveries}
        if self.learned_background is not None:
            state["background"] = self.learned_background.state_dict()
        return state

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.renderer.estimator.load_state_dict(state["estimator"])
        if self.learned_background is not None:
            if "background" not in state:
                raise NfplugError("the checkpoint has no learned background (--data.background learned was not trained)")
            self.learned_background.load_state_dict(state["background"])
        self.renderer.grid_recoveries = int(state.get("grid_recoveries", 0))


def _cameras_to(cameras: Cameras, device: torch.device) -> Cameras:
    return cameras.to(device)
