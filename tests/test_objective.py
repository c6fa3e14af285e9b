"""The Task protocol and the training objective: a field's own loss terms reach the loss."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import smooth_image, write_png
from nfplug import registry
from nfplug.cli import main
from nfplug.training.checkpoint import latest_checkpoint, load_checkpoint
from nfplug.training.objective import field_regularizers, step_loss
from nfplug.training.tasks import Task, build_task
from nfplug.cli import parse_train_args
from nfplug_builtins.fields.mlp import MLPField


def test_both_tasks_satisfy_the_task_protocol(tmp_path):
    image = write_png(tmp_path / "im.png", smooth_image(8, 8))
    for argv in ([], ["--data", str(image)]):
        config, _, _ = parse_train_args(argv)
        task = build_task(config, torch.device("cpu"))
        assert isinstance(task, Task), type(task).__name__

    class NoForward:
        name, images, train_mask = "scene", torch.zeros(1, 2, 2, 3), None

    assert not isinstance(NoForward(), Task)


class DecayingField(MLPField):
    """The image mlp plus an unused parameter pulled to zero only by its own loss term."""

    weight = 10.0

    def __init__(self, config, context):
        super().__init__(config, context)
        self.spare = nn.Parameter(torch.ones(4))

    def loss_terms(self, step):
        return {"spare_l2": self.weight * self.spare.square().sum()} if self.weight else {}


class PlainField(DecayingField):
    weight = 0.0


def _train(tmp_path, cls, name):
    image = write_png(tmp_path / "im.png", smooth_image(16, 16))
    with registry.registered("fields", name, cls):
        args = ["--data", str(image), "--field", name, "--max-steps", "20", "--eval-every", "0", "--no-progress", "--threads", "1"]
        assert main(["train", *args, "--output", str(tmp_path / name)]) == 0
    return load_checkpoint(latest_checkpoint(tmp_path / name))["field"]["spare"]


def test_a_field_loss_term_is_added_to_the_loss_and_logged(tmp_path):
    assert torch.equal(_train(tmp_path, PlainField, "plain"), torch.ones(4))  # no colour depends on it
    decayed = _train(tmp_path, DecayingField, "decaying")
    assert float(decayed.max()) < 0.995  # only its loss term moved it (20 Adam steps in the warm-up)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "decaying" / "tensorboard"))
    events.Reload()
    assert "loss/spare_l2" in events.Tags()["scalars"]


def test_loss_terms_must_be_scalars():
    class Bad(MLPField):
        def loss_terms(self, step):
            return {"vector": torch.ones(3)}

    from nfplug.testing import field_context
    from nfplug.errors import NfplugError

    with pytest.raises(NfplugError, match=r"Bad.loss_terms\(\)\['vector'\] must be a scalar tensor"):
        field_regularizers(Bad(MLPField.Config(), field_context("image")), 0)


def test_step_loss_by_hand():
    weight, per_ray = torch.tensor([1.0, 3.0]), torch.tensor([0.5, 0.25])
    narrower = [torch.tensor([1.0, 1.0])]
    # mean(1*0.5, 3*0.25) = 0.625; mean(1, 3) = 2; + 0.5
    assert float(step_loss(weight, per_ray, narrower, {"r": torch.tensor(0.5)})) == pytest.approx(3.125)
