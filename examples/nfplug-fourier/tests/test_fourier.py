import math

import torch

from nfplug.api import FieldContext
from nfplug.testing import check_field
from nfplug_fourier import FourierField


def test_the_field_follows_the_nfplug_contract():
    check_field(FourierField, FourierField.Config(n_features=32, hidden_dim=32, n_hidden=2), name="fourier")


def test_the_encoding_is_cos_and_sin_of_the_projected_coordinates():
    field = FourierField(FourierField.Config(n_features=2), FieldContext(task="image", aabb=(-1.0, -1.0, 1.0, 1.0), resolution=(8, 8)))
    field.B.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
    u = torch.tensor([[0.25, 0.125]])
    expected = torch.tensor([[math.cos(math.pi / 2), math.cos(math.pi / 2), math.sin(math.pi / 2), math.sin(math.pi / 2)]])
    assert torch.allclose(field._encode(u), expected, atol=1e-6)
