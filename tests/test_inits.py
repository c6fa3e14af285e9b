"""The ``siren`` and ``weight-scaling`` init plugins: bounds measured on built weights, scaling, errors."""

from __future__ import annotations

import math

import pytest
import torch

from nfplug import registry
from nfplug.api import Field, FieldContext
from nfplug.errors import NfplugError
from nfplug_builtins.fields.mlp import MLPField
from nfplug_builtins.fields.ngp import NGPField
from nfplug_builtins.fields.siren import SirenField
from nfplug_builtins.inits.siren import SirenInit
from nfplug_builtins.inits.weight_scaling import WeightScalingInit

IMAGE = FieldContext("image", (-1.0, -1.0, 1.0, 1.0), 3)


def siren_field(omega_0: float = 30.0) -> SirenField:
    torch.manual_seed(0)
    return SirenField(SirenField.Config(hidden_features=128, hidden_layers=2, omega_0=omega_0), IMAGE)


def apply(init_name: str, field: Field, seed: int = 0, **options) -> Field:
    cls = registry.get("inits", init_name)
    cls(cls.Config(**options)).apply(field, torch.Generator().manual_seed(seed))
    return field


def expected_bounds(field: Field, omega_0: float, alpha: float = 1.0) -> list:
    """The formulas of the issue, written out independently of the plugin's helper."""
    layers = field.layers()
    bounds = [alpha / layers[0].in_features]
    bounds += [alpha * math.sqrt(6 / layer.in_features) / omega_0 for layer in layers[1:-1]]
    bounds.append(math.sqrt(6 / layers[-1].in_features) / omega_0)
    return bounds


def assert_uniform_within(field: Field, bounds: list) -> None:
    for i, (layer, bound) in enumerate(zip(field.layers(), bounds)):
        w = layer.weight.detach().abs()
        # max |w| of >= 256 uniform draws lies within 3% of the bound (fails with p < 1e-3).
        assert float(w.max()) <= bound * (1 + 1e-6), (i, float(w.max()), bound)
        assert float(w.max()) >= 0.97 * bound, (i, float(w.max()), bound)
        # The mean |w| of U(-b, b) is b / 2: a uniform, not a clipped normal.
        assert abs(float(w.mean()) / bound - 0.5) < 0.08, (i, float(w.mean()), bound)
        bias_bound = 1 / math.sqrt(layer.in_features)
        assert float(layer.bias.detach().abs().max()) <= bias_bound * (1 + 1e-6)


@pytest.mark.parametrize("omega_0", [30.0, 10.0])
def test_siren_init_bounds(omega_0: float) -> None:
    field = apply("siren", siren_field(), omega_0=omega_0)
    assert_uniform_within(field, expected_bounds(field, omega_0))


def test_siren_init_takes_the_fields_omega_by_default() -> None:
    field = apply("siren", siren_field(omega_0=15.0))
    assert_uniform_within(field, expected_bounds(field, 15.0))


@pytest.mark.parametrize("alpha", [2.5, 1.5])
def test_weight_scaling_is_alpha_times_siren_but_last_layer_and_biases(alpha: float) -> None:
    siren = apply("siren", siren_field(), seed=3)
    scaled = apply("weight-scaling", siren_field(), seed=3, alpha=alpha)
    assert_uniform_within(scaled, expected_bounds(scaled, 30.0, alpha))
    layers_s, layers_w = siren.layers(), scaled.layers()
    for i, (a, b) in enumerate(zip(layers_s, layers_w)):
        factor = 1.0 if i == len(layers_s) - 1 else alpha
        torch.testing.assert_close(b.weight, a.weight * factor, rtol=1e-6, atol=0)
        torch.testing.assert_close(b.bias, a.bias, rtol=0, atol=0)
    assert float(layers_w[0].weight.detach().abs().max()) > 1 / 2  # first layer is scaled too (fan_in 2)


def test_weight_scaling_default_alpha_is_the_authors() -> None:
    assert WeightScalingInit.Config().alpha == 2.5
    field = apply("weight-scaling", siren_field())
    assert_uniform_within(field, expected_bounds(field, 30.0, 2.5))


def test_inits_act_on_any_field_with_layers_and_follow_the_generator() -> None:
    torch.manual_seed(0)
    mlp = MLPField(MLPField.Config(width=128, depth=3), IMAGE)
    apply("weight-scaling", mlp, seed=1, alpha=2.0)
    assert_uniform_within(mlp, expected_bounds(mlp, 30.0, 2.0))
    first = [layer.weight.clone() for layer in mlp.layers()]
    apply("weight-scaling", mlp, seed=1, alpha=2.0)
    assert all(torch.equal(a, layer.weight) for a, layer in zip(first, mlp.layers()))
    apply("weight-scaling", mlp, seed=2, alpha=2.0)
    assert not torch.equal(first[1], mlp.layers()[1].weight)


@pytest.mark.parametrize("init_name", ["siren", "weight-scaling"])
def test_init_on_field_without_layers_is_one_line_error(init_name: str) -> None:
    torch.manual_seed(0)
    field = NGPField(NGPField.Config(n_levels=2, log2_hashmap_size=8, image_max_resolution=16), IMAGE)
    with pytest.raises(NfplugError) as e:
        apply(init_name, field)
    message = str(e.value)
    assert init_name in message and "NGPField" in message and "\n" not in message


def test_bad_options_are_one_line_errors() -> None:
    with pytest.raises(NfplugError, match="--init.alpha"):
        WeightScalingInit(WeightScalingInit.Config(alpha=0.0))
    with pytest.raises(NfplugError, match="omega-0"):
        SirenInit(SirenInit.Config(omega_0=-1.0)).apply(siren_field(), torch.Generator())


def test_registered() -> None:
    assert {"default", "siren", "weight-scaling"} <= set(registry.names("inits"))
    assert registry.get("inits", "weight-scaling") is WeightScalingInit
    assert registry.get("fields", "siren") is SirenField
