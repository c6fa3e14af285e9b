"""COLMAP sparse models: ``sparse/0/`` (or ``sparse/``, ``colmap/sparse/0/``) holding ``cameras``,
``images`` and ``points3D`` as ``.bin`` or ``.txt``, beside ``images/`` (see
:mod:`nfplug.data.colmap_model`). Images are used in file-name order; the sparse points give the
scene box. Camera models: SIMPLE_PINHOLE, PINHOLE, SIMPLE_RADIAL, RADIAL, OPENCV.
"""

from __future__ import annotations

from pathlib import Path
import numpy as np
import torch

from nfplug.api import API_VERSION, SceneHints
from nfplug.data.captures import CaptureDataset, base_image_folder, holdout_indices
from nfplug.data.colmap_model import camera_to_world, find_model, pinhole_and_distortion, read_model
from nfplug.data.scene import fail
from nfplug.errors import NfplugError


class ColmapDataset(CaptureDataset):
    description = "COLMAP: sparse/0/{cameras,images,points3D}.{bin,txt} with images/ (every 8th image held out)"
    api_version = API_VERSION
    priority = 20

    @classmethod
    def detect(cls, root: Path) -> bool:
        return find_model(root) is not None

    def __init__(self, config, context) -> None:
        super().__init__(config, context)
        root = context.root
        folder = find_model(root)
        if folder is None:
            raise fail(f"{root}: no COLMAP model (looked for sparse/0, sparse, colmap/sparse/0 with cameras.bin or cameras.txt)")
        self.source = self.model_dir = folder
        self.model = read_model(folder)
        images = sorted(self.model.images.values(), key=lambda image: image.name)
        if not images:
            raise fail(f"{folder}: the model has no registered images")
        image_dir, self.base_factor = base_image_folder(root)
        self.paths, c2w, K, dist, sizes = [], [], [], [], set()
        for image in images:
            path = image_dir / image.name
            if not path.is_file():
                raise fail(f"{folder}: image '{image.name}' (id {image.id}) is listed but {path} does not exist")
            camera = self.model.cameras[image.camera_id]
            try:
                fx, fy, cx, cy, d = pinhole_and_distortion(camera)
            except NfplugError as e:
                raise fail(f"{folder}: {e}") from None
            self.paths.append(path)
            c2w.append(camera_to_world(image))
            K.append(np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]]))
            dist.append(d)
            sizes.add((camera.width, camera.height))
        if len(sizes) > 1:
            raise fail(f"{folder}: cameras of different image sizes {sorted(sizes)[:2]}; nfplug needs one size per scene")
        self.reference_size = tuple(float(v) for v in sizes.pop())
        self.c2w, self.K, self.dist = np.stack(c2w), np.stack(K), np.stack(dist)
        self.indices = holdout_indices(len(images), context.holdout_every, folder)


    def hints(self) -> SceneHints:
        points = torch.from_numpy(self.model.points) if len(self.model.points) else None
        return SceneHints(points=points)
