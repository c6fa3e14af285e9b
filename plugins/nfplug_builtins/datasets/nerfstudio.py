"""nerfstudio and instant-ngp captures: one ``transforms.json`` (what ``nfplug process-data``,
``ns-process-data`` and instant-ngp's ``colmap2nerf.py`` write)::

    {
      "camera_model": "OPENCV",                 # or PINHOLE, SIMPLE_PINHOLE, SIMPLE_RADIAL, RADIAL
      "fl_x": 1375.5, "fl_y": 1374.5, "cx": 554.6, "cy": 965.3, "w": 1080, "h": 1920,
      "k1": 0.058, "k2": -0.081, "p1": -0.001, "p2": 0.0002,    # optional distortion
      "aabb_scale": 4,                          # optional (instant-ngp)
      "ply_file_path": "sparse_pc.ply",         # optional sparse points (nerfstudio)
      "frames": [{"file_path": "images/0001.jpg", "transform_matrix": [[...]]}, ...]
    }

Intrinsics (and distortion) may be given per frame instead, overriding the top level;
``camera_angle_x`` (radians) may replace ``fl_x``. ``transform_matrix`` is camera-to-world in
the OpenGL convention. Held-out images: nerfstudio's ``train_filenames`` / ``test_filenames``
(or ``val_filenames``) lists if present, else every ``--data.holdout-every``-th frame.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import torch

from nfplug.api import API_VERSION, SceneHints
from nfplug.data.cameras import opengl_to_opencv
from nfplug.data.captures import CaptureDataset, base_image_folder, holdout_indices, read_ply_points
from nfplug.data.scene import fail, parse_frame, read_json

MODELS = ("OPENCV", "PINHOLE", "SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL")
DISTORTION = ("k1", "k2", "p1", "p2")
UNSUPPORTED_DISTORTION = ("k3", "k4")


class NerfstudioDataset(CaptureDataset):
    description = "nerfstudio / instant-ngp: transforms.json (per-frame intrinsics, OPENCV distortion, aabb_scale)"
    api_version = API_VERSION
    priority = 30

    @classmethod
    def detect(cls, root: Path) -> bool:
        return (root / "transforms.json").is_file()

    def __init__(self, config, context) -> None:
        super().__init__(config, context)
        root = context.root
        self.source = self.file = root / "transforms.json"
        meta = read_json(self.file)
        if not isinstance(meta, dict):
            raise fail(f"{self.file}: expected a JSON object at the top level, got {type(meta).__name__}")
        model = meta.get("camera_model", "OPENCV")
        if model not in MODELS:
            raise fail(f"{self.file}: camera_model '{model}' is not supported (supported: {', '.join(MODELS)})")
        frames = meta.get("frames")
        if not isinstance(frames, list) or not frames:
            raise fail(f"{self.file}: 'frames' must be a non-empty list")
        self.meta = meta
        c2w, K, dist, sizes, paths = [], [], [], [], []
        for i, frame in enumerate(frames):
            where = f"{self.file}: frame {i}"
            matrix, path = parse_frame(root, frame, where)
            c2w.append(matrix[:3])
            paths.append(path)
            values = {**meta, **frame}
            k, size = _intrinsics(values, where)
            K.append(k)
            sizes.append(size)
            dist.append(_distortion(values, where))
        if len(set(sizes)) > 1:
            raise fail(f"{self.file}: frames have different image sizes ({sorted(set(sizes))[:2]}); nfplug needs one size per scene")
        self.paths = paths
        self.c2w = opengl_to_opencv(torch.from_numpy(np.stack(c2w))).numpy()
        self.K, self.dist, self.reference_size = np.stack(K), np.stack(dist), sizes[0]
        self.indices = self._split_indices([p.name for p in paths], [f["file_path"] for f in frames])
        folder = paths[0].parent
        self.base_factor = 1 if folder.name == "images" else (base_image_folder(root)[1] if folder.parent == root else 1)

    def _split_indices(self, names: List[str], file_paths: List[str]) -> Dict[str, List[int]]:
        listed = {split: self.meta.get(f"{split}_filenames") for split in ("train", "val", "test")}
        held = listed["test"] if listed["test"] is not None else listed["val"]
        if listed["train"] is None or held is None:
            return holdout_indices(len(names), self.context.holdout_every, self.file)
        out = {}
        for split, wanted in (("train", listed["train"]), ("test", held)):
            wanted_names = {Path(str(w)).name for w in wanted}
            out[split] = [i for i, (name, fp) in enumerate(zip(names, file_paths)) if name in wanted_names or fp in wanted]
            if not out[split]:
                raise fail(f"{self.file}: '{split}_filenames' matches none of the frames' file_path")
        return out


    def hints(self) -> SceneHints:
        points = None
        ply = self.meta.get("ply_file_path")
        if isinstance(ply, str) and ply:
            path = self.context.root / ply
            if not path.is_file():
                raise fail(f"{self.file}: ply_file_path '{ply}' not found")
            points = torch.from_numpy(read_ply_points(path))
        scale = self.meta.get("aabb_scale")
        aabb_scale = float(scale) if isinstance(scale, (int, float)) and not isinstance(scale, bool) and scale > 0 else None
        return SceneHints(points=points, aabb_scale=aabb_scale)


def _number(values: Dict[str, Any], key: str, where: str, *, positive: bool = True) -> float:
    value = values[key]
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (positive and value <= 0):
        raise fail(f"{where}: '{key}' must be a {'positive ' if positive else ''}finite number, got {value!r}")
    return float(value)


def _intrinsics(values: Dict[str, Any], where: str):
    """``K [3, 3]`` and the ``(w, h)`` it refers to, from a frame's keys over the top level's."""
    for key in ("w", "h"):
        if key not in values:
            raise fail(f"{where}: missing key '{key}' (image width and height in pixels)")
    w, h = _number(values, "w", where), _number(values, "h", where)
    if "fl_x" in values:
        fx = _number(values, "fl_x", where)
    elif "camera_angle_x" in values:
        angle = _number(values, "camera_angle_x", where)
        if angle >= math.pi:
            raise fail(f"{where}: 'camera_angle_x' must be below pi radians, got {angle}")
        fx = 0.5 * w / math.tan(0.5 * angle)
    else:
        raise fail(f"{where}: missing key 'fl_x' (focal length in pixels) or 'camera_angle_x'")
    fy = _number(values, "fl_y", where) if "fl_y" in values else fx
    cx = _number(values, "cx", where, positive=False) if "cx" in values else w / 2
    cy = _number(values, "cy", where, positive=False) if "cy" in values else h / 2
    return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]]), (w, h)


def _distortion(values: Dict[str, Any], where: str) -> np.ndarray:
    for key in UNSUPPORTED_DISTORTION:
        if key in values and _number(values, key, where, positive=False) != 0:
            raise fail(f"{where}: distortion '{key}' is not supported (only OPENCV k1 k2 p1 p2)")
    return np.array([_number(values, k, where, positive=False) if k in values else 0.0 for k in DISTORTION])
