"""``nfplug new-plugin KIND NAME``: write a ready plugin package to fill in.

The package holds a ``pyproject.toml`` that registers the plugin's entry point, one documented
class that already works (a small MLP field, a layer-wise init, a uniform sampler, a one-file
scene format), a test that runs :mod:`nfplug.testing`'s conformance checks on it, and a README.
``pip install -e .`` then ``pytest`` in it pass out of the box; ``nfplug plugins`` lists it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict

from nfplug.api import API_VERSION
from nfplug.errors import NfplugError

KINDS = ("field", "init", "sampler", "dataset")
GROUP = {"field": "fields", "init": "inits", "sampler": "samplers", "dataset": "datasets"}
CHECK = {"field": "check_field", "init": "check_init", "sampler": "check_sampler", "dataset": "check_dataset"}
NAME = re.compile(r"[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*")

PYPROJECT = """\
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
version = "0.1.0"
description = "{description}"
requires-python = ">=3.9"
dependencies = ["nfplug"]

# How nfplug finds the plugin: the entry-point group of its kind, the name users type, the class.
[project.entry-points."nfplug.{group}"]
{name} = "{package}.{kind}:{cls}"

[tool.setuptools]
packages = ["{package}"]

[tool.pytest.ini_options]
testpaths = ["tests"]
pythonpath = ["."]
"""

README = """\
# {dist}

An nfplug {kind} plugin: `{name}` ({description}).

```bash
pip install -e .        # registers the entry point: `nfplug plugins` lists {name}
pytest                  # nfplug's conformance checks ({check}) on the plugin
{usage}
```

Edit `{package}/{kind}.py`; `pytest` says which rule of the contract a change breaks, and how to
fix it. To try changes without reinstalling, from this folder:
`NFPLUG_PLUGINS="{group}:{name}={package}.{kind}:{cls}" nfplug ...` (the entry point above already
covers an editable install).
"""

FIELD = '''\
"""{cls}: a neural field for nfplug (scene and image tasks).

A field maps points to colour and density (scenes) or coordinates to colour (images); the
engine does the rest (rays, marching, volume rendering, losses). The contracts are
``nfplug.api.SceneField`` and ``nfplug.api.ImageField``; ``tests/`` runs ``nfplug.testing.check_field`` on this class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nfplug.api import FieldContext, ImageField, SceneField, require_range
from nfplug.encoding.frequency import positional_encoding


@dataclass(frozen=True)
class {cls}Config:
    """Options, set as ``--field.OPTION`` (``--field.hidden-dim 128``); each needs a default."""

    hidden_dim: int = 64
    """Width of the hidden layers."""
    n_frequencies: int = 6
    """Frequencies of the positional encoding of the input coordinates."""

    def validate(self) -> None:
        """One line per bad option, named as the command line spells it."""
        require_range(self.hidden_dim, "--field.hidden-dim", 1, 4096)
        require_range(self.n_frequencies, "--field.n-frequencies", 0, 16)


