"""The plugin conformance suite (nfplug.testing): every installed plugin passes it, and
deliberately broken toy plugins are each caught with the rule they break."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import SHARED_DATA
from nfplug import registry
from nfplug.api import ImageField, Init, RayBatch, Sampler, SceneField
from nfplug.data.demo import ensure_demo_scene
from nfplug.errors import NfplugError
from nfplug.testing import ContractError, check_dataset, check_field, check_init, check_sampler, installed
from nfplug_builtins.datasets.blender import BlenderDataset

# ------------------------------------------------------------------ every installed plugin


@pytest.mark.parametrize("name", installed("fields"))
def test_installed_field_conforms(name):
    check_field(registry.get("fields", name), name=name)


@pytest.mark.parametrize("name", installed("samplers"))
def test_installed_sampler_conforms(name):
    check_sampler(registry.get("samplers", name), name=name)


@pytest.mark.parametrize("name", installed("inits"))
def test_installed_init_conforms(name):
    check_init(registry.get("inits", name), name=name)


# A scene folder for each built-in format (the demo is generated; the others are real data).
SAMPLE_SCENES = {
    "blender": (None, 1),
    "llff": (SHARED_DATA / "nerf_llff_data" / "fern", 8),
    "colmap": (SHARED_DATA / "captures" / "cup_360", 8),
    "nerfstudio": (SHARED_DATA / "captures" / "fox", 8),
}


@pytest.mark.parametrize("name", installed("datasets"))
def test_installed_dataset_conforms(name):
    if name not in SAMPLE_SCENES:
        pytest.skip(f"no sample scene for the dataset format '{name}'")
    root, downscale = SAMPLE_SCENES[name]
    root = root or ensure_demo_scene()
    if not root.is_dir():
        pytest.skip(f"real data not found at {root}")
    check_dataset(registry.get("datasets", name), root, name=name, downscale=downscale)


# ------------------------------------------------------------------------ broken toy fields


class ToyField(SceneField, ImageField):
    """A small correct field for both tasks; the broken variants below change one thing."""

    tasks = ("scene", "image")

    def __init__(self, config, context):
        super().__init__(config, context)
        dim = 3 if context.task == "scene" else 2
        out = 4 if context.task == "scene" else context.out_channels
        self.net = nn.Sequential(nn.Linear(dim, 16), nn.ReLU(), nn.Linear(16, out))

    def raw(self, x):
        u, inside = self.unit_coords(x)
        return self.net(2 * u - 1), inside

    def density(self, x):
        h, inside = self.raw(x)
        return F.softplus(h[:, 0]) * inside

    def forward(self, x, d=None):
        if self.context.task == "image":
            return self.net(x)
        h, inside = self.raw(x)
        return torch.sigmoid(h[:, 1:]), F.softplus(h[:, 0]) * inside


class WrongShapeField(ToyField):
    def density(self, x):
        return super().density(x)[:, None]


class NegativeDensityField(ToyField):
    def density(self, x):
        return self.raw(x)[0][:, 0]

    def forward(self, x, d=None):
        if self.context.task == "image":
            return self.net(x)
        h, _ = self.raw(x)
        return torch.sigmoid(h[:, 1:]), h[:, 0]


class RawColourField(ToyField):
    def forward(self, x, d=None):
        if self.context.task == "image":
            return self.net(x)
        h, inside = self.raw(x)
        return h[:, 1:], F.softplus(h[:, 0]) * inside


class DetachedField(ToyField):
    def forward(self, x, d=None):
        return tuple(o.detach() for o in super().forward(x, d)) if self.context.task == "scene" else super().forward(x).detach()


class UnsavedBufferField(ToyField):
    """Its output depends on a buffer left out of the state_dict."""

    def __init__(self, config, context):
        super().__init__(config, context)
        self.register_buffer("shift", torch.rand(1), persistent=False)

    def raw(self, x):
        h, inside = super().raw(x)
        return h + self.shift, inside


class NumpyInitField(ToyField):
    """Initial weights from numpy's unseeded generator: not reproducible with torch.manual_seed."""

    def __init__(self, config, context):
        super().__init__(config, context)
        with torch.no_grad():
            self.net[0].weight.copy_(torch.from_numpy(np.random.default_rng().normal(size=tuple(self.net[0].weight.shape))))


@dataclass
class Meta:
    version: int = 1


class PickledStateField(ToyField):
    """Puts an arbitrary Python object in its state: torch.load(weights_only=True) refuses it."""

    def state_dict(self, *args, **kwargs):
        state = super().state_dict(*args, **kwargs)
        state["meta"] = Meta()
        return state


class DensityMismatchField(ToyField):
    def density(self, x):
        return super().density(x) * 2


@pytest.mark.parametrize(
    "cls, rule",
    [
        (WrongShapeField, "density(x) shape, dtype, device: density(x) for x [N, 3] has shape [300, 1], expected [300]"),
        (NegativeDensityField, "non-negative density"),
        (RawColourField, "colours in [0, 1]"),
        (DetachedField, "gradients flow: the outputs do not require gradients"),
        (UnsavedBufferField, "state round-trips through torch.load(weights_only=True): a field that loaded the state gives different outputs"),
        (NumpyInitField, "determinism for a seed"),
        (PickledStateField, "state round-trips through torch.load(weights_only=True): state_dict() could not be saved and loaded back"),
        (DensityMismatchField, "forward's sigma equals density(x)"),
    ],
)
def test_a_broken_field_is_caught_with_its_rule(cls, rule):
    with pytest.raises(ContractError) as caught:
        check_field(cls, train=False)
    message = str(caught.value)
    assert f"test_conformance.{cls.__name__}: {rule}" in message and "Fix: " in message, message
    assert "\n" not in message


