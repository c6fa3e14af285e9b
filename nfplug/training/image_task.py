"""The image task: fit a 2D neural field ``coords [N, 2] in [-1, 1] -> colour [N, C]`` to one image.

Pixel ``(col, row)`` has its centre at ``pixel_xy = (col + 0.5, row + 0.5)`` and at
``coords = pixel_xy / (W, H) * 2 - 1``; the map is differentiable so that samplers get
``d loss / d pixel_xy`` through the input coordinate, as for scene rays.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import cv2
import numpy as np
import torch
from torch import Tensor

from nfplug.api import Field, FieldContext, RayBatch, field_render_grid
from nfplug.config import DataConfig
from nfplug.data.cameras import pixel_centres
from nfplug.data.images import composite, read_image_file
from nfplug.errors import NfplugError
from nfplug.profiling import section
from nfplug.training.scene_task import View, lookup_pixels

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def is_image_path(path: str) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def load_image(path: Path, downscale: int = 1) -> Tensor:
    """``[H, W, C]`` float32 in [0, 1], C = 1 (grayscale) or 3; RGBA is composited on white."""
    image = read_image_file(path)
    if image.shape[2] == 4:
        image = composite(image, np.ones(3, dtype=np.float32))
    height, width = image.shape[:2]
    if downscale > 1:
        if width // downscale < 1 or height // downscale < 1:
            raise NfplugError(f"--data.downscale: {downscale} is larger than the {width}x{height} image {path}")
        image = cv2.resize(image, (width // downscale, height // downscale), interpolation=cv2.INTER_AREA)
        image = image.reshape(height // downscale, width // downscale, -1)
    return torch.from_numpy(np.ascontiguousarray(image))


def pixel_to_coords(pixel_xy: Tensor, width: int, height: int) -> Tensor:
    """Continuous pixel coordinates ``[N, 2]`` -> field coordinates in ``[-1, 1]`` (differentiable)."""
    size = torch.tensor([width, height], dtype=pixel_xy.dtype, device=pixel_xy.device)
    return pixel_xy / size * 2.0 - 1.0


def checkerboard(height: int, width: int) -> Tensor:
    """``[H, W]`` bool, True on the training half ((row + col) even)."""
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return (rows + cols) % 2 == 0


class ImageTask:
    """One image; splits: 'full' (every pixel), and with a checkerboard hold-out 'train' and 'heldout'."""

    name = "image"

    def __init__(self, data: DataConfig, device: torch.device, *, load_train: bool = True) -> None:
        self.data = data
        self.device = device
        self.root = Path(data.path)
        if not self.root.is_file():
            raise NfplugError(f"--data: {self.root}: no such image file")
        image = load_image(self.root, data.downscale)
        self.height, self.width, self.channels = image.shape
        self.images = image[None].to(device)  # [1, H, W, C]
        self.train_mask: Optional[Tensor] = None
        if data.holdout == "checkerboard":
            if self.height * self.width < 2:
                raise NfplugError(f"--data.holdout: checkerboard needs at least 2 pixels, {self.root} has 1 (none would be held out)")
            self.train_mask = checkerboard(self.height, self.width)[None].to(device)

    # ------------------------------------------------------------------ data
    @property
    def scene_name(self) -> str:
        return self.root.stem

    def splits(self) -> List[str]:
        return ["full", "train", "heldout"] if self.train_mask is not None else ["full"]

    @property
    def eval_split_name(self) -> str:
        return "heldout" if self.train_mask is not None else "full"

    def field_context(self) -> FieldContext:
        return FieldContext(
            task="image", aabb=(-1.0, -1.0, 1.0, 1.0), out_channels=self.channels, resolution=(self.height, self.width)
        )

    def n_views(self, split: str) -> int:
        return 1

    # -------------------------------------------------------------- training
    def before_step(self, step: int, field: Field) -> Optional[str]:
        return None

    def train_forward(
        self, field: Field, batch: RayBatch, generator: torch.Generator, share: Optional[Tuple[int, int]] = None
    ) -> tuple[Tensor, Tensor, Dict[str, float]]:
        """-> prediction, ground truth, statistics; draws no random numbers (``share`` is for the scene task's)."""
        with section("rays and ground truth"):
            coords = pixel_to_coords(batch.pixel_xy, self.width, self.height)
            gt = lookup_pixels(self.images, batch.image_index, batch.pixel_xy, self.data.gt_lookup)
        with section("field forward: MLPs"):
            pred = field(coords)
        return pred, gt, {"samples_per_ray": 1.0}

    def predict_errors(self, field: Field, image_index: Tensor, pixel_xy: Tensor) -> Tensor:
        """Per-pixel L1 error summed over channels, without gradients."""
        with torch.no_grad():
            pred = self._render_coords(field, pixel_to_coords(pixel_xy, self.width, self.height))
        return (pred - lookup_pixels(self.images, image_index, pixel_xy, self.data.gt_lookup)).abs().sum(-1)

    # ------------------------------------------------------------ evaluation
    @torch.no_grad()
    def _render_coords(self, field: Field, coords: Tensor, chunk: int = 1 << 16) -> Tensor:
        return torch.cat([field(coords[i : i + chunk]) for i in range(0, coords.shape[0], chunk)])

    @torch.no_grad()
    def render_image(self, field: Field, scale: float = 1.0) -> Tensor:
        """The field sampled at the pixel centres of a ``scale``-times larger image -> ``[H', W', C]``.

        At ``scale == 1`` a field's own ``render_grid()`` is used if it has one (:class:`~nfplug.api.GridRendering`).
        """
        grid = field_render_grid(field) if scale == 1.0 else None
        if grid is not None:
            return grid.clamp(0, 1)
        height, width = max(1, round(self.height * scale)), max(1, round(self.width * scale))
        pixel_xy = pixel_centres(height, width, self.device)
        coords = pixel_to_coords(pixel_xy, width, height)
        return self._render_coords(field, coords).reshape(height, width, -1).clamp(0, 1)

    def render_view(self, field: Field, split: str, index: int) -> View:
        rgb = self.render_image(field)
        mask = None
        if split == "train":
            mask = self.train_mask[0]
        elif split == "heldout":
            mask = ~self.train_mask[0]
        empty = torch.zeros(self.height, self.width, device=self.device)
        return View(rgb=rgb, depth=empty, opacity=empty, gt=self.images[0], mask=mask)

    # ------------------------------------------------------------ state
    def parameters(self) -> List[torch.Tensor]:
        """The task's own trainable parameters: none (the field is the whole model)."""
        return []

    def state_dict(self) -> Dict[str, Any]:
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Nothing to restore: the image task has no state of its own."""
