"""The GPU paths: nerfacc's CUDA kernels and nfplug's PyTorch marcher on CUDA tensors.

Every test that needs a GPU is skipped without one; the dispatch itself is checked here too.
"""

from __future__ import annotations

import json

import nerfacc
import pytest
import torch

from conftest import TINY_TRAIN
from nfplug.cli import main
from nfplug.rendering import backend, marcher
from nfplug.rendering.marcher import march_rays
from nfplug.rendering.volrend import render_rays

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def test_dispatch_names_the_path_that_runs(monkeypatch) -> None:
    cpu = torch.device("cpu")
    expected = "C++" if marcher.native_marcher_available(torch.zeros(1, 3)) else "PyTorch"
    assert backend.describe(cpu) == f"rendering: nfplug's {expected} marcher and PyTorch renderer on the CPU"
    assert not backend.use_nerfacc_kernels(torch.zeros(1))
    backend.nerfacc_cuda_kernels.cache_clear()
    monkeypatch.setenv("NFPLUG_NERFACC_CUDA", "0")
    try:
        assert backend.nerfacc_cuda_kernels() == "NFPLUG_NERFACC_CUDA=0"
        assert backend.describe(torch.device("cuda")).endswith("(NFPLUG_NERFACC_CUDA=0)")
    finally:
        backend.nerfacc_cuda_kernels.cache_clear()
    if not torch.cuda.is_available():
        monkeypatch.delenv("NFPLUG_NERFACC_CUDA")
        assert backend.nerfacc_cuda_kernels() == "no CUDA device"
        backend.nerfacc_cuda_kernels.cache_clear()


def _scene(device: torch.device, n_rays: int = 256):
    g = torch.Generator().manual_seed(0)
    estimator = nerfacc.OccGridEstimator(roi_aabb=[-1.0] * 3 + [1.0] * 3, resolution=32)
    estimator.binaries.copy_(torch.rand(estimator.binaries.shape, generator=g) > 0.6)
    estimator.occs.copy_(estimator.binaries.float().flatten())
    origins = torch.randn(n_rays, 3, generator=g)
    origins = 3.0 * origins / origins.norm(dim=-1, keepdim=True)
    dirs = -origins + 0.3 * torch.randn(n_rays, 3, generator=g)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    return estimator.to(device), origins.to(device), dirs.to(device)


def _march(device: torch.device):
    estimator, origins, dirs = _scene(device)
    return march_rays(estimator, origins, dirs, near_plane=0.5, far_plane=6.0, render_step_size=0.02)


def _sorted_samples(ray_indices, t_starts, t_ends):
    key = ray_indices.double().cpu() * 1e3 + t_starts.double().cpu()
    order = torch.argsort(key)
    return ray_indices.cpu()[order], t_starts.cpu()[order], t_ends.cpu()[order]


@needs_cuda
@pytest.mark.parametrize("path", ["nerfacc-kernels", "pytorch-on-cuda"])
def test_cuda_marcher_agrees_with_the_cpu_marcher(monkeypatch, path: str) -> None:
    if path == "nerfacc-kernels" and backend.nerfacc_cuda_kernels() is not None:
        pytest.skip(f"nerfacc's CUDA kernels are not usable: {backend.nerfacc_cuda_kernels()}")
    if path == "pytorch-on-cuda":
        monkeypatch.setattr(marcher, "use_nerfacc_kernels", lambda tensor: False)
    cpu = _sorted_samples(*_march(torch.device("cpu")))
    gpu = _sorted_samples(*_march(torch.device("cuda")))
    assert gpu[0].shape[0] > 0
    assert torch.equal(cpu[0], gpu[0])
    assert torch.allclose(cpu[1], gpu[1], atol=1e-5) and torch.allclose(cpu[2], gpu[2], atol=1e-5)


@needs_cuda
def test_cuda_renderer_agrees_with_the_cpu_renderer_forward_and_gradients() -> None:
    results = []
    for device in (torch.device("cpu"), torch.device("cuda")):
        ray_indices, t_starts, t_ends = (t.to(device) for t in _sorted_samples(*_march(torch.device("cpu"))))
        g = torch.Generator().manual_seed(1)
        rgb = torch.rand(t_starts.shape[0], 3, generator=g).to(device).requires_grad_(True)
        sigma = (5 * torch.rand(t_starts.shape[0], generator=g)).to(device).requires_grad_(True)
        colors, opacities, depths = render_rays(t_starts, t_ends, ray_indices, 256, lambda *_: (rgb, sigma))
        (colors.sum() + depths.sum()).backward()
        results.append([x.detach().cpu() for x in (colors, opacities, depths, rgb.grad, sigma.grad)])
    for a, b in zip(*results):
        assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()


@needs_cuda
@pytest.mark.parametrize("sampler", ["uniform", "softmine"])
def test_short_training_run_on_cuda(tmp_path, capsys, sampler: str) -> None:
    run = tmp_path / "run"
    assert main(["train", "--device", "cuda", "--sampler", sampler, "--max-steps", "30", "--output", str(run), *TINY_TRAIN]) == 0
    assert "rendering:" in capsys.readouterr().out
    assert json.loads((run / "metrics.json").read_text())["step"] == 30
    assert main(["train", "--resume", str(run), "--max-steps", "32"]) == 0  # the CUDA RNG state round-trips
