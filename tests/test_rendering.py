"""CPU ray marcher and packed volume rendering against hand cases, brute force and nerfacc."""

from __future__ import annotations

import math
from typing import List, Tuple

import nerfacc
import pytest
import torch
from nerfacc.grid import _query as nerfacc_query
from torch import Tensor

from nfplug.rendering import marcher, volrend
from nfplug.rendering.marcher import march_rays, query_occupancy, ray_aabb_intersect
from nfplug.rendering.volrend import accumulate, distortion, render_rays, render_weights

LN2 = math.log(2.0)


# ------------------------------------------------------------------------- helpers


def _pack(counts: List[int], generator: torch.Generator) -> Tuple[Tensor, Tensor, Tensor]:
    """Random sorted packed intervals: ray_indices, t_starts, t_ends."""
    ray_indices = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    starts, ends = [], []
    for n in counts:
        edges = torch.sort(torch.rand(n + 1, generator=generator) * 4.0 + 2.0).values
        starts.append(edges[:-1])
        ends.append(edges[1:])
    return ray_indices, torch.cat(starts), torch.cat(ends)


def _pad(values: Tensor, ray_indices: Tensor, n_rays: int, width: int) -> Tuple[Tensor, Tensor]:
    """Packed ``[n, ...]`` -> zero-padded ``[n_rays, width, ...]`` (differentiable) and its mask."""
    counts = torch.bincount(ray_indices, minlength=n_rays)
    pos = torch.arange(ray_indices.shape[0]) - (torch.cumsum(counts, 0) - counts)[ray_indices]
    out = values.new_zeros((n_rays, width) + values.shape[1:])
    out = out.index_put((ray_indices, pos), values)
    mask = torch.zeros(n_rays, width, dtype=torch.bool)
    mask[ray_indices, pos] = True
    return out, mask


def _slab(o: List[float], d: List[float], aabb: List[float]) -> Tuple[float, float]:
    """Python-float ray/box entry and exit (inf, -inf when missed)."""
    t0, t1 = -math.inf, math.inf
    for a in range(3):
        if d[a] == 0.0:
            if not aabb[a] <= o[a] <= aabb[a + 3]:
                return math.inf, -math.inf
            continue
        ta, tb = (aabb[a] - o[a]) / d[a], (aabb[a + 3] - o[a]) / d[a]
        t0, t1 = max(t0, min(ta, tb)), min(t1, max(ta, tb))
    return t0, t1


def _brute_force_march(o, d, aabb, near, far, step, cone_angle=0.0) -> List[Tuple[float, float]]:
    """nerfacc's marching rule, one step at a time, all cells occupied."""
    t_min, t_max = _slab(o, d, aabb)
    lo, hi = max(near, t_min), min(far, t_max)
    samples, t = [], near
    while True:
        dt = min(max(t * cone_angle, step), 1e10)
        mid = t + 0.5 * dt
        if mid >= hi:
            return samples
        if mid >= lo:
            samples.append((t, t + dt))
        t += dt


def _rays_towards(n: int, targets_scale: float, generator: torch.Generator, radius: float = 3.0):
    origins = torch.nn.functional.normalize(torch.randn(n, 3, generator=generator), dim=-1) * radius
    targets = (torch.rand(n, 3, generator=generator) - 0.5) * 2.0 * targets_scale
    return origins, torch.nn.functional.normalize(targets - origins, dim=-1)


def _estimator(aabb, resolution, levels: int = 1, fill: bool = False) -> nerfacc.OccGridEstimator:
    estimator = nerfacc.OccGridEstimator(roi_aabb=aabb, resolution=resolution, levels=levels)
    estimator.binaries.fill_(fill)
    return estimator


# ------------------------------------------------------------------- volume rendering


