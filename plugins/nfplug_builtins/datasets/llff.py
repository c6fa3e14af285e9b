"""LLFF captures: ``poses_bounds.npy`` beside ``images/`` (or ``images_N/``).

``poses_bounds.npy`` holds one row of 17 numbers per image, the images in file-name order: a 3x5
matrix ``[R | t | (h, w, f)]`` row-major, whose rotation columns are the camera's (down, right,
backwards) axes, and the scene's near and far depth bounds for that image. ``h, w, f`` refer to the
original photos; the intrinsics are rescaled to the images read (principal point at the centre).
"""

from __future__ import annotations

from pathlib import Path
import numpy as np

from nfplug.api import API_VERSION, SceneHints
from nfplug.data.captures import CaptureDataset, base_image_folder, holdout_indices
from nfplug.data.scene import check_rotation, fail

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class LLFFDataset(CaptureDataset):
    description = "LLFF: poses_bounds.npy with images/ or images_N/ (every 8th image held out)"
    api_version = API_VERSION
    priority = 10

    @classmethod
    def detect(cls, root: Path) -> bool:
        return (root / "poses_bounds.npy").is_file()

    def __init__(self, config, context) -> None:
        super().__init__(config, context)
        root = context.root
        self.source = self.file = root / "poses_bounds.npy"
        try:
            array = np.load(self.file, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise fail(f"{self.file}: cannot read: {e}") from None
        if array.ndim != 2 or array.shape[1] != 17 or array.shape[0] < 1:
            raise fail(f"{self.file}: expected an N x 17 array (3x5 pose and 2 bounds per image), got shape {array.shape}")
        if not np.isfinite(array).all():
            raise fail(f"{self.file}: holds non-finite values (NaN or infinity)")
        poses = array[:, :15].reshape(-1, 3, 5)
        self.bounds = array[:, 15:]
        if (self.bounds <= 0).any():
            raise fail(f"{self.file}: near/far bounds must be positive")
        folder, self.base_factor = base_image_folder(root)
        self.paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if len(self.paths) != len(poses):
            raise fail(f"{self.file}: {len(poses)} poses but {len(self.paths)} images in {folder}")
        # (down, right, backwards) -> OpenCV (right, down, forwards)
        self.c2w = np.stack([poses[:, :, 1], poses[:, :, 0], -poses[:, :, 2], poses[:, :, 3]], axis=-1)
        for i, rotation in enumerate(self.c2w[:, :, :3]):
            check_rotation(rotation, f"{self.file}: image {i} ({self.paths[i].name})")
        h, w, f = poses[0, :, 4]
        if min(h, w, f) <= 0:
            raise fail(f"{self.file}: image 0: height, width and focal length must be positive, got {h}, {w}, {f}")
        self.reference_size = (float(w), float(h))
        self.K = np.repeat(np.array([[[f, 0, w / 2], [0, f, h / 2], [0, 0, 1.0]]]), len(poses), axis=0)
        self.indices = holdout_indices(len(poses), context.holdout_every, self.file)


    def hints(self) -> SceneHints:
        # layout "unknown": the engine tells forward-facing (fern) from 360 (cup_360) by the cameras
        return SceneHints(near=float(self.bounds.min()), far=float(self.bounds.max()))
