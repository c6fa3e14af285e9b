"""The NeRF "Blender synthetic" format: ``transforms_{train,val,test}.json`` (see :mod:`nfplug.data.scene`)."""

from __future__ import annotations

from pathlib import Path
from typing import List

from nfplug.api import API_VERSION, Dataset, DatasetSplit, SceneHints
from nfplug.data.scene import available_splits, load_blender

NEAR, FAR = 2.0, 6.0
BOX = (-1.5, -1.5, -1.5, 1.5, 1.5, 1.5)


class BlenderDataset(Dataset):
    description = "NeRF Blender synthetic: transforms_train.json / _val / _test (scene in [-1.5, 1.5]^3, near 2, far 6)"
    api_version = API_VERSION
    priority = 40

    @classmethod
    def detect(cls, root: Path) -> bool:
        return "train" in available_splits(root)

    def splits(self) -> List[str]:
        return available_splits(self.context.root)

    def load(self, split: str) -> DatasetSplit:
        c = self.context
        s = load_blender(c.root, split, downscale=c.downscale, background=c.background, near=NEAR, far=FAR, aabb=BOX)
        return DatasetSplit(images=s.images, alphas=s.alphas, cameras=s.cameras, paths=s.paths)

    def hints(self) -> SceneHints:
        return SceneHints(layout="object", normalize=False, aabb=BOX, near=NEAR, far=FAR)