@pytest.fixture(params=["native", "reference"])
def kernel(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Volume rendering and the visibility test through the C++ kernel, then through the PyTorch
    reference; the native run checks that the kernel really ran."""
    if request.param == "reference":
        monkeypatch.setattr(volrend, "_native", lambda: None)
    elif volrend._native() is None:
        pytest.skip("the C++ volume-rendering kernel cannot be built here")
    else:
        calls = {"render": 0, "visible": 0}
        render, visible = volrend._VolumeRender.apply, volrend.visible_samples_native

        def counted_render(*args):
            calls["render"] += 1
            return render(*args)

        def counted_visible(*args):
            calls["visible"] += 1
            return visible(*args)

        monkeypatch.setattr(volrend._VolumeRender, "apply", counted_render)
        monkeypatch.setattr(marcher, "visible_samples_native", counted_visible)
        yield calls
        return
    yield {}


def test_render_weights_hand_case(kernel):
    # Ray 0: [0, 1] with sigma ln2 -> sigma dt = ln2, alpha 1/2, T 1, w 1/2;
    #        [1, 1.5] with sigma 2 ln2 -> sigma dt = ln2, alpha 1/2, T 1/2, w 1/4.
    # Ray 1: [0, 2] with sigma ln2 -> sigma dt = 2 ln2, alpha 3/4, T 1, w 3/4.
    # Ray 2: no samples.
    t_starts = torch.tensor([0.0, 1.0, 0.0])
    t_ends = torch.tensor([1.0, 1.5, 2.0])
    sigmas = torch.tensor([LN2, 2 * LN2, LN2])
    ray_indices = torch.tensor([0, 0, 1])
    weights, trans = render_weights(t_starts, t_ends, sigmas, ray_indices, n_rays=3)
    torch.testing.assert_close(weights, torch.tensor([0.5, 0.25, 0.75]))
    torch.testing.assert_close(trans, torch.tensor([1.0, 0.5, 1.0]))

    rgbs = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    bkgd = torch.tensor([1.0, 1.0, 1.0])
    colors, opacities, depths = render_rays(
        t_starts, t_ends, ray_indices, 3, lambda *_: (rgbs, sigmas), render_bkgd=bkgd
    )
    # opacity 3/4 -> background adds 1/4 to each channel; ray 2 is all background.
    torch.testing.assert_close(colors, torch.tensor([[0.75, 0.5, 0.25], [0.25, 0.25, 1.0], [1.0, 1.0, 1.0]]))
    torch.testing.assert_close(opacities, torch.tensor([[0.75], [0.75], [0.0]]))
    # depth = sum w t_mid / opacity: (0.5 * 0.5 + 0.25 * 1.25) / 0.75 = 0.75 and 1.0.
    torch.testing.assert_close(depths, torch.tensor([[0.75], [1.0], [0.0]]))
    assert kernel.get("render", 1) == 1


def test_render_parity_with_nerfacc_values_and_gradients(kernel):
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    counts = [0, 1, 5, 17, 3, 0, 30, 8]
    n_rays, width = len(counts), max(counts)
    ray_indices, t_starts, t_ends = _pack(counts, generator)
    sigmas = (torch.rand(t_starts.shape[0], generator=generator) * 3.0).requires_grad_()
    rgbs = torch.rand(t_starts.shape[0], 3, generator=generator).requires_grad_()
    bkgd = torch.tensor([0.2, 0.5, 0.9])

    *ours, weights = render_rays(t_starts, t_ends, ray_indices, n_rays, lambda *_: (rgbs, sigmas), render_bkgd=bkgd, with_weights=True)
    _, trans = render_weights(t_starts, t_ends, sigmas, ray_indices, n_rays)
    assert kernel.get("render", 1) == 1

    # nerfacc's batched path runs on the CPU; zero-length, zero-density padding is inert.
    ts_pad, mask = _pad(t_starts, ray_indices, n_rays, width)
    te_pad, _ = _pad(t_ends, ray_indices, n_rays, width)
    sig_pad, _ = _pad(sigmas, ray_indices, n_rays, width)
    rgb_pad, _ = _pad(rgbs, ray_indices, n_rays, width)
    theirs = nerfacc.rendering(ts_pad, te_pad, rgb_sigma_fn=lambda *_: (rgb_pad, sig_pad), render_bkgd=bkgd)[:3]
    ref_weights, ref_trans, _ = nerfacc.render_weight_from_density(ts_pad, te_pad, sig_pad)

    tol = dict(rtol=1e-5, atol=1e-6)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, **tol)
    torch.testing.assert_close(weights, ref_weights[mask], **tol)
    torch.testing.assert_close(trans, ref_trans[mask], **tol)

    upstream = [torch.randn_like(x) for x in ours] + [torch.randn_like(weights)]
    grads = []
    for outputs in (list(ours) + [weights], list(theirs) + [ref_weights[mask]]):
        loss = sum((o * u).sum() for o, u in zip(outputs, upstream))
        grads.append(torch.autograd.grad(loss, (sigmas, rgbs)))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert grads[0][0].abs().sum() > 0


def test_transmittance_stays_accurate_after_a_million_samples():
    # 1M samples with sigma dt = 10 before the last ray: a float32 global cumsum
    # (running total 1e7, spacing ~1) would lose the last ray's small increments.
    n_before = 1_000_000
    ray_indices = torch.cat([torch.arange(n_before) // 500, torch.full((4,), n_before // 500)])
    t_starts = torch.zeros(n_before + 4)
    t_ends = torch.ones(n_before + 4)
    sigmas = torch.cat([torch.full((n_before,), 10.0), torch.full((4,), 0.01)])
    _, trans = render_weights(t_starts, t_ends, sigmas, ray_indices, n_rays=n_before // 500 + 1)
    torch.testing.assert_close(trans[-4:], torch.exp(-torch.tensor([0.0, 0.01, 0.02, 0.03])), rtol=1e-6, atol=0)


def test_render_rays_without_samples_gives_background():
    empty = torch.empty(0)

    def never_called(*_):
        raise AssertionError("rgb_sigma_fn called without samples")

    bkgd = torch.tensor([0.1, 0.2, 0.3])
    colors, opacities, depths = render_rays(
        empty, empty, torch.empty(0, dtype=torch.long), 2, never_called, render_bkgd=bkgd
    )
    torch.testing.assert_close(colors, bkgd.expand(2, 3))
    assert opacities.abs().sum() == 0 and depths.abs().sum() == 0
    torch.testing.assert_close(accumulate(empty, None, torch.empty(0, dtype=torch.long), 2), torch.zeros(2, 1))


def test_render_weights_rejects_unsorted_rays(kernel):
    t = torch.tensor([0.0, 0.0])
    with pytest.raises(ValueError, match="sorted"):
        render_weights(t, t + 1, t + 1, torch.tensor([1, 0]), n_rays=2)
    with pytest.raises(ValueError, match="sorted"):
        render_rays(t, t + 1, torch.tensor([1, 0]), 2, lambda *_: (torch.ones(2, 3), t + 1))
    estimator = _estimator([-1.0] * 3 + [1.0] * 3, 4, fill=True)
    with pytest.raises(ValueError, match="sorted"):
        marcher.visible_samples(estimator, t, t + 1, t + 1, torch.tensor([1, 0]), 2, 0.0, 1e-4)


# --------------------------------------------------------------------- ray / box


def test_ray_aabb_intersect_hand_cases():
    aabb = torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0])
    rays_o = torch.tensor([[-2.0, 0.0, 0.0], [-2.0, 2.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 0.0], [-3.0, -3.0, 0.0]])
    rays_d = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.6, 0.8, 0.0]])
    t_min, t_max, hit = ray_aabb_intersect(rays_o, rays_d, aabb)
    assert hit.tolist() == [True, False, False, True, True]
    # Ray 4 crosses x = -1 at 10/3 and y = -1 at 2.5 (enters at the later), y = 1 at 5
    # and x = 1 at 20/3 (leaves at the earlier); z is parallel and inside.
    torch.testing.assert_close(t_min[[0, 2, 3, 4]], torch.tensor([1.0, -3.0, -1.0, 10.0 / 3.0]))
    torch.testing.assert_close(t_max[[0, 2, 3, 4]], torch.tensor([3.0, -1.0, 1.0, 5.0]))


def test_ray_aabb_intersect_brute_force():
    generator = torch.Generator().manual_seed(1)
    aabb = torch.tensor([-1.0, -0.5, -0.25, 1.0, 0.75, 0.5])
    rays_o = torch.randn(128, 3, generator=generator)
    rays_d = torch.nn.functional.normalize(torch.randn(128, 3, generator=generator), dim=-1)
    rays_d[:8, 0] = 0.0  # axis-parallel rays take the zero-direction branch
    rays_d[8:12, 1:] = 0.0
    rays_d = torch.nn.functional.normalize(rays_d, dim=-1)
    t_min, t_max, hit = ray_aabb_intersect(rays_o, rays_d, aabb)

    ts = torch.linspace(-8.0, 8.0, 16001)  # spacing 1e-3
    x = rays_o[:, None, :] + ts[None, :, None] * rays_d[:, None, :]
    inside = ((x >= aabb[:3]) & (x <= aabb[3:])).all(dim=-1)
    met = inside.any(dim=1)
    first = torch.where(inside, ts, torch.full_like(ts, math.inf)).amin(dim=1)
    last = torch.where(inside, ts, torch.full_like(ts, -math.inf)).amax(dim=1)
    behind = met & (last <= 0)
    assert met.sum() > 20 and (~met).sum() > 20 and behind.sum() > 5
    assert torch.equal(hit, met & ~behind)
    torch.testing.assert_close(t_min[met], first[met], atol=1.1e-3, rtol=0)
    torch.testing.assert_close(t_max[met], last[met], atol=1.1e-3, rtol=0)


# ------------------------------------------------------------------------- marcher


@pytest.mark.parametrize("cone_angle", [0.0, 0.005])  # 0.005: step grows from t = 2.6 on
@pytest.mark.parametrize("stratified", [False, True])
def test_march_all_occupied_matches_brute_force(cone_angle: float, stratified: bool):
    generator = torch.Generator().manual_seed(2)
    aabb = [-1.0, -0.75, -0.5, 1.0, 1.0, 0.5]
    estimator = _estimator(aabb, [16, 8, 12], fill=True)
    rays_o, rays_d = _rays_towards(24, 1.5, generator)
    near, far, step = 1.0, 3.6, 0.013  # far cuts some rays inside the box
    ray_indices, t_starts, t_ends = march_rays(
        estimator, rays_o, rays_d, near_plane=near, far_plane=far, render_step_size=step,
        stratified=stratified, cone_angle=cone_angle, generator=torch.Generator().manual_seed(7),
    )
    offsets = torch.rand(24, generator=torch.Generator().manual_seed(7)) * step if stratified else torch.zeros(24)
    n_empty = 0
    for r in range(24):
        expected = _brute_force_march(
            rays_o[r].tolist(), rays_d[r].tolist(), aabb, near + offsets[r].item(), far, step, cone_angle
        )
        got = ray_indices == r
        assert int(got.sum()) == len(expected), f"ray {r}"
        n_empty += not expected
        if expected:
            ref = torch.tensor(expected)
            torch.testing.assert_close(t_starts[got], ref[:, 0], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(t_ends[got], ref[:, 1], rtol=1e-5, atol=1e-5)
    assert 0 < n_empty < 24
    assert torch.all(ray_indices[1:] >= ray_indices[:-1])


def test_march_empty_grid_gives_no_samples():
    generator = torch.Generator().manual_seed(3)
    rays_o, rays_d = _rays_towards(16, 0.5, generator)
    ray_indices, t_starts, t_ends = march_rays(
        _estimator([-1.0] * 3 + [1.0] * 3, 16), rays_o, rays_d, near_plane=0.0, far_plane=10.0, render_step_size=0.01
    )
    assert ray_indices.shape == t_starts.shape == t_ends.shape == (0,)
    assert ray_indices.dtype == torch.long


def test_march_single_occupied_cell():
    generator = torch.Generator().manual_seed(4)
    resolution, cell = 32, (20, 9, 14)
    estimator = _estimator([-1.0] * 3 + [1.0] * 3, resolution)
    estimator.binaries[(0,) + cell] = True
    size = 2.0 / resolution
    cell_lo = torch.tensor(cell) * size - 1.0
    cell_box = torch.cat([cell_lo, cell_lo + size])

    aimed_o, _ = _rays_towards(40, 1.0, generator)
    aimed_d = torch.nn.functional.normalize(cell_lo + size * torch.rand(40, 3, generator=generator) - aimed_o, dim=-1)
    other_o, other_d = _rays_towards(200, 0.8, generator)
    rays_o, rays_d = torch.cat([aimed_o, other_o]), torch.cat([aimed_d, other_d])
    step = 0.004  # long rays: exercises the block-pruned path
    ray_indices, t_starts, t_ends = march_rays(
        estimator, rays_o, rays_d, near_plane=0.5, far_plane=6.0, render_step_size=step
    )

    mids = rays_o[ray_indices] + ((t_starts + t_ends) / 2)[:, None] * rays_d[ray_indices]
    assert ((mids >= cell_box[:3] - 1e-5) & (mids <= cell_box[3:] + 1e-5)).all()
    t_in, t_out, hits_cell = ray_aabb_intersect(rays_o, rays_d, cell_box)
    counts = torch.bincount(ray_indices, minlength=rays_o.shape[0])
    assert (counts[~hits_cell] == 0).all()
    long_chord = hits_cell & (t_out - t_in > 1.01 * step)
    assert long_chord.sum() >= 30 and (~hits_cell).sum() > 100
    assert (counts[long_chord] >= 1).all()


def test_march_rays_far_from_every_occupied_block_give_no_samples():
    estimator = _estimator([-1.0] * 3 + [1.0] * 3, 32)
    estimator.binaries[0, 0, 0, 0] = True  # one cell in the (-1, -1, -1) corner
    rays_o = torch.tensor([[-5.0, 0.8, 0.8], [0.7, -5.0, 0.9]])
    rays_d = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    ray_indices, t_starts, t_ends = march_rays(estimator, rays_o, rays_d, near_plane=0.0, far_plane=20.0, render_step_size=0.004)
    assert ray_indices.shape == t_starts.shape == t_ends.shape == (0,)


def test_block_pruning_changes_nothing(monkeypatch: pytest.MonkeyPatch):
    generator = torch.Generator().manual_seed(5)
    estimator = _estimator([-1.5] * 3 + [1.5] * 3, 64)
    estimator.binaries.copy_(torch.rand(estimator.binaries.shape, generator=generator) < 0.002)
    rays_o, rays_d = _rays_towards(300, 1.4, generator, radius=4.0)
    kwargs = dict(near_plane=2.0, far_plane=6.0, render_step_size=3 * math.sqrt(3) / 512, early_stop_eps=0.0)
    for cone_angle in (0.0, 0.004):
        pruned = march_rays(estimator, rays_o, rays_d, cone_angle=cone_angle, **kwargs)
        monkeypatch.setattr(marcher, "_block_factor", lambda resolution: 1)
        dense = march_rays(estimator, rays_o, rays_d, cone_angle=cone_angle, **kwargs)
        monkeypatch.undo()
        assert pruned[0].shape[0] > 100
        for a, b in zip(pruned, dense):
            assert torch.equal(a, b)


@pytest.mark.parametrize(
    "alpha_thre, early_stop_eps, mean_occ", [(0.0, 1e-2, 0.5), (0.05, 1e-4, 0.5), (0.05, 0.0, 0.01)]
)
def test_march_visibility_matches_nerfacc(alpha_thre: float, early_stop_eps: float, mean_occ: float, kernel):
    generator = torch.Generator().manual_seed(6)
    estimator = _estimator([-1.0] * 3 + [1.0] * 3, 16, fill=True)
    estimator.occs.fill_(mean_occ)
    rays_o, rays_d = _rays_towards(50, 0.8, generator)
    kwargs = dict(near_plane=1.0, far_plane=5.0, render_step_size=0.02)

    def sigma_fn(t_starts: Tensor, t_ends: Tensor, ray_indices: Tensor) -> Tensor:
        assert not torch.is_grad_enabled()
        x = rays_o[ray_indices] + ((t_starts + t_ends) / 2)[:, None] * rays_d[ray_indices]
        return 40.0 * torch.exp(-(x**2).sum(-1) / 0.2) + 0.5 * (x[:, 0] > 0)

    ray_indices, t_starts, t_ends = march_rays(estimator, rays_o, rays_d, **kwargs)
    width = int(torch.bincount(ray_indices).max())
    with torch.no_grad():
        sig_pad, mask = _pad(sigma_fn(t_starts, t_ends, ray_indices), ray_indices, 50, width)
    visible = nerfacc.render_visibility_from_density(
        _pad(t_starts, ray_indices, 50, width)[0],
        _pad(t_ends, ray_indices, 50, width)[0],
        sig_pad,
        early_stop_eps=early_stop_eps,
        alpha_thre=min(alpha_thre, mean_occ),
    )[mask]
    assert 0 < int(visible.sum()) < visible.shape[0]

    got = march_rays(estimator, rays_o, rays_d, sigma_fn=sigma_fn, alpha_thre=alpha_thre,
                     early_stop_eps=early_stop_eps, **kwargs)
    for a, b in zip(got, (ray_indices[visible], t_starts[visible], t_ends[visible])):
        assert torch.equal(a, b)
    assert kernel.get("visible", 1) == 1


def test_query_occupancy_matches_nerfacc_levels():
    generator = torch.Generator().manual_seed(8)
    binaries = torch.rand(3, 8, 6, 4, generator=generator) < 0.4
    base_aabb = torch.tensor([-1.0, -0.5, 0.0, 1.0, 0.5, 2.0])
    x = torch.randn(20000, 3, generator=generator) * 2.0 + torch.tensor([0.0, 0.0, 1.0])
    expected, _ = nerfacc_query(x, binaries, base_aabb)
    assert torch.equal(query_occupancy(binaries, base_aabb, x), expected.bool())


def test_march_levels_use_finest_containing_level():
    generator = torch.Generator().manual_seed(9)
    estimator = _estimator([-1.0] * 3 + [1.0] * 3, 8, levels=2)
    # A point outside the base box but inside level 1 ([-2, 2]^3) is looked up at level 1.
    estimator.binaries[1, 7, 4, 4] = True  # level-1 cell of x in [1.5, 2), y, z in [0, 0.5)
    assert query_occupancy(estimator.binaries, estimator.aabbs[0], torch.tensor([[1.7, 0.2, 0.2]])).item()
    assert not query_occupancy(estimator.binaries, estimator.aabbs[0], torch.tensor([[0.7, 0.2, 0.2]])).item()

    rays_o, rays_d = _rays_towards(100, 1.5, generator, radius=4.0)
    kwargs = dict(near_plane=0.5, far_plane=8.0, render_step_size=0.02)
    for level in (0, 1):
        estimator.binaries.zero_()
        estimator.binaries[level] = True
        ray_indices, t_starts, t_ends = march_rays(estimator, rays_o, rays_d, **kwargs)
        mids = rays_o[ray_indices] + ((t_starts + t_ends) / 2)[:, None] * rays_d[ray_indices]
        in_base = (mids.abs() < 1.0).all(dim=-1)
        assert mids.shape[0] > 100
        assert (mids.abs() <= 2.0 + 1e-5).all()
        assert in_base.all() if level == 0 else not in_base.any()


def test_march_rejects_bad_options():
    estimator = _estimator([-1.0] * 3 + [1.0] * 3, 4, fill=True)
    rays = torch.zeros(1, 3), torch.tensor([[0.0, 0.0, 1.0]])
    with pytest.raises(ValueError, match="render_step_size"):
        march_rays(estimator, *rays, near_plane=0.0, far_plane=1.0, render_step_size=0.0)
    with pytest.raises(ValueError, match="cone_angle"):
        march_rays(estimator, *rays, near_plane=0.0, far_plane=1.0, render_step_size=0.1, cone_angle=-1.0)


def _brute_force_distortion(w, t0, t1, ray_indices, n_rays):
    out = []
    m = (t0 + t1) / 2
    for r in range(n_rays):
        sel = ray_indices == r
        wi, mi, di = w[sel], m[sel], (t1 - t0)[sel]
        pairs = (wi[:, None] * wi[None, :] * (mi[:, None] - mi[None, :]).abs()).sum()
        out.append(pairs + (wi**2 * di).sum() / 3)
    return torch.stack(out)


def test_distortion_hand_cases():
    # One sample of weight 1 on [0, 1]: only the interval term, 1/3.
    one = distortion(torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([1.0]), torch.tensor([0]), 1)
    assert one.tolist() == pytest.approx([1 / 3])
    # Two halves at midpoints 0.5 and 1.5: 2 * 0.25 * 1 + 2 * 0.25 / 3 = 2/3; a ray without samples: 0.
    two = distortion(torch.tensor([0.5, 0.5]), torch.tensor([0.0, 1.0]), torch.tensor([1.0, 2.0]), torch.tensor([1, 1]), 2)
    assert two.tolist() == pytest.approx([0.0, 2 / 3])


def test_distortion_matches_the_double_sum_values_and_gradients():
    g = torch.Generator().manual_seed(3)
    counts = torch.tensor([0, 1, 5, 17, 3])
    ray_indices = torch.repeat_interleave(torch.arange(5), counts)
    steps = torch.rand(int(counts.sum()), generator=g, dtype=torch.float64) * 0.2 + 0.01
    t0 = torch.cat([torch.cumsum(s, 0) - s for s in steps.split(counts.tolist())])
    t1 = t0 + steps
    w = torch.rand(t0.shape[0], generator=g, dtype=torch.float64).requires_grad_(True)
    ours = distortion(w, t0, t1, ray_indices, 5)
    (g_ours,) = torch.autograd.grad(ours.sum(), w)
    ref = _brute_force_distortion(w, t0, t1, ray_indices, 5)
    (g_ref,) = torch.autograd.grad(ref.sum(), w)
    assert torch.allclose(ours, ref, atol=1e-12) and torch.allclose(g_ours, g_ref, atol=1e-12)


def _grids(levels: int, seed: int, copies: int = 3):
    """Identical renderers over a 24x16x20 grid with some invisible cells and random occupancies."""
    from nfplug.config import RenderConfig
    from nfplug.rendering.scene_renderer import SceneRenderer

    config = RenderConfig(grid_resolution=24, grid_sample_fraction=0.25)  # nerfacc's quarter
    out = []
    for _ in range(copies):
        renderer = SceneRenderer([-1.0, -0.5, -1.0, 1.0, 0.5, 1.0], 0.1, 5.0, config, levels=levels)
        est = renderer.estimator
        est.resolution.copy_(torch.tensor([24, 16, 20]))
        cells = 24 * 16 * 20
        est.cells_per_lvl = cells
        est.grid_coords = nerfacc.estimators.occ_grid._meshgrid3d(est.resolution).reshape(cells, 3)
        est.grid_indices = torch.arange(cells)
        g = torch.Generator().manual_seed(seed)
        est.occs = torch.rand(levels * cells, generator=g) * 0.03
        est.occs[torch.rand(levels * cells, generator=g) < 0.2] = -1.0
        est.binaries = (est.occs > 0.01).view(levels, 24, 16, 20)
        out.append(renderer)
    return out


def _blob_occupancy(x: torch.Tensor) -> torch.Tensor:
    return (torch.exp(-4.0 * (x * x).sum(-1, keepdim=True)) * 0.05).float()


@pytest.mark.parametrize("levels", [1, 3])
@pytest.mark.parametrize("step", [16, 512])
def test_grid_update_matches_nerfacc(monkeypatch, levels, step):
    """Our update evaluates the same cells at the same random points as nerfacc's ``_update`` and
    leaves the same grid, in warm-up (every visible cell once) and after it (a random quarter plus
    occupied cells), calling the field on at most GRID_CHUNK points at a time. After warm-up a cell
    can be drawn twice: ours keeps the larger value; which of its values nerfacc keeps is undefined."""
    from nfplug.rendering import scene_renderer

    ours, reference, draws = _grids(levels, seed=levels + step)
    before = ours.estimator.occs.clone()
    monkeypatch.setattr(scene_renderer, "GRID_CHUNK", 1000)
    sizes = []

    def occ(x):
        sizes.append(len(x))
        return _blob_occupancy(x)

    torch.manual_seed(7)
    ours.update_occupancy(step, occ)
    torch.manual_seed(7)
    reference.estimator._update(step=step, occ_eval_fn=_blob_occupancy, occ_thre=0.01, ema_decay=0.95, warmup_steps=256)
    assert max(sizes) == 1000 and sum(sizes) > 1000
    a, b = ours.estimator.occs, reference.estimator.occs
    if step < 256:
        assert torch.equal(a, b)
        assert torch.equal(ours.estimator.binaries, reference.estimator.binaries)
        return
    torch.manual_seed(7)  # the same draws again, to know how often each cell was drawn
    cells = draws.estimator.cells_per_lvl
    drawn = draws.estimator._sample_uniform_and_occupied_cells(cells // 4)
    times = torch.cat([torch.bincount(d, minlength=cells) for d in drawn])
    assert (times >= 2).any() and (times == 1).any()
    assert torch.equal(a[times == 1], b[times == 1])
    assert (a[times >= 2] >= b[times >= 2]).all()
    assert torch.equal(a[times == 0], before[times == 0])  # not drawn: untouched (invisible cells too)


def test_grid_update_hand_case(monkeypatch):
    """EMA max(0.95 * old, new) per cell; a cell drawn twice keeps its larger new value; the
    threshold is min(mean of the visible cells, occ_thre)."""
    from nfplug.config import RenderConfig
    from nfplug.rendering.scene_renderer import SceneRenderer

    renderer = SceneRenderer([0.0, 0.0, 0.0, 1.0, 1.0, 1.0], 0.1, 5.0, RenderConfig(grid_resolution=2, occ_thre=0.6, grid_warmup_steps=0, grid_sample_fraction=0.25))
    est = renderer.estimator
    est.occs = torch.tensor([0.2, 0.8, -1.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    est.binaries = torch.tensor([False, True, False, False, False, False, False, False]).view(est.binaries.shape)
    # after warm-up: 8 // 4 = 2 uniform draws, both cell 0 here, plus the occupied cell 1
    draws = iter([torch.tensor([0, 0])])
    values = torch.tensor([0.5, 0.3, 0.1])  # cell 0 twice (0.5, then 0.3), cell 1 once (0.1)
    monkeypatch.setattr(torch, "randint", lambda *args, **kwargs: next(draws))
    renderer.update_occupancy(16, lambda x: values[: len(x), None])
    assert torch.allclose(est.occs, torch.tensor([0.5, 0.76, -1.0, 0.0, 0.0, 0.0, 0.0, 0.0]))
    # threshold min(1.26 / 7, 0.6) = 0.18: cells 0 and 1 are occupied
    assert est.binaries.flatten().tolist() == [True, True, False, False, False, False, False, False]


def test_grid_update_sample_fraction(monkeypatch):
    """After warm-up an update evaluates ``grid_sample_fraction`` of the cells drawn uniformly plus
    the occupied cells, at most a quarter of all cells (nerfacc's cap): 64 cells at 1/16 are 4
    uniform draws and all 6 occupied cells; with 20 occupied, 16 of them drawn at random."""
    from nfplug.config import RenderConfig
    from nfplug.rendering.scene_renderer import SceneRenderer

    def update(occupied):
        config = RenderConfig(grid_resolution=4, grid_warmup_steps=0, grid_sample_fraction=1 / 16)
        renderer = SceneRenderer([0.0] * 3 + [1.0] * 3, 0.1, 5.0, config)
        est = renderer.estimator
        est.occs = torch.zeros(64)
        est.occs[occupied] = 0.5
        est.binaries = (est.occs > 0.01).view(est.binaries.shape)
        calls, seen = [], []

        def randint(high, size, **kwargs):
            calls.append((high, size))
            return torch.tensor([5, 6, 7, 8]) if high == 64 else torch.arange(size[0])  # uniform, then the first occupied

        monkeypatch.setattr(torch, "randint", randint)
        renderer.update_occupancy(16, lambda x: (seen.append(x.clone()), torch.full((len(x), 1), 0.9))[1])
        monkeypatch.undo()
        cells = (torch.cat(seen) * 4).floor().long()
        drawn = sorted((cells[:, 0] * 16 + cells[:, 1] * 4 + cells[:, 2]).tolist())
        return calls, drawn, est.occs

    calls, drawn, occs = update(torch.tensor([3, 10, 20, 30, 40, 50]))
    assert calls == [(64, (4,))]  # 6 occupied cells are under the cap of 16: all evaluated
    assert drawn == [3, 5, 6, 7, 8, 10, 20, 30, 40, 50]
    assert torch.nonzero(occs == 0.9)[:, 0].tolist() == drawn
    many = torch.arange(40, 60)
    calls, drawn, occs = update(many)
    assert calls == [(64, (4,)), (20, (16,))]
    assert drawn == [5, 6, 7, 8] + list(range(40, 56))  # the first 16 of the 20 occupied
    assert torch.equal(occs[56:60], torch.full((4,), 0.5))  # occupied but not drawn: untouched
