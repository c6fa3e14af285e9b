import torch

from nfplug.api import FieldContext
from nfplug.testing import check_init
from nfplug_builtins.fields.mlp import MLPField
from nfplug_orthogonal import OrthogonalInit


def test_the_init_follows_the_nfplug_contract():
    check_init(OrthogonalInit, name="orthogonal")


def test_every_layer_is_orthogonal_times_the_gain():
    field = MLPField(MLPField.Config(), FieldContext(task="image", aabb=(-1.0, -1.0, 1.0, 1.0), resolution=(8, 8)))
    OrthogonalInit(OrthogonalInit.Config(gain=2.0)).apply(field, torch.Generator().manual_seed(0))
    for layer in field.layers():
        w = layer.weight
        gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w  # the smaller side's Gram matrix
        assert torch.allclose(gram, 4.0 * torch.eye(gram.shape[0]), atol=1e-4)
        assert layer.bias is None or not layer.bias.any()
