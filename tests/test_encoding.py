"""Hash grid (reference and C++ kernel) and fixed encodings: hand cases and parity."""

from __future__ import annotations

import math

import pytest
import torch

from nfplug.encoding.frequency import positional_encoding, spherical_harmonics
from nfplug.encoding.hashgrid import (
    HashGrid,
    grid_layout,
    hash_corner,
    hash_encode,
    hash_encode_reference,
    load_kernel,
)

needs_kernel = pytest.mark.skipif(load_kernel() is None, reason="C++ hash-grid kernel could not be built")
IMPLS = [pytest.param(hash_encode, marks=needs_kernel, id="kernel"), pytest.param(hash_encode_reference, id="reference")]


def test_hash_of_known_corner() -> None:
    # (1 * 1) xor (2 * 2654435761 mod 2^32 = 1013904226) xor (3 * 805459861 = 2416379583)
    # = 2892625372; mod 2^19 = 128476.
    corner = torch.tensor([[1, 2, 3]])
    assert hash_corner(corner, 2**32).item() == 2892625372
    assert hash_corner(corner, 2**19).item() == 128476


def test_layout_geometric_levels_and_dense_switch() -> None:
    layout = grid_layout(3, 16, 2, 19, 16, 2048)
    assert layout.resolutions[0] == 16 and layout.resolutions[-1] == 2048
    growth = math.exp(math.log(2048 / 16) / 15)
    assert layout.resolutions[5] == math.floor(16 * growth**5)
    # Dense while (N_l + 1)^3 <= 2^19, i.e. N_l <= 79.
    assert layout.dense == tuple(r + 1 <= 80 for r in layout.resolutions)
    assert layout.sizes[0] == 17**3 and layout.sizes[-1] == 2**19
    assert layout.offsets[1] == 17**3
    assert layout.n_params == sum(layout.sizes)


@pytest.mark.parametrize("encode", IMPLS)
def test_bilinear_weights_on_dense_grid(encode) -> None:
    # One level, 2 cells per side, 3x3 vertices, vertex (i, j) stores row i + 3 j.
    layout = grid_layout(2, 1, 1, 10, 2, 2)
    assert layout.dense == (True,) and layout.resolutions == (2,)
    table = torch.arange(9, dtype=torch.float32)[:, None]
    x = torch.tensor([[0.25, 0.75], [0.1, 0.6], [1.0, 1.0], [0.0, 0.0]])
    out = encode(x, table, layout)[:, 0]
    # (0.25, 0.75) -> pos (0.5, 1.5): mean of rows 3, 4, 6, 7.
    # (0.1, 0.6) -> pos (0.2, 1.2): 0.64 * 3 + 0.16 * 4 + 0.16 * 6 + 0.04 * 7 = 3.8.
    # (1, 1) is the last vertex (row 8); (0, 0) the first.
    torch.testing.assert_close(out, torch.tensor([5.0, 3.8, 8.0, 0.0]), atol=1e-5, rtol=0)


@pytest.mark.parametrize("encode", IMPLS)
def test_hashed_level_reads_the_hashed_row(encode) -> None:
    # 3D, resolution 40 -> 41^3 vertices > 2^10, so the level is hashed.
    layout = grid_layout(3, 1, 1, 10, 40, 40)
    assert layout.dense == (False,)
    table = torch.arange(2**10, dtype=torch.float32)[:, None]
    x = torch.tensor([[1.0, 2.0, 3.0]]) / 40  # exactly on vertex (1, 2, 3)
    expected = float(2892625372 % 2**10)
    torch.testing.assert_close(encode(x, table, layout)[:, 0], torch.tensor([expected]))


@needs_kernel
@pytest.mark.parametrize("wanted", ["both", "table", "x"])  # the kernel's fused backward, and each alone
@pytest.mark.parametrize("dim,n_features", [(2, 2), (3, 2), (3, 1), (2, 4), (3, 8)])
def test_kernel_matches_reference_forward_and_gradients(dim: int, n_features: int, wanted: str) -> None:
    torch.manual_seed(0)
    layout = grid_layout(dim, 6, n_features, 11, 4, 200)  # dense and hashed levels
    assert any(layout.dense) and not all(layout.dense)
    table = torch.randn(layout.n_params, n_features)
    x = torch.rand(4000, dim)
    x[:4] = torch.tensor([0.0, 1.0])[torch.randint(0, 2, (4, dim))]  # box corners
    outs, grads = [], []
    upstream = torch.randn(4000, layout.out_dim)
    for encode in (hash_encode, hash_encode_reference):
        xi = x.clone().requires_grad_(wanted in ("both", "x"))
        ti = table.clone().requires_grad_(wanted in ("both", "table"))
        out = encode(xi, ti, layout)
        outs.append(out)
        wrt = {name: t for name, t in (("x", xi), ("table", ti)) if t.requires_grad}
        grads.append(dict(zip(wrt, torch.autograd.grad(out, list(wrt.values()), upstream))))
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-5)
    if "table" in grads[0]:
        torch.testing.assert_close(grads[0]["table"], grads[1]["table"], atol=1e-4, rtol=1e-4)
    if "x" not in grads[0]:
        return
    # Position gradients scale with N_l * |features|; compare relative to their size.
    gx_fast, gx_ref = grads[0]["x"], grads[1]["x"]
    assert gx_ref.abs().max() > 1.0
    torch.testing.assert_close(gx_fast, gx_ref, atol=1e-5 * gx_ref.abs().max().item(), rtol=1e-4)


