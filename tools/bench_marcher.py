"""Time the CPU ray marcher and packed renderer on a Blender-like setup.

4096 rays from cameras on a sphere of radius 4 looking at the origin, a 128^3 grid
over ``[-1.5, 1.5]^3`` at ~10% occupancy (a ball, or iid random cells with
``--iid``), step ``sqrt(3) * 3 / 512``, near 2, far 6. The visibility test and the renderer are
timed through their C++ kernel and through the PyTorch reference, alternately, with the ratio::

    PYTHONPATH=. python tools/bench_marcher.py [--iid] [--rays 4096] [--repeats 5]
"""

from __future__ import annotations

import argparse
import math
import time

import nerfacc
import torch

from nfplug.rendering import volrend
from nfplug.rendering.marcher import march_rays
from nfplug.rendering.volrend import render_rays

KERNELS = ("C++ kernel", "PyTorch reference")


def _use(kernel: str, native) -> None:
    """Route the visibility test and volume rendering through ``kernel`` (one of :data:`KERNELS`)."""
    volrend._native = native if kernel == KERNELS[0] else (lambda: None)


def _rays(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Origins on a radius-4 sphere, directions within ~20 degrees of the centre."""
    origins = torch.nn.functional.normalize(torch.randn(n, 3, generator=generator), dim=-1) * 4.0
    targets = (torch.rand(n, 3, generator=generator) - 0.5) * 2.8
    return origins, torch.nn.functional.normalize(targets - origins, dim=-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rays", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--iid", action="store_true", help="iid random occupied cells instead of a ball")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    generator = torch.Generator().manual_seed(0)
    estimator = nerfacc.OccGridEstimator(roi_aabb=[-1.5] * 3 + [1.5] * 3, resolution=128)
    if args.iid:
        estimator.binaries.copy_(torch.rand(estimator.binaries.shape, generator=generator) < 0.1)
    else:
        centres = (torch.arange(128) + 0.5) / 128 * 3.0 - 1.5
        x, y, z = torch.meshgrid(centres, centres, centres, indexing="ij")
        radius = (0.1 * 27.0 * 3.0 / (4.0 * math.pi)) ** (1.0 / 3.0)
        estimator.binaries[0] = x**2 + y**2 + z**2 < radius**2
    print(f"occupancy {estimator.binaries.float().mean().item():.3f}, threads {torch.get_num_threads()}")

    rays_o, rays_d = _rays(args.rays, generator)
    step = math.sqrt(3.0) * 3.0 / 512

    def sigma_fn(t_starts, t_ends, ray_indices):
        return torch.full_like(t_starts, 5.0)

    def rgb_sigma_fn(t_starts, t_ends, ray_indices):
        sig = sigma_param.expand_as(t_starts)
        return torch.sigmoid(t_starts[:, None] * rgb_param), sig

    rgb_param = torch.ones(3, requires_grad=True)
    sigma_param = torch.tensor(5.0, requires_grad=True)
    native = volrend._native
    if native() is None:
        print("the C++ volume-rendering kernel cannot be built here: timing the reference only")
    kernels = KERNELS if native() is not None else KERNELS[1:]
    rows = {}
    for label, fn in (("march (no sigma_fn)", None), ("march + sigma_fn filter", sigma_fn)):
        for kernel in kernels if fn is not None else KERNELS[:1]:
            _use(kernel, native)
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                ray_indices, t_starts, t_ends = march_rays(
                    estimator, rays_o, rays_d, near_plane=2.0, far_plane=6.0, render_step_size=step,
                    sigma_fn=fn, stratified=True, generator=generator,
                )
                times.append(time.perf_counter() - start)
            rows[(label, kernel)] = sorted(times)[len(times) // 2]
            name = label if fn is None else f"{label} ({kernel})"
            print(f"{name}: median {1e3 * rows[(label, kernel)]:.1f} ms, {t_starts.shape[0]} samples")

    label = "render_rays fwd+bwd"
    for _ in range(2):  # alternately, twice: the machine's noise falls on both
        for kernel in kernels:
            _use(kernel, native)
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                colors, opacities, depths = render_rays(t_starts, t_ends, ray_indices, args.rays, rgb_sigma_fn)
                (colors.sum() + depths.sum()).backward()
                times.append(time.perf_counter() - start)
            rows[(label, kernel)] = min(rows.get((label, kernel), 1e9), sorted(times)[len(times) // 2])
    for kernel in kernels:
        print(f"{label} ({kernel}): median {1e3 * rows[(label, kernel)]:.1f} ms on {t_starts.shape[0]} samples")
    volrend._native = native
    if len(kernels) == 2:
        for label in ("march + sigma_fn filter", "render_rays fwd+bwd"):
            print(f"{label}: C++ kernel {rows[(label, KERNELS[1])] / rows[(label, KERNELS[0])]:.2f}x faster than the reference")

if __name__ == "__main__":
    main()