def test_the_toy_field_itself_conforms_and_trains():
    check_field(ToyField, name="toy")  # the control: each broken variant differs from it in one rule


# ---------------------------------------------------------------------- broken toy samplers


class ToySampler(Sampler):
    """Correct: uniform over the trainable pixels, drawn from the step's generator."""

    def __init__(self, config, context):
        super().__init__(config, context)
        self.index, self.xy = context.trainable_pixels()

    def pick(self, generator):
        return torch.randint(0, self.index.shape[0], (self.context.batch_size,), generator=generator)

    def sample(self, step, generator):
        pick = self.pick(generator)
        return RayBatch(self.index[pick], self.xy[pick], torch.ones(pick.shape[0]))


class IgnoresMaskSampler(ToySampler):
    def sample(self, step, generator):
        c = self.context
        xy = torch.rand(c.batch_size, 2, generator=generator) * torch.tensor([float(c.width), float(c.height)])
        return RayBatch(torch.randint(0, c.n_images, (c.batch_size,), generator=generator), xy, torch.ones(c.batch_size))


class ZeroWeightSampler(ToySampler):
    def loss_weight(self, step, batch, loss, error):
        return loss * 0


class GlobalRandomSampler(ToySampler):
    def pick(self, generator):
        return torch.randint(0, self.index.shape[0], (self.context.batch_size,))


class ForgetfulSampler(ToySampler):
    """Its batches depend on how many it drew, which its (default, empty) state forgets."""

    calls = 0

    def pick(self, generator):
        self.calls += 1
        return (super().pick(generator) + self.calls) % self.index.shape[0]


class Float64Sampler(ToySampler):
    def sample(self, step, generator):
        batch = super().sample(step, generator)
        return RayBatch(batch.image_index, batch.pixel_xy.double(), batch.weight)


class UnknownModeSampler(ToySampler):
    distributed = "sharded-by-hand"


@pytest.mark.parametrize(
    "cls, rule",
    [
        (UnknownModeSampler, "a distributed mode: distributed = 'sharded-by-hand'"),
        (IgnoresMaskSampler, "masks respected"),
        (ZeroWeightSampler, "weights positive and finite: step 0: loss_weight()"),
        (GlobalRandomSampler, "determinism for a seed"),
        (ForgetfulSampler, "an identical resume after a checkpoint"),
        (Float64Sampler, "RayBatch shapes, dtypes and device: pixel_xy has dtype torch.float64, expected torch.float32"),
    ],
)
def test_a_broken_sampler_is_caught_with_its_rule(cls, rule):
    with pytest.raises(ContractError) as caught:
        check_sampler(cls, train=False)
    message = str(caught.value)
    assert f"{cls.__name__}" in message and f": {rule}" in message and "Fix: " in message, message


def test_the_toy_sampler_itself_conforms_and_trains():
    check_sampler(ToySampler, name="toy")


# ------------------------------------------------------------------------- broken toy inits


class ToyInit(Init):
    """Correct: re-draws the first layer of a ToyField from the generator."""

    def apply(self, field, generator):
        if not isinstance(field, ToyField):
            raise NfplugError(f"--init: toy acts on ToyField only, not {type(field).__name__}")
        with torch.no_grad():
            w = field.net[0].weight
            w.copy_(torch.randn(w.shape, generator=generator) * 0.5)


class GlobalRandomInit(ToyInit):
    def apply(self, field, generator):
        with torch.no_grad():
            field.net[0].weight.normal_()


class ValueErrorInit(ToyInit):
    def apply(self, field, generator):
        raise ValueError("cannot")


class NaNInit(ToyInit):
    def apply(self, field, generator):
        with torch.no_grad():
            field.net[0].weight.fill_(float("nan"))


class NeverAppliesInit(ToyInit):
    def apply(self, field, generator):
        raise NfplugError("--init: not for this field")


@pytest.mark.parametrize(
    "cls, rule",
    [
        (GlobalRandomInit, "determinism for a seed"),
        (ValueErrorInit, "apply() raises NfplugError for a field it cannot act on"),
        (NaNInit, "parameters finite after apply()"),
        (NeverAppliesInit, "acts on at least one field"),
    ],
)
def test_a_broken_init_is_caught_with_its_rule(cls, rule):
    with pytest.raises(ContractError) as caught:
        check_init(cls, fields=[(ToyField, "scene"), (ToyField, "image")], train=False)
    message = str(caught.value)
    assert f"{cls.__name__}: {rule}" in message and "Fix: " in message, message


def test_the_toy_init_itself_conforms_and_trains():
    check_init(ToyInit, fields=[(ToyField, "scene")], name="toy")


# ---------------------------------------------------------------------- broken toy datasets


class ByteImagesDataset(BlenderDataset):
    def load(self, split):
        data = super().load(split)
        data.images = data.images * 255
        return data


class FragileDetectDataset(BlenderDataset):
    @classmethod
    def detect(cls, root: Path) -> bool:
        return "frames" in (root / "transforms_train.json").read_text()


@pytest.mark.parametrize(
    "cls, rule",
    [(ByteImagesDataset, "images in [0, 1]: train: values span ["), (FragileDetectDataset, "detect() of another folder is False")],
)
def test_a_broken_dataset_is_caught_with_its_rule(cls, rule):
    with pytest.raises(ContractError) as caught:
        check_dataset(cls, ensure_demo_scene(), train=False)
    message = str(caught.value)
    assert f"{cls.__name__}: {rule}" in message and "Fix: " in message, message


def test_a_class_of_the_wrong_kind_is_named():
    with pytest.raises(ContractError, match="is not a subclass of nfplug.api.Sampler"):
        check_sampler(ToyField, train=False)
