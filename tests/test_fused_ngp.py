"""The fused C++ paths against their PyTorch references: ngp's two MLPs (values and every
gradient, both density activations, odd widths, tail blocks, determinism) and the C++ marcher
against the PyTorch marcher (single- and multi-level grids, stratified, cone angle)."""

from __future__ import annotations

import nerfacc
import pytest
import torch

from nfplug.api import FieldContext
from nfplug.encoding import fused_ngp
from nfplug.rendering import marcher
from nfplug_builtins.fields.ngp import NGPField

needs_fused = pytest.mark.skipif(fused_ngp.load_kernel() is None, reason="the fused ngp kernel could not be built")
needs_marcher = pytest.mark.skipif(marcher._native_marcher() is None, reason="the C++ marcher could not be built")
SCENE = FieldContext("scene", (-1.0, -2.0, -1.5, 1.0, 2.0, 1.5), 3)


def _field(seed: int = 0, **options) -> NGPField:
    torch.manual_seed(seed)
    field = NGPField(NGPField.Config(**options), SCENE)
    with torch.no_grad():  # features and weights large enough that every path matters
        field.grid.table.uniform_(-1.0, 1.0)
        for p in field.parameters():
            if p.dim() == 2 and p is not field.grid.table:
                p.mul_(2.0)
    return field


def _inputs(n: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, 3, generator=g) * 2 - 1) * torch.tensor([1.1, 2.2, 1.6])  # some outside the box
    d = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    return x, d, torch.randn(n, 3, generator=g), torch.randn(n, generator=g)


def _run(field: NGPField, fused: bool, x: torch.Tensor, d: torch.Tensor, grad_rgb, grad_sigma):
    field.fused = fused
    field.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    d = d.clone().requires_grad_(True)
    rgb, sigma = field(x, d)
    ((rgb * grad_rgb).sum() + (sigma * grad_sigma).sum()).backward()
    grads = {name: p.grad.clone() for name, p in field.named_parameters()}
    return rgb.detach(), sigma.detach(), x.grad, d.grad, grads


@needs_fused
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"density_activation": "softplus"},
        {"hidden_dim": 24, "geo_feat_dim": 7, "n_levels": 5, "n_features_per_level": 4},  # padded widths
    ],
    ids=["default", "softplus", "odd-widths"],
)
@pytest.mark.parametrize("n", [1, 100, 1000])  # 100, 1000: a partial last block of 32
def test_fused_mlps_match_pytorch_values_and_gradients(options, n):
    field = _field(**options)
    x, d, grad_rgb, grad_sigma = _inputs(n)
    ref = _run(field, False, x, d, grad_rgb, grad_sigma)
    got = _run(field, True, x, d, grad_rgb, grad_sigma)
    for name, a, b in zip(["rgb", "sigma", "d x", "d d"], ref[:4], got[:4]):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=lambda m: f"{name}: {m}")
    assert set(ref[4]) == set(got[4])
    for name in ref[4]:
        scale = ref[4][name].abs().max().clamp_min(1.0)
        torch.testing.assert_close(got[4][name] / scale, ref[4][name] / scale, rtol=1e-4, atol=1e-5, msg=lambda m: f"{name}: {m}")
    if n >= 100:  # densities that vary, and points outside the box
        assert ref[1].std() > 0.05 and (ref[1] == 0).any()


@needs_fused
def test_fused_density_matches_pytorch():
    field = _field()
    x, _, _, _ = _inputs(777)
    with torch.no_grad():
        field.fused = False
        ref = field.density(x)
        field.fused = True
        got = field.density(x)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)


@needs_fused
def test_fused_mlps_hand_case():
    # One sample: feat e0, W1[0, 0] = 2 -> h1 = (2, 0, ...); W2[0, 0] = 0.5 -> raw = 1, sigma =
    # exp(1 - 1) = 1. Colour: only Wc3[1, 0] = 3 is non-zero on c2[0] = relu(Wc2[0, 0] * c1[0]) with
    # c1[0] = relu(Wc1[0, 15] * sh_0) = 0.28209479 (sh_0 = 1 / (2 sqrt(pi)), Wc1[0, 15] = 1) and
    # Wc2[0, 0] = 1, so rgb = sigmoid((0, 3 * 0.28209479, 0)) = (0.5, 0.69840, 0.5).
    w1, w2 = torch.zeros(4, 3), torch.zeros(16, 4)
    c1, c2, c3 = torch.zeros(4, 31), torch.zeros(4, 4), torch.zeros(3, 4)
    w1[0, 0], w2[0, 0], c1[0, 15], c2[0, 0], c3[1, 0] = 2.0, 0.5, 1.0, 1.0, 3.0
    sh = torch.zeros(1, 16)
    sh[0, 0] = 0.28209479177387814
    rgb, sigma = fused_ngp.ngp_mlps(torch.tensor([[1.0, 0.0, 0.0]]), sh, [w1, w2, c1, c2, c3], "trunc_exp")
    torch.testing.assert_close(sigma, torch.tensor([1.0]))
    torch.testing.assert_close(rgb, torch.tensor([[0.5, torch.sigmoid(torch.tensor(3 * 0.28209479177387814)).item(), 0.5]]))


