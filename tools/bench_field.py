"""Throughput of the built-in fields on the CPU: samples per second, forward and forward+backward.

Usage (from the repo root)::

    python tools/bench_field.py --out bench_out

Rows: ``ngp`` on the pure-PyTorch reference encoding (the baseline of the ``vs ngp ref``
column), ``ngp previous`` (the C++ hash grid with PyTorch MLPs and PyTorch's default Adam: the
field as the previous build ran it, the baseline of the ``vs previous`` column), ``ngp`` (the
C++ hash grid, the fused C++ MLPs and fused Adam: this build's default), the same with
instant-ngp's 2^19 table, with gradients to the positions as well (what position-aware
samplers need), and ``mlp`` (default config). Scene
task, random positions in the aabb and random unit directions, a random upstream
gradient on rgb and sigma. The median of ``--runs`` timed runs after one warm-up is
reported; the ``+adam`` column adds ``optimizer.step()`` and ``zero_grad()``, which is
what a training step pays. The machine's sgemm and random-gather rates are measured first
(``tools/machine_peak.py``) and the ``+adam`` rate of each ngp row is given as a fraction of
each. Writes a table to stdout and ``field_throughput.png``.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Tuple

import torch
import tyro

import machine_peak
from nfplug.api import Field, FieldContext
from nfplug.runtime import retain_freed_memory
from nfplug_builtins.fields.mlp import MLPField
from nfplug_builtins.fields.ngp import NGPField

AABB = (-1.5, -1.5, -1.5, 1.5, 1.5, 1.5)


@dataclass(frozen=True)
class BenchConfig:
    batch_sizes: Tuple[int, ...] = (2**16, 2**18)
    """Samples per forward pass."""
    runs: int = 5
    """Timed runs per measurement (the median is reported)."""
    threads: int = 2
    """torch.set_num_threads (the kernel uses the same count)."""
    fields: Tuple[str, ...] = ("ngp reference", "ngp previous", "ngp", "ngp T=2^19", "ngp +dx", "mlp")
    """Rows to run; "ngp reference" is slow (~10 s a run at 2^18)."""
    out: Path = Path("bench_out")
    """Folder for the PNG plot."""
    mlp_ceiling: bool = True
    """Also time the fused MLP kernel alone (forward and backward, no hash grid, no Adam) with
    the features of lego at 200x200 (12 levels of 2): a ceiling for whole training steps."""


def _time(fn: Callable[[], None], runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _fields() -> Dict[str, Callable[[], Tuple[Field, bool]]]:
    """Name -> builder returning (field, whether positions need gradients)."""
    context = FieldContext("scene", AABB, 3)

    def ngp_reference() -> Tuple[Field, bool]:
        field = NGPField(NGPField.Config(), context)
        field.grid.use_kernel = False
        field.fused = False
        return field, False

    def ngp_previous() -> Tuple[Field, bool]:
        field = NGPField(NGPField.Config(), context)
        field.fused = False
        return field, False

    return {
        "ngp reference": ngp_reference,
        "ngp previous": ngp_previous,
        "ngp": lambda: (NGPField(NGPField.Config(), context), False),
        "ngp T=2^19": lambda: (NGPField(NGPField.Config(log2_hashmap_size=19), context), False),
        "ngp +dx": lambda: (NGPField(NGPField.Config(), context), True),
        "mlp": lambda: (MLPField(MLPField.Config(), context), False),
    }


def measure(field: Field, n: int, position_grad: bool, runs: int) -> Dict[str, float]:
    """Samples/s of forward, forward+backward and forward+backward+Adam at batch ``n``."""
    torch.manual_seed(0)
    lo, hi = torch.tensor(AABB[:3]), torch.tensor(AABB[3:])
    x = (lo + (hi - lo) * torch.rand(n, 3)).requires_grad_(position_grad)
    d = torch.nn.functional.normalize(torch.randn(n, 3), dim=-1)
    g_rgb, g_sigma = torch.randn(n, 3), torch.randn(n)
    # As the engine: fused Adam, except for the previous build's rows (PyTorch's default Adam).
    opt = torch.optim.Adam(field.parameters(), lr=1e-3, fused=getattr(field, "fused", True) or None)

    def forward() -> None:
        with torch.no_grad():
            field(x, d)

    def forward_backward() -> None:
        field.zero_grad(set_to_none=True)
        rgb, sigma = field(x, d)
        torch.autograd.backward([rgb, sigma], [g_rgb, g_sigma])

    def train_step() -> None:
        forward_backward()
        opt.step()

    return {
        "fwd": n / _time(forward, runs),
        "fwd+bwd": n / _time(forward_backward, runs),
        "+adam": n / _time(train_step, runs),
    }


def mlp_ceiling(n: int, runs: int) -> Tuple[float, float]:
    """The fused MLP kernel alone on ``n`` samples, forward and backward: ``(samples/s, useful
    GFLOP/s)``. The features are those of lego at 200x200 (12 levels of 2), the widths the
    ``ngp`` default; useful FLOPs count 3 x 2 multiply-adds a weight (forward, and backward for
    inputs and weights), without the kernel's zero padding."""
    from nfplug.encoding import fused_ngp

    gen = torch.Generator().manual_seed(0)
    fin, hidden, geo = 12 * 2, 64, 15
    shapes = [(hidden, fin), (1 + geo, hidden), (hidden, geo + 16), (hidden, hidden), (3, hidden)]
    weights = [(0.2 * torch.randn(s, generator=gen)).requires_grad_() for s in shapes]
    feat = torch.randn(n, fin, generator=gen).requires_grad_()
    sh = torch.randn(n, 16, generator=gen)
    g_rgb, g_sigma = torch.randn(n, 3, generator=gen), torch.randn(n, generator=gen)

    def forward_backward() -> None:
        rgb, sigma = fused_ngp.ngp_mlps(feat, sh, weights, "trunc_exp")
        torch.autograd.backward([rgb, sigma], [g_rgb, g_sigma])

    seconds = _time(forward_backward, runs)
    flops = 6 * sum(a * b for a, b in shapes) * n
    return n / seconds, flops / seconds / 1e9


