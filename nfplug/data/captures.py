"""Shared pieces of the capture formats (COLMAP, nerfstudio / instant-ngp, LLFF): the held-out
split, pre-shrunk image folders, reading a split's images at the right size, and PLY points.

Image folders follow the convention of COLMAP, LLFF and nerfstudio: ``images/`` holds the photos,
``images_N/`` the same photos shrunk N times. The base folder is ``images/``, or the smallest-N
``images_N/`` if there is no ``images/`` (LLFF's fern ships only ``images_8/``);
``--data.downscale N`` shrinks relative to it, reading ``images_{base N * N}/`` when that exists.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from nfplug.api import Dataset, DatasetContext, DatasetSplit
from nfplug.data.cameras import Cameras
from nfplug.data.scene import downscale_images, fail, read_images

CAPTURE_SPLITS = ("train", "test")


def holdout_indices(n: int, every: int, where: Path) -> Dict[str, List[int]]:
    """``{"train": [...], "test": [...]}``: every ``every``-th image (0, every, ...) is held out."""
    if n < 2:
        raise fail(f"{where}: {n} image(s); a capture needs at least 2 (one to train on, one held out)")
    test = list(range(0, n, every))
    return {"train": [i for i in range(n) if i % every], "test": test}


def image_folder_factor(name: str) -> Optional[int]:
    """``images`` -> 1, ``images_4`` -> 4, anything else -> None."""
    match = re.fullmatch(r"images(?:_(\d+))?", name)
    return None if match is None else int(match.group(1) or 1)


def base_image_folder(root: Path) -> Tuple[Path, int]:
    """The folder the images are read from at ``--data.downscale 1`` and its shrink factor (module doc)."""
    folders = sorted((image_folder_factor(p.name), p) for p in root.iterdir() if p.is_dir() and image_folder_factor(p.name))
    if not folders:
        raise fail(f"{root}: no images/ folder (nor images_N/)")
    factor, folder = folders[0]
    return folder, factor


def shrunk_paths(root: Path, paths: Sequence[Path], base_factor: int, downscale: int) -> Tuple[List[Path], int]:
    """``paths`` (under an ``images*/`` folder of ``root``) in the pre-shrunk folder for ``downscale``
    if that folder holds every one of them, and the factor still to shrink by in memory (1 then);
    else ``paths`` themselves and ``downscale``."""
    if downscale == 1:
        return list(paths), 1
    shrunk = []
    for path in paths:
        relative = path.relative_to(root) if path.is_relative_to(root) else None
        if relative is None or len(relative.parts) < 2 or image_folder_factor(relative.parts[0]) is None:
            return list(paths), downscale
        candidate = root / f"images_{base_factor * downscale}" / Path(*relative.parts[1:])
        if not candidate.is_file():
            return list(paths), downscale
        shrunk.append(candidate)
    return shrunk, 1


def build_split(
    context: DatasetContext,
    paths: Sequence[Path],
    c2w: np.ndarray,
    K: np.ndarray,
    reference_size: Tuple[float, float],
    shrink: int,
    where: Path,
    dist: Optional[np.ndarray] = None,
) -> DatasetSplit:
    """Read ``paths`` and pair them with their cameras.

    Args:
        context: the dataset context (downscale, background).
        paths: image files (from :func:`shrunk_paths`).
        c2w: ``[N, 3, 4]`` OpenCV camera-to-world.
        K: ``[N, 3, 3]`` intrinsics for images of ``reference_size``.
        reference_size: ``(width, height)`` the intrinsics refer to (the photos' original size).
        shrink: factor to shrink the images by in memory (from :func:`shrunk_paths`).
        where: the file to name in errors.
        dist: ``[N, 4]`` OpenCV ``k1 k2 p1 p2`` or ``None``; unchanged by scaling.

    The intrinsics are rescaled to the files' actual size (the files may be a shrunk copy of
    the photos they describe), then images and intrinsics are shrunk by ``shrink``.
    """
    images = read_images(paths, context.background)
    height, width = images[0].shape[:2]
    ref_w, ref_h = reference_size
    K = np.diag([width / ref_w, height / ref_h, 1.0]) @ K
    images, K = downscale_images(images, K, shrink, where)
    height, width = images[0].shape[:2]
    rgba = torch.from_numpy(np.stack(images))
    has_dist = dist is not None and bool(np.any(dist != 0))
    cameras = Cameras(
        c2w=torch.from_numpy(np.asarray(c2w)).float(),
        K=torch.from_numpy(K).float(),
        width=width,
        height=height,
        dist=torch.from_numpy(np.asarray(dist)).float() if has_dist else None,
    )
    return DatasetSplit(images=rgba[..., :3].contiguous(), alphas=rgba[..., 3:].contiguous(), cameras=cameras, paths=[str(p) for p in paths])


class CaptureDataset(Dataset):
    """A capture: one list of posed photos, ``train`` and ``test`` split by :func:`holdout_indices`.

    Subclasses read their files in ``__init__`` (after ``super().__init__``) and set: ``source``
    (the file errors name), ``paths`` (image files under an ``images*/`` folder), ``c2w [N, 3, 4]``
    (OpenCV), ``K [N, 3, 3]`` for photos of ``reference_size`` ``(width, height)``, ``dist [N, 4]``
    or ``None``, ``base_factor`` (:func:`base_image_folder`) and ``indices``
    (:func:`holdout_indices` or their own split); ``splits`` and ``load`` then come from here.
    """

    source: Path
    paths: List[Path]
    c2w: np.ndarray
    K: np.ndarray
    dist: Optional[np.ndarray] = None
    reference_size: Tuple[float, float]
    base_factor: int = 1
    indices: Dict[str, List[int]]

    def splits(self) -> List[str]:
        return list(CAPTURE_SPLITS)

    def load(self, split: str) -> DatasetSplit:
        if split not in self.indices:
            raise fail(f"{self.source}: no split '{split}' (splits: {', '.join(CAPTURE_SPLITS)})")
        index = self.indices[split]
        c = self.context
        paths, shrink = shrunk_paths(c.root, [self.paths[i] for i in index], self.base_factor, c.downscale)
        dist = None if self.dist is None else self.dist[index]
        return build_split(c, paths, self.c2w[index], self.K[index], self.reference_size, shrink, self.source, dist)


def read_ply_points(path: Path) -> np.ndarray:
    """``[P, 3]`` float64 vertex positions of a PLY file (ASCII or binary, as COLMAP and nerfstudio write)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise fail(f"{path}: cannot read: {e}") from None
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise fail(f"{path}: not a PLY file (no 'ply' ... 'end_header' header)")
    header = data[:end].decode("ascii", "replace").splitlines()
    body = data[data.index(b"\n", end) + 1 :]
    fmt = next((line.split()[1] for line in header if line.startswith("format")), "")
    types = {"char": "i1", "uchar": "u1", "short": "i2", "ushort": "u2", "int": "i4", "uint": "u4", "float": "f4", "double": "f8",
             "int8": "i1", "uint8": "u1", "int16": "i2", "uint16": "u2", "int32": "i4", "uint32": "u4", "float32": "f4", "float64": "f8"}
    count, fields, in_vertex = 0, [], False
    for line in header:
        words = line.split()
        if words[:2] == ["element", "vertex"]:
            count, in_vertex = int(words[2]), True
        elif words and words[0] == "element":
            in_vertex = False
        elif in_vertex and words[:1] == ["property"] and len(words) == 3 and words[1] in types:
            fields.append((words[2], types[words[1]]))
    names = [f for f, _ in fields]
    if not all(axis in names for axis in "xyz"):
        raise fail(f"{path}: the PLY vertices have no x, y, z properties")
    try:
        if fmt == "ascii":
            rows = np.loadtxt(body.decode("ascii").splitlines()[:count], ndmin=2) if count else np.zeros((0, len(fields)))
            xyz = rows[:, [names.index(a) for a in "xyz"]]
        elif fmt in ("binary_little_endian", "binary_big_endian"):
            order = "<" if fmt == "binary_little_endian" else ">"
            dtype = np.dtype([(f, order + t) for f, t in fields])
            vertices = np.frombuffer(body, dtype=dtype, count=count)
            xyz = np.stack([vertices[a] for a in "xyz"], axis=-1)
        else:
            raise fail(f"{path}: unsupported PLY format '{fmt}'")
    except (ValueError, IndexError) as e:
        raise fail(f"{path}: truncated or malformed PLY vertex data ({e})") from None
    return xyz.astype(np.float64)