@needs_fused
def test_fused_gradients_are_deterministic():
    field = _field()
    x, d, grad_rgb, grad_sigma = _inputs(5000)
    a = _run(field, True, x, d, grad_rgb, grad_sigma)[4]
    b = _run(field, True, x, d, grad_rgb, grad_sigma)[4]
    assert all(torch.equal(a[name], b[name]) for name in a)


# ------------------------------------------------------------------------- marcher


def _blob_grid(levels: int, density: float, seed: int) -> nerfacc.OccGridEstimator:
    estimator = nerfacc.OccGridEstimator(roi_aabb=[-1.5] * 3 + [1.5] * 3, resolution=32, levels=levels)
    g = torch.Generator().manual_seed(seed)
    seeds = (torch.rand(levels, 32, 32, 32, generator=g) < density).float()
    estimator.binaries.copy_(torch.nn.functional.max_pool3d(seeds[None], 3, 1, 1)[0] > 0)
    return estimator


@needs_marcher
@pytest.mark.parametrize("levels", [1, 3])
@pytest.mark.parametrize("cone_angle", [0.0, 0.01])
@pytest.mark.parametrize("stratified", [False, True])
@pytest.mark.parametrize("density", [0.0005, 0.02])  # mostly empty blocks (skipped), mostly occupied
def test_native_marcher_matches_pytorch_marcher(levels, cone_angle, stratified, density):
    estimator = _blob_grid(levels, density, seed=levels)
    g = torch.Generator().manual_seed(5)
    n = 500
    rays_o = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1) * 4.0
    rays_d = torch.nn.functional.normalize(-rays_o + torch.randn(n, 3, generator=g), dim=-1)
    kwargs = dict(near_plane=0.3, far_plane=12.0, render_step_size=0.011, stratified=stratified, cone_angle=cone_angle)
    ref = marcher._march_rays_cpu(estimator, rays_o, rays_d, generator=torch.Generator().manual_seed(9), **kwargs)
    got = marcher._march_rays_native(estimator, rays_o, rays_d, generator=torch.Generator().manual_seed(9), **kwargs)
    assert ref[0].numel() > 100
    # The same samples, except (rarely) one whose midpoint lies on a cell face, where rounding
    # decides; torch's and C's pow may round the geometric lattice one ulp apart.
    differ = 0
    for r in range(n):
        a, b = ref[1][ref[0] == r], got[1][got[0] == r]
        if a.shape != b.shape:
            differ += abs(a.numel() - b.numel())
            continue
        torch.testing.assert_close(b, a, rtol=1e-6, atol=0)
        torch.testing.assert_close(got[2][got[0] == r], ref[2][ref[0] == r], rtol=1e-6, atol=0)
    assert differ <= max(2, ref[0].numel() // 500)
    assert torch.all(got[0][1:] >= got[0][:-1])


@needs_fused
def test_reusing_the_marching_features_changes_nothing(monkeypatch):
    """The renderer hands ngp's hash features from the density test to forward(); colours and every
    gradient are the same as computing them again."""
    from nfplug.config import RenderConfig
    from nfplug.rendering.scene_renderer import SceneRenderer

    field = _field()
    renderer = SceneRenderer([-1.0, -2.0, -1.5, 1.0, 2.0, 1.5], 0.5, 6.0, RenderConfig(grid_resolution=32))
    renderer.estimator.binaries.fill_(True)
    g = torch.Generator().manual_seed(4)
    rays_o = torch.nn.functional.normalize(torch.randn(300, 3, generator=g), dim=-1) * 3.0
    rays_d = torch.nn.functional.normalize(-rays_o + 0.3 * torch.randn(300, 3, generator=g), dim=-1)

    def run():
        field.zero_grad(set_to_none=True)
        out = renderer.render(field, rays_o, rays_d, torch.ones(3))
        out.colors.square().sum().backward()
        return out, {name: p.grad.clone() for name, p in field.named_parameters()}

    calls, grad_modes = [], []
    original, original_density = type(field).forward, type(field).density_for_marching
    monkeypatch.setattr(type(field), "forward", lambda self, *a, **k: calls.append("reuse" in k) or original(self, *a, **k))
    monkeypatch.setattr(
        type(field), "density_for_marching", lambda self, x: grad_modes.append(torch.is_grad_enabled()) or original_density(self, x)
    )
    reused, reused_grads = run()
    assert grad_modes == [False]  # the density test builds no graph
    monkeypatch.setattr(type(field), "density_for_marching", lambda self, x: (original_density(self, x)[0], None))
    fresh, fresh_grads = run()
    assert calls == [True, False]
    assert reused.n_samples == fresh.n_samples > 1000
    assert torch.equal(reused.colors, fresh.colors)
    assert all(torch.equal(reused_grads[name], fresh_grads[name]) for name in fresh_grads)


def test_native_kernels_build_per_source_and_can_be_switched_off(monkeypatch, tmp_path):
    from nfplug import native

    monkeypatch.setenv("NFPLUG_CACHE", str(tmp_path))
    source = 'extern "C" int nfplug_test_add(int a, int b) { return a + b; }'
    monkeypatch.setattr(native, "_loaded", {})
    lib = native.load_library("probe", source, "test")
    if lib is None:
        pytest.skip("no C++ compiler")
    assert lib.nfplug_test_add(2, 3) == 5
    assert len(list((tmp_path / "kernels").glob("probe_*.so"))) == 1  # cached under the source's hash
    monkeypatch.setattr(native, "_loaded", {})
    monkeypatch.setenv("NFPLUG_NO_CPP_KERNEL", "1")
    assert native.load_library("probe", source, "test") is None


@needs_marcher
def test_native_marcher_in_pieces_gives_the_same_samples(monkeypatch):
    """Rays whose candidates exceed the marcher's room are marched a group of rays at a time."""
    estimator = _blob_grid(1, 0.02, seed=3)
    g = torch.Generator().manual_seed(6)
    rays_o = torch.nn.functional.normalize(torch.randn(300, 3, generator=g), dim=-1) * 4.0
    rays_d = torch.nn.functional.normalize(-rays_o + torch.randn(300, 3, generator=g), dim=-1)
    kwargs = dict(near_plane=0.3, far_plane=12.0, render_step_size=0.011, stratified=True, cone_angle=0.0)
    whole = marcher._march_rays_native(estimator, rays_o, rays_d, generator=torch.Generator().manual_seed(9), **kwargs)
    monkeypatch.setattr(marcher, "_MAX_ROOM", 1000)  # a few rays per piece (one ray has ~400 candidates)
    pieces = marcher._march_rays_native(estimator, rays_o, rays_d, generator=torch.Generator().manual_seed(9), **kwargs)
    assert whole[0].numel() > 1000
    assert all(torch.equal(a, b) for a, b in zip(whole, pieces))


@needs_marcher
def test_native_marcher_sees_every_change_of_the_grid():
    """The packed grid is cached between marches; a grid changed in place or replaced (as an update
    does) is packed again: each march gives the samples of the grid as it is then."""
    g = torch.Generator().manual_seed(6)
    rays_o = torch.nn.functional.normalize(torch.randn(200, 3, generator=g), dim=-1) * 4.0
    rays_d = torch.nn.functional.normalize(-rays_o + torch.randn(200, 3, generator=g), dim=-1)
    kwargs = dict(near_plane=0.3, far_plane=12.0, render_step_size=0.011, stratified=False, cone_angle=0.0)

    def both(estimator):
        ref = marcher._march_rays_cpu(estimator, rays_o, rays_d, generator=None, **kwargs)
        got = marcher._march_rays_native(estimator, rays_o, rays_d, generator=None, **kwargs)
        return ref, got

    estimator = _blob_grid(1, 0.02, seed=3)
    first = both(estimator)[1]
    estimator.binaries[:, :16] = False  # in place
    ref, got = both(estimator)
    assert got[0].numel() < first[0].numel() and got[0].numel() == ref[0].numel()
    estimator.binaries = torch.ones_like(estimator.binaries)  # replaced
    ref, got = both(estimator)
    assert got[0].numel() > first[0].numel() and got[0].numel() == ref[0].numel()
    again = both(estimator)[1]  # cached: the same
    assert all(torch.equal(a, b) for a, b in zip(got, again))
