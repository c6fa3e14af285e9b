"""A third-party dataset format: a package built in a temp folder, pip-installed, detected, trained on.

The format (``scene.npz``: images, OpenCV camera-to-world poses and intrinsics in one file) holds
the built-in demo scene exactly, so a run on it must equal a run on the demo's Blender folder.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from conftest import TINY_TRAIN, install_package
from nfplug.data.demo import ensure_demo_scene
from nfplug.data.scene import load_blender

PYPROJECT = """
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "nfplug-npzscene"
version = "0.1.0"
dependencies = ["nfplug"]

[project.entry-points."nfplug.datasets"]
npz = "nfplug_npzscene:NpzDataset"
"""

DATASET = '''
from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np
import torch

from nfplug.api import Dataset, DatasetSplit, SceneHints
from nfplug.data.cameras import Cameras
from nfplug.errors import NfplugError


class NpzDataset(Dataset):
    """scene.npz: {split}_images [N, H, W, 3] float32, {split}_c2w [N, 3, 4] (OpenCV), {split}_K [N, 3, 3]."""

    description = "one scene.npz holding images, poses and intrinsics per split"

    @classmethod
    def detect(cls, root: Path) -> bool:
        return (root / "scene.npz").is_file()

    def __init__(self, config, context) -> None:
        super().__init__(config, context)
        self.file = context.root / "scene.npz"
        self.arrays = dict(np.load(self.file))

    def splits(self) -> List[str]:
        return [k[: -len("_images")] for k in self.arrays if k.endswith("_images")]

    def load(self, split: str) -> DatasetSplit:
        if f"{split}_images" not in self.arrays:
            raise NfplugError(f"{self.file}: no split '{split}'")
        images = torch.from_numpy(self.arrays[f"{split}_images"])
        n, h, w, _ = images.shape
        cameras = Cameras(torch.from_numpy(self.arrays[f"{split}_c2w"]), torch.from_numpy(self.arrays[f"{split}_K"]), w, h)
        return DatasetSplit(images=images, alphas=torch.ones(n, h, w, 1), cameras=cameras, paths=[f"{self.file}:{split}[{i}]" for i in range(n)])

    def hints(self) -> SceneHints:
        return SceneHints(layout="object", normalize=False, aabb=(-1.5, -1.5, -1.5, 1.5, 1.5, 1.5), near=2.0, far=6.0)
'''


def _nfplug(args, env, cwd):
    return subprocess.run([sys.executable, "-m", "nfplug.cli", *args], env=env, cwd=cwd, capture_output=True, text=True)


def test_an_installed_dataset_format_is_detected_listed_and_trains_like_the_builtin(tmp_path: Path) -> None:
    src = tmp_path / "nfplug-npzscene"
    (src / "nfplug_npzscene").mkdir(parents=True)
    (src / "pyproject.toml").write_text(textwrap.dedent(PYPROJECT))
    (src / "nfplug_npzscene" / "__init__.py").write_text(DATASET)
    env = install_package(src, tmp_path / "site")

    demo = ensure_demo_scene()
    arrays = {}
    for split in ("train", "val"):
        s = load_blender(demo, split)
        arrays.update({f"{split}_images": s.images.numpy(), f"{split}_c2w": s.cameras.c2w.numpy(), f"{split}_K": s.cameras.K.numpy()})
    (tmp_path / "npz-scene").mkdir()
    np.savez(tmp_path / "npz-scene" / "scene.npz", **arrays)

    listing = _nfplug(["plugins"], env, tmp_path)
    row = next(line for line in listing.stdout.splitlines() if line.startswith("npz "))
    assert row.split()[:4] == ["npz", "dataset", "nfplug-npzscene", "ok"], row

    # The sampler named: by default the demo trains with uniform and an object scene of another
    # format with softmine (README, "Which sampler by default").
    common = ["--max-steps", "8", *TINY_TRAIN, "--threads", "1", "--seed", "3", "--sampler", "uniform"]
    ours = _nfplug(["train", "--data", str(tmp_path / "npz-scene"), "--output", str(tmp_path / "npz-run"), *common], env, tmp_path)
    assert ours.returncode == 0, ours.stderr[-2000:]
    assert "nfplug: data: npz scene" in ours.stderr + ours.stdout
    assert json.loads((tmp_path / "npz-run" / "scene.json").read_text())["format"] == "npz"
    builtin = _nfplug(["train", "--output", str(tmp_path / "demo-run"), *common], env, tmp_path)
    assert builtin.returncode == 0, builtin.stderr[-2000:]
    a = json.loads((tmp_path / "npz-run" / "metrics.json").read_text())
    b = json.loads((tmp_path / "demo-run" / "metrics.json").read_text())
    assert [v["psnr"] for v in a["views"]] == [v["psnr"] for v in b["views"]]  # the same data, read by another plugin
    assert _nfplug(["eval", str(tmp_path / "npz-run")], env, tmp_path).returncode == 0