def plot(results: Dict[Tuple[str, int], Dict[str, float]], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(name for name, _ in results))
    sizes = sorted({n for _, n in results})
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(sizes)
    for j, n in enumerate(sizes):
        values = [results.get((name, n), {}).get("fwd+bwd", 0.0) / 1e6 for name in names]
        ax.bar([i + j * width for i in range(len(names))], values, width, label=f"N = 2^{n.bit_length() - 1}")
    ax.axhline(0.5, color="k", linestyle="--", linewidth=1, label="target 0.5 M/s")
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(names))], names)
    ax.set_ylabel("forward+backward, M samples/s")
    ax.set_title(f"field throughput, {torch.get_num_threads()} CPU threads")
    ax.legend()
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "field_throughput.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(config: BenchConfig) -> None:
    torch.set_num_threads(config.threads)
    retain_freed_memory()  # as the engine does at start-up
    peak = machine_peak.measure()
    print(machine_peak.describe(peak))
    results: Dict[Tuple[str, int], Dict[str, float]] = {}
    header = (
        f"{'field':<15}{'N':>9}{'fwd M/s':>10}{'fwd+bwd M/s':>13}{'+adam M/s':>11}{'vs ngp ref':>12}{'vs previous':>13}"
        f"{'of sgemm':>10}{'of gather':>11}"
    )
    print(header, flush=True)
    for name, build in _fields().items():
        if name not in config.fields:
            continue
        for n in config.batch_sizes:
            field, position_grad = build()
            results[(name, n)] = r = measure(field, n, position_grad, config.runs)
            del field
            ref, previous = results.get(("ngp reference", n)), results.get(("ngp previous", n))
            ratio = f"{r['fwd+bwd'] / ref['fwd+bwd']:.1f}x" if ref else "-"
            vs_previous = f"{r['+adam'] / previous['+adam']:.2f}x" if previous else "-"
            frac = machine_peak.fractions(r["+adam"], peak)
            fracs = f"{frac['of_sgemm']:>10.1%}{frac['of_gather']:>11.1%}" if name.startswith("ngp") else f"{'-':>10}{'-':>11}"
            row = f"{name:<15}{n:>9}{r['fwd'] / 1e6:>10.3f}{r['fwd+bwd'] / 1e6:>13.3f}{r['+adam'] / 1e6:>11.3f}{ratio:>12}{vs_previous:>13}{fracs}"
            print(row, flush=True)
    for n in config.batch_sizes:
        fused, previous = results.get(("ngp", n)), results.get(("ngp previous", n))
        if fused and previous and fused["fwd+bwd"] < 0.8 * previous["fwd+bwd"]:
            # On AVX2 machines the fused MLP kernel once ran 10x slower than PyTorch's MLPs
            # (its vectors wider than the registers): a sign the compiler did not vectorise it.
            print(
                f"warning: at N={n} the fused MLP kernel (ngp) is slower than PyTorch's MLPs (ngp previous): "
                "check how nfplug/encoding/fused_ngp.py compiles for this CPU"
            )
    if config.mlp_ceiling:
        for n in config.batch_sizes:
            rate, gflops = mlp_ceiling(n, config.runs)
            print(
                f"ceiling: the fused MLPs alone, forward+backward, N={n}: {rate / 1e6:.2f} M samples/s, "
                f"{gflops:.0f} GFLOP/s useful ({gflops / peak['sgemm_gflops']:.0%} of sgemm); "
                "no whole training step can pass this rate"
            )
    print(f"\nplot: {plot(results, config.out)}")


if __name__ == "__main__":
    main(tyro.cli(BenchConfig))