@needs_kernel
def test_kernel_backward_is_deterministic_for_a_thread_count() -> None:
    """The one-pass backward splits the levels over threads and adds their input gradients in thread
    order: the same thread count gives the same bits, another count the same values to rounding."""
    torch.manual_seed(0)
    layout = grid_layout(3, 5, 2, 10, 4, 128)
    table = torch.randn(layout.n_params, 2)
    x = torch.rand(3000, 3)
    upstream = torch.randn(3000, layout.out_dim)
    threads = torch.get_num_threads()

    def grads(n_threads: int):
        torch.set_num_threads(n_threads)
        xi, ti = x.clone().requires_grad_(True), table.clone().requires_grad_(True)
        return torch.autograd.grad(hash_encode(xi, ti, layout), [xi, ti], upstream)

    try:
        for n_threads in (1, 2, 3):
            first, second = grads(n_threads), grads(n_threads)
            assert all(torch.equal(a, b) for a, b in zip(first, second)), n_threads
            one = grads(1)
            torch.testing.assert_close(first[0], one[0], atol=1e-5 * one[0].abs().max().item(), rtol=1e-5)
            torch.testing.assert_close(first[1], one[1])
    finally:
        torch.set_num_threads(threads)


@needs_kernel
def test_kernel_position_gradient_matches_finite_differences() -> None:
    torch.manual_seed(0)
    layout = grid_layout(3, 4, 2, 12, 4, 64)
    table = torch.randn(layout.n_params, 2, dtype=torch.float32)
    x = torch.rand(16, 3).requires_grad_(True)
    w = torch.randn(16, layout.out_dim)
    (g,) = torch.autograd.grad((hash_encode(x, table, layout) * w).sum(), x)
    eps = 1e-4
    for d in range(3):
        step = torch.zeros(3)
        step[d] = eps
        with torch.no_grad():
            hi = (hash_encode_reference((x + step).double(), table.double(), layout) * w.double()).sum(-1)
            lo = (hash_encode_reference((x - step).double(), table.double(), layout) * w.double()).sum(-1)
        # Linear inside a cell, so central differences are exact unless a cell edge is crossed.
        fd = ((hi - lo) / (2 * eps)).float()
        close = (fd - g[:, d]).abs() <= 1e-2 * (1 + fd.abs())
        assert close.float().mean() > 0.9


def test_hash_grid_module_uses_both_paths_consistently() -> None:
    torch.manual_seed(0)
    grid = HashGrid(2, n_levels=4, n_features=2, log2_hashmap_size=10, base_resolution=4, max_resolution=64)
    x = torch.rand(100, 2)
    fast = grid(x)
    grid.use_kernel = False
    torch.testing.assert_close(fast, grid(x), atol=1e-6, rtol=1e-5)
    assert fast.shape == (100, 8)
    assert grid.table.abs().max() <= 1e-4


def test_positional_encoding_hand_case() -> None:
    out = positional_encoding(torch.tensor([[0.5]]), 2)
    # [x, sin(pi/2), sin(pi), cos(pi/2), cos(pi)]
    torch.testing.assert_close(out, torch.tensor([[0.5, 1.0, 0.0, 0.0, -1.0]]), atol=1e-6, rtol=0)
    assert positional_encoding(torch.zeros(7, 3), 10).shape == (7, 63)


def test_spherical_harmonics_are_orthonormal() -> None:
    torch.manual_seed(0)
    d = torch.nn.functional.normalize(torch.randn(400_000, 3, dtype=torch.float64), dim=-1)
    y = spherical_harmonics(d, 4)
    assert y.shape == (400_000, 16)
    gram = 4 * math.pi * (y.T @ y) / d.shape[0]  # Monte Carlo of the integral over the sphere
    torch.testing.assert_close(gram, torch.eye(16, dtype=torch.float64), atol=0.03, rtol=0)
    torch.testing.assert_close(y[:, 0], torch.full_like(y[:, 0], 0.5 / math.sqrt(math.pi)))


def test_reference_in_chunks_is_the_same(monkeypatch):
    """The reference encodes REFERENCE_CHUNK points at a time (bounded memory): same values and gradients."""
    from nfplug.encoding import hashgrid

    layout = grid_layout(3, n_levels=4, n_features=2, log2_hashmap_size=10, base_resolution=4, max_resolution=64)
    g = torch.Generator().manual_seed(3)
    x = torch.rand(1000, 3, generator=g, requires_grad=True)
    table = torch.randn(layout.n_params, 2, generator=g, requires_grad=True)
    results = []
    for chunk in (1 << 16, 300):
        monkeypatch.setattr(hashgrid, "REFERENCE_CHUNK", chunk)
        out = hash_encode_reference(x, table, layout)
        gx, gt = torch.autograd.grad((out * out).sum(), [x, table])
        results.append((out, gx, gt))
    (out, gx, gt), (out_c, gx_c, gt_c) = results
    assert torch.equal(out, out_c) and torch.equal(gx, gx_c)
    assert torch.allclose(gt, gt_c, rtol=1e-6, atol=1e-6)  # the table's sums, added chunk by chunk
