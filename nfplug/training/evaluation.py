"""Held-out evaluation: render views, compare with ground truth, write ``metrics.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from nfplug.api import decoding, field_n_parts, field_parameter_parts
from nfplug.lpips import lpips_of
from nfplug.metrics import psnr, ssim
from nfplug.training.run import write_json_atomic

METRICS_FILE = "metrics.json"


def evaluate_views(
    task: Any,
    field: Any,
    split: str,
    *,
    indices: Optional[Sequence[int]] = None,
    writer: Any = None,
    step: int = 0,
    with_ssim: bool = True,
    lpips: Any = None,
) -> Dict[str, Any]:
    """PSNR (and SSIM, and LPIPS with an :class:`nfplug.lpips.LPIPS` metric) of every view of
    ``split`` (or of ``indices``), PSNR and SSIM over its mask's pixels if it has one (LPIPS
    compares whole images).

    Returns ``{"split", "views": [{"index", "image", "psnr", "ssim", "lpips"}], "mean": {...}}``
    (``image``: the photo's file, for scenes: which photos were held out); the first view's
    render, ground truth and depth go to TensorBoard if ``writer``.
    """
    indices = list(range(task.n_views(split))) if indices is None else list(indices)
    paths = getattr(task.split(split), "paths", None) if getattr(task, "name", None) == "scene" else None
    views = []
    for k, index in enumerate(indices):
        view = task.render_view(field, split, index)
        row: Dict[str, Any] = {"index": index}
        if paths:
            row["image"] = Path(paths[index]).name
        if view.mask is not None:
            row["psnr"] = psnr(view.rgb[view.mask], view.gt[view.mask])
        else:
            row["psnr"] = psnr(view.rgb, view.gt)
        if with_ssim:
            row["ssim"] = ssim(view.rgb, view.gt, view.mask)
        if lpips is not None:
            value = lpips_of(lpips, view.rgb, view.gt)
            if value is not None:
                row["lpips"] = value
        views.append(row)
        if writer is not None and k == 0:
            writer.add_image(f"{split}/render", _hwc3(view.rgb), step, dataformats="HWC")
            writer.add_image(f"{split}/ground_truth", _hwc3(view.gt), step, dataformats="HWC")
            if view.depth.max() > 0:
                depth = view.depth / view.depth.max()
                writer.add_image(f"{split}/depth", depth.cpu().numpy(), step, dataformats="HW")
    mean = {"psnr": float(np.mean([v["psnr"] for v in views]))}
    if with_ssim:
        mean["ssim"] = float(np.mean([v["ssim"] for v in views]))
    if views and all("lpips" in v for v in views):
        mean["lpips"] = float(np.mean([v["lpips"] for v in views]))
    return {"split": split, "views": views, "mean": mean}


def evaluate_parts(task: Any, field: Any, split: str, **kwargs: Any) -> List[Dict[str, Any]]:
    """A streamable field decoded from its first k parts, for every k:
    ``[{"parts": k, "params": ..., "psnr": ..., "ssim": ...}]``."""
    rows = []
    for k in range(1, field_n_parts(field) + 1):
        mean = evaluate_views(task, decoding(field, k), split, **kwargs)["mean"]
        rows.append({"parts": k, "params": part_parameter_count(field, k), **mean})
    return rows


def part_parameter_count(field: Any, k: int) -> int:
    """Parameters in the first ``k`` parts of a field (what a client needs to decode them)."""
    params = dict(field.named_parameters())
    return sum(params[name].numel() for name, part in field_parameter_parts(field).items() if part <= k)


def _hwc3(image: Any) -> np.ndarray:
    """``[H, W, C]`` -> ``[H, W, 3]`` numpy for TensorBoard (grayscale repeated)."""
    array = image.cpu().numpy()
    return np.repeat(array, 3, axis=2) if array.shape[2] == 1 else array


def write_metrics(run_dir: Path, metrics: Dict[str, Any], name: str = METRICS_FILE) -> Path:
    path = Path(run_dir) / name
    write_json_atomic(path, metrics)
    return path