class {cls}(SceneField, ImageField):
    """An MLP on positionally encoded coordinates.

    Scene task: ``density(x [N, 3]) -> sigma [N]`` (non-negative) and ``forward(x, d) -> (rgb
    [N, 3] in [0, 1], sigma [N])``. Image task: ``forward(coords [N, 2]) -> rgb [N, C]``.
    """

    Config = {cls}Config
    description = "{description}"
    api_version = {api_version}
    tasks = ("scene", "image")
    default_lr = 1e-3

    def __init__(self, config: {cls}Config, context: FieldContext) -> None:
        super().__init__(config, context)
        dim = 3 if context.task == "scene" else 2
        in_dim = dim * (1 + 2 * config.n_frequencies)
        out_dim = 4 if context.task == "scene" else context.out_channels  # scenes: density + RGB
        h = config.hidden_dim
        self.net = nn.Sequential(nn.Linear(in_dim, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, out_dim))

    def _raw(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """World positions -> (raw outputs [N, 4], inside the scene box [N])."""
        u, inside = self.unit_coords(x)  # [0, 1] across the box
        return self.net(positional_encoding(2 * u - 1, self.config.n_frequencies, True)), inside

    def density(self, x: Tensor) -> Tensor:
        raw, inside = self._raw(x)
        return F.softplus(raw[:, 0]) * inside  # zero outside the box

    def forward(self, x: Tensor, d: Optional[Tensor] = None):
        if self.context.task == "image":
            return torch.sigmoid(self.net(positional_encoding(x, self.config.n_frequencies, True)))
        raw, inside = self._raw(x)  # (this field ignores the view direction d)
        return torch.sigmoid(raw[:, 1:4]), F.softplus(raw[:, 0]) * inside
'''

INIT = '''\
"""{cls}: an initialization for nfplug fields that expose their layers (``nfplug.api.LayerAccess``).

An init changes a built field in place before training. The contract is ``nfplug.api.Init``;
``tests/`` runs ``nfplug.testing.check_init`` on this class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from nfplug.api import Field, Init, LayerAccess, require_range
from nfplug.errors import NfplugError


@dataclass(frozen=True)
class {cls}Config:
    """Options, set as ``--init.OPTION``; each needs a default."""

    gain: float = 1.0
    """Scale of the uniform bound sqrt(6 / fan_in) (1: He's uniform init)."""

    def validate(self) -> None:
        require_range(self.gain, "--init.gain", 0.0, 100.0, low_open=True)


class {cls}(Init):
    """Every layer's weights uniform in +-gain * sqrt(6 / fan_in), biases zero."""

    Config = {cls}Config
    description = "{description}"
    api_version = {api_version}

    def apply(self, field: Field, generator: torch.Generator) -> None:
        if not isinstance(field, LayerAccess):
            # One line, naming the option: the engine shows it as the error.
            raise NfplugError(f"--init: {{type(field).__name__}} does not expose its layers (nfplug.api.LayerAccess)")
        layers = field.layers()
        with torch.no_grad():
            for layer in layers:
                bound = self.config.gain * math.sqrt(6.0 / layer.in_features)
                # Draw only from the generator: a run is then the same for a seed.
                layer.weight.copy_((torch.rand(layer.weight.shape, generator=generator) * 2 - 1) * bound)
                if layer.bias is not None:
                    layer.bias.zero_()
'''

SAMPLER = '''\
"""{cls}: a training-ray sampler for nfplug.

A sampler picks the pixels each step trains on and may weight their losses and learn from them.
The contract is ``nfplug.api.Sampler``; ``tests/`` runs ``nfplug.testing.check_sampler`` on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict

import torch

from nfplug.api import RayBatch, Sampler, SamplerContext, StepFeedback, require_range


@dataclass(frozen=True)
class {cls}Config:
    """Options, set as ``--sampler.OPTION``; each needs a default."""

    jitter: float = 0.0
    """Random offset of each ray inside its pixel, as a fraction of the pixel (0: pixel centres)."""

    def validate(self) -> None:
        require_range(self.jitter, "--sampler.jitter", 0.0, 1.0)


class {cls}(Sampler):
    """Uniformly random trainable pixels; keeps a running mean of the loss as an example of state."""

    Config = {cls}Config
    description = "{description}"
    api_version = {api_version}

    def __init__(self, config: {cls}Config, context: SamplerContext) -> None:
        super().__init__(config, context)
        # Every pixel the sampler may use (context.pixel_mask leaves some out, e.g. held-out ones).
        self.image_index, self.pixel_xy = context.trainable_pixels()
        self.mean_loss = 0.0

    def sample(self, step: int, generator: torch.Generator) -> RayBatch:
        ctx = self.context
        # Draw every random number from ``generator``: runs are then the same for a seed, and resume exactly.
        pick = torch.randint(0, self.image_index.shape[0], (ctx.batch_size,), generator=generator)
        xy = self.pixel_xy[pick]
        if self.config.jitter > 0:
            xy = xy + (torch.rand(xy.shape, generator=generator) - 0.5) * self.config.jitter
        return RayBatch(self.image_index[pick].to(ctx.device), xy.to(ctx.device), torch.ones(pick.shape[0], device=ctx.device))

    def update(self, feedback: StepFeedback) -> None:
        self.mean_loss = 0.9 * self.mean_loss + 0.1 * float(feedback.loss.mean())

    def scalars(self) -> Dict[str, float]:
        return {{"mean_loss": self.mean_loss}}  # logged to TensorBoard as sampler/mean_loss

    def state_dict(self) -> Dict[str, Any]:
        return {{"mean_loss": self.mean_loss}}  # tensors and plain values only: checkpoints load with weights_only

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.mean_loss = float(state["mean_loss"])
'''

DATASET = '''\
"""{cls}: a scene format for nfplug, ``scene.npz`` holding every split's images and cameras.

Arrays: ``{{split}}_images [N, H, W, 3]`` (uint8 or float in [0, 1]), ``{{split}}_c2w [N, 3, 4]``
camera-to-world in the OpenCV convention, ``{{split}}_K [N, 3, 3]`` intrinsics in pixels. The
contract is ``nfplug.api.Dataset``; ``tests/`` runs ``nfplug.testing.check_dataset`` on it.
"""

from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np
import torch

from nfplug.api import Dataset, DatasetSplit, SceneHints
from nfplug.data.cameras import Cameras
from nfplug.errors import NfplugError

FILE = "scene.npz"


class {cls}(Dataset):
    """One ``scene.npz`` per scene folder (module docstring)."""

    description = "{description}"
    api_version = {api_version}

    @classmethod
    def detect(cls, root: Path) -> bool:
        """Whether ``root`` is in this format: look at file names only, never raise."""
        return (root / FILE).is_file()

    def __init__(self, config, context) -> None:
        super().__init__(config, context)
        self.file = context.root / FILE
        try:
            self.arrays = dict(np.load(self.file))
        except (OSError, ValueError) as e:
            raise NfplugError(f"{{self.file}}: cannot read it ({{e}})") from e

    def splits(self) -> List[str]:
        return sorted(k[: -len("_images")] for k in self.arrays if k.endswith("_images"))

    def load(self, split: str) -> DatasetSplit:
        if f"{{split}}_images" not in self.arrays:
            raise NfplugError(f"{{self.file}}: no split '{{split}}' (has: {{', '.join(self.splits())}})")
        images = torch.from_numpy(self.arrays[f"{{split}}_images"])
        images = images.float() / 255 if images.dtype == torch.uint8 else images.float()
        c2w = torch.from_numpy(self.arrays[f"{{split}}_c2w"]).float()
        K = torch.from_numpy(self.arrays[f"{{split}}_K"]).float()
        s = self.context.downscale
        if s > 1:  # --data.downscale: shrink the images and the intrinsics with them
            images = torch.nn.functional.avg_pool2d(images.permute(0, 3, 1, 2), s).permute(0, 2, 3, 1).contiguous()
            K = K.clone()
            K[:, :2] /= s
        n, h, w, _ = images.shape
        return DatasetSplit(images=images, alphas=torch.ones(n, h, w, 1), cameras=Cameras(c2w, K, w, h),
                            paths=[f"{{self.file}}:{{split}}[{{i}}]" for i in range(n)])

    def hints(self) -> SceneHints:
        # An object scene in a known box, poses kept as they are. For photos of the world use
        # layout="360" or "forward-facing" and normalize=True: the engine then fits box and bounds.
        return SceneHints(layout="object", normalize=False, aabb=(-1.5, -1.5, -1.5, 1.5, 1.5, 1.5), near=2.0, far=6.0)
'''

TEST = '''\
"""nfplug's conformance checks on the plugin (nfplug.testing): each failure names the rule and the fix."""
{imports}
from nfplug.testing import {check}
from {package}.{kind} import {cls}


def test_{snake}_follows_the_nfplug_contract({args}):
{body}
'''

TEST_IMPORTS = {
    "dataset": """
import numpy as np

from nfplug.data.demo import ensure_demo_scene
from nfplug.data.scene import load_blender""",
}

TEST_BODY = {
    "field": "    {check}({cls}, name=\"{name}\")  # both tasks, then a few training steps of each",
    "init": "    {check}({cls}, name=\"{name}\")  # on every installed field; it must act on at least one",
    "sampler": "    {check}({cls}, name=\"{name}\")",
    "dataset": """\
    # A small scene in this format: the built-in demo scene's images and cameras.
    arrays = {{}}
    for split in ("train", "val"):
        s = load_blender(ensure_demo_scene(), split)
        arrays[f"{{split}}_images"] = (s.images.numpy() * 255).round().astype(np.uint8)
        arrays[f"{{split}}_c2w"], arrays[f"{{split}}_K"] = s.cameras.c2w.numpy(), s.cameras.K.numpy()
    np.savez(tmp_path / "scene.npz", **arrays)
    {check}({cls}, tmp_path, name="{name}")""",
}

USAGE = {
    "field": "nfplug train --field {name}                     # the demo scene; --data IMAGE.png for the image task",
    "init": "nfplug train --data IMAGE.png --field siren --init {name}",
    "sampler": "nfplug train --sampler {name}",
    "dataset": "nfplug train --data FOLDER_WITH_SCENE_NPZ         # detected by the format; --data.format {name} forces it",
}

DESCRIPTIONS = {
    "field": "an MLP on positionally encoded coordinates",
    "init": "uniform weights in +-gain*sqrt(6/fan_in), zero biases",
    "sampler": "uniformly random trainable pixels",
    "dataset": "scene.npz: images, OpenCV poses and intrinsics per split",
}


def names_for(kind: str, name: str) -> Dict[str, str]:
    """Distribution, package, class and test names for plugin ``name`` of ``kind``."""
    words = re.split(r"[-_]", name)
    cls = "".join(w.capitalize() for w in words)
    suffix = {"field": "Field", "init": "Init", "sampler": "Sampler", "dataset": "Dataset"}[kind]
    if not cls.endswith(suffix):
        cls += suffix
    package = "nfplug_" + "_".join(words)
    return {"name": name, "kind": kind, "group": GROUP[kind], "dist": "nfplug-" + "-".join(words), "package": package, "cls": cls,
            "snake": "_".join(words), "check": CHECK[kind], "description": DESCRIPTIONS[kind], "api_version": str(API_VERSION)}


def new_plugin(kind: str, name: str, output: Path) -> Path:
    """Write the package for plugin ``name`` of ``kind`` in ``output`` (a new folder); -> ``output``."""
    if kind not in KINDS:
        raise NfplugError(f"KIND: '{kind}' is not a plugin kind (one of {', '.join(KINDS)})")
    if not NAME.fullmatch(name):
        raise NfplugError(f"NAME: '{name}' is not a plugin name (lower-case letters and digits, words joined by '-' or '_', e.g. my-sampler)")
    v = names_for(kind, name)
    output = Path(output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise NfplugError(f"--output: {output} already exists and is not an empty folder (choose another, nothing was written)")
    source = {"field": FIELD, "init": INIT, "sampler": SAMPLER, "dataset": DATASET}[kind]
    files = {
        "pyproject.toml": PYPROJECT.format(**v),
        "README.md": README.format(usage=USAGE[kind].format(**v), **v),
        f"{v['package']}/__init__.py": f'"""nfplug {kind} plugin {name}."""\n\nfrom {v["package"]}.{kind} import {v["cls"]}\n\n__all__ = ["{v["cls"]}"]\n',
        f"{v['package']}/{kind}.py": source.format(**v),
        f"tests/test_{v['snake']}.py": TEST.format(
            imports=TEST_IMPORTS.get(kind, ""), args="tmp_path" if kind == "dataset" else "", body=TEST_BODY[kind].format(**v), **v
        ),
    }
    try:
        for rel, text in files.items():
            path = output / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    except OSError as e:
        raise NfplugError(f"--output: cannot write {output}: {e.strerror or e}") from e
    return output
