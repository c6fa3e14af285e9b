"""ASMR against SIREN of the same depth and width on Kodak images: PSNR and MACs per pixel, and
render time for a full image.

Li, Luo, Xu, Wong, "Activation-Sharing Multi-Resolution Coordinate Networks for Efficient
Inference" (ICLR 2024) claim that ASMR matches a SIREN's quality at a fraction of its inference
cost (about 72x fewer MACs per pixel on 512x768 Kodak with 4 layers of width 256), because
all but the last sine layer run once per cell of a coarse grid and are shared. This script fits
both fields to each photo from the same seed, full-batch Adam at each field's ``default_lr``
(or ``--lr``), and reports:

- train PSNR against step and against wall-clock training time (one figure, a row per photo);
- final PSNR of the full image (clamped to [0, 1]) as each field renders it;
- MACs per pixel at inference (``inference_macs_per_sample()``; for a field that does not count
  them, the sum of ``in * out`` over its ``layers()``) and the ratio SIREN / field;
- render time of the full image at the trained resolution under ``torch.no_grad``, median of
  ``--render-repeats`` after one warm-up: ASMR through ``render_grid()`` (shared activations),
  SIREN through a chunked per-coordinate forward.

Same depth: ASMR with ``levels = L`` has ``L`` linear layers (``L - 1`` modulated sine layers and
the output layer), SIREN with ``hidden_layers = L - 2`` has ``L`` as well; both have width
``--hidden-features`` and omega_0 = 30.

Usage (from the repo root)::

    python tools/bench_asmr.py --out bench_out/asmr
    python tools/bench_asmr.py --images kodim05 --downscale 8 --steps 20 --threads 1
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import torch
import tyro
from torch import Tensor

from nfplug import registry
from nfplug.api import Field, FieldContext
from nfplug.errors import NfplugError
from nfplug.metrics import psnr
from nfplug.runtime import retain_freed_memory
from nfplug.training.image_task import load_image

from bench_image_init import pixel_grid, train_full_batch  # tools/ is on sys.path when run as a script

KODAK = Path(__file__).resolve().parents[2] / "shared" / "data" / "kodak"
FIELDS = ("asmr", "siren")


@dataclass(frozen=True)
class BenchConfig:
    images: Tuple[str, ...] = ("kodim05", "kodim09")
    """Kodak photos (kodimNN, from --kodak)."""
    downscale: int = 2
    """Integer downscale of each photo (area filter): 2 gives 384x256 (or 256x384)."""
    steps: int = 500
    """Full-batch Adam steps of each fit."""
    levels: int = 4
    """ASMR resolution levels (its default); SIREN gets the same number of linear layers."""
    hidden_features: int = 256
    """Width of every hidden layer of both fields."""
    lr: Optional[float] = None
    """Adam learning rate of both fields (default: each field's default_lr)."""
    seed: int = 0
    render_repeats: int = 3
    """Timed full-image renders per field (after one warm-up); the median is reported."""
    chunk: int = 1 << 16
    """Coordinates per forward in SIREN's per-coordinate render."""
    threads: int = 2
    kodak: str = str(KODAK)
    """Folder of the Kodak PNGs."""
    out: str = "bench_out/asmr"
    """Output folder (results.json, psnr_curves.png)."""


def build(config: BenchConfig, name: str, context: FieldContext) -> Field:
    """The field ``name`` with ``config``'s depth and width, drawn from ``config.seed``."""
    field_cls = registry.get("fields", name)
    if name == "asmr":
        options = field_cls.Config(levels=config.levels, hidden_features=config.hidden_features)
    else:
        options = field_cls.Config(hidden_features=config.hidden_features, hidden_layers=config.levels - 2)
    torch.manual_seed(config.seed)
    return field_cls(options, context)


def macs_per_pixel(field: Field) -> float:
    """The field's own inference count, else ``sum(in * out)`` over its linear layers (a plain MLP)."""
    macs = field.inference_macs_per_sample()
    if macs is not None:
        return float(macs)
    return float(sum(layer.in_features * layer.out_features for layer in field.layers()))


def renderer(field: Field, coords: Tensor, height: int, width: int, chunk: int) -> Callable[[], Tensor]:
    """-> a no-argument function returning the full image ``[H, W, C]`` (unclamped): the field's
    ``render_grid()`` if it has one, else a chunked per-coordinate forward."""

    @torch.no_grad()
    def render() -> Tensor:
        grid = field.render_grid()
        if grid is not None:
            return grid
        return torch.cat([field(coords[i : i + chunk]) for i in range(0, coords.shape[0], chunk)]).reshape(height, width, -1)

    return render


def median_ms(render: Callable[[], Tensor], repeats: int) -> float:
    """Median wall-clock milliseconds of ``repeats`` calls, after one untimed warm-up call."""
    render()
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        render()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def fit(config: BenchConfig, name: str, image: Tensor) -> Dict:
    """Full-batch fit of field ``name`` to ``image [H, W, C]``, then its final PSNR, MACs and render time.

    ``psnr[i]`` is the train PSNR of the field after ``i`` updates (from the loss of step ``i``)
    and ``time[i]`` the training seconds spent until it was measured."""
    height, width, channels = image.shape
    coords, target = pixel_grid(height, width), image.reshape(-1, channels)
    field = build(config, name, FieldContext("image", (-1.0, -1.0, 1.0, 1.0), channels, (height, width)))
    lr = config.lr if config.lr is not None else type(field).default_lr
    curve, times = train_full_batch(field, coords, target, lr, config.steps)
    elapsed = times[-1]
    # The last step updated the weights after its loss: evaluate the field as it ends.
    render = renderer(field, coords, height, width, config.chunk)
    rendered = render()
    with torch.no_grad():
        per_coordinate = field(coords).reshape(height, width, -1)
        render_path = "render_grid" if field.render_grid() is not None else "per-coordinate"
    return {
        "lr": lr,
        "psnr": curve,
        "time": times,
        "final_psnr": psnr(rendered.clamp(0, 1), image),
        "macs_per_pixel": macs_per_pixel(field),
        "render_ms": median_ms(render, config.render_repeats),
        "render_path": render_path,
        # the shared path must be the per-coordinate field (0 for a field without render_grid)
        "render_max_abs_diff": (rendered - per_coordinate).abs().max().item(),
        "s_per_step": elapsed / (config.steps + 1),
        "parameters": sum(p.numel() for p in field.parameters()),
    }


def plot(results: Dict[str, Dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 2, figsize=(9, 3.2 * len(results)), squeeze=False)
    colours = {"asmr": "tab:red", "siren": "black"}
    for (key, runs), (ax_step, ax_time) in zip(results.items(), axes):
        for name, run in runs.items():
            style = {"color": colours.get(name), "lw": 1.5, "label": f"{name} (lr {run['lr']:g})"}
            ax_step.plot(range(len(run["psnr"])), run["psnr"], **style)
            ax_time.plot(run["time"], run["psnr"], **style)
        for ax, xlabel in ((ax_step, "step"), (ax_time, "training time (s)")):
            ax.set_xlabel(xlabel)
            ax.set_ylabel("train PSNR (dB)")
            ax.set_title(key, fontsize=9)
            ax.grid(alpha=0.3)
        ax_step.legend(fontsize=8, loc="lower right")
    fig.suptitle("ASMR vs SIREN (same depth and width), full-batch Adam", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    print(f"wrote {path}", flush=True)


def print_table(results: Dict[str, Dict]) -> None:
    """Markdown: final PSNR, MACs/pixel and render time, with ratios SIREN / field (higher: field cheaper)."""
    print("\n| image | field | PSNR (dB) | MACs/pixel | MAC ratio (siren / field) | render ms | render-time ratio (siren / field) | train s/step |")
    print("|---|---|---|---|---|---|---|---|")
    for key, runs in results.items():
        base = runs["siren"]
        for name, run in runs.items():
            print(
                f"| {key} | {name} | {run['final_psnr']:.2f} | {run['macs_per_pixel']:,.0f} | "
                f"{base['macs_per_pixel'] / run['macs_per_pixel']:.1f}x | {run['render_ms']:.1f} | "
                f"{base['render_ms'] / run['render_ms']:.1f}x | {run['s_per_step']:.3f} |"
            )


def main(config: BenchConfig) -> None:
    if config.levels < 2 or config.steps < 0 or config.downscale < 1:
        raise NfplugError(f"--levels must be >= 2, --steps >= 0 and --downscale >= 1, got {config.levels}, {config.steps}, {config.downscale}")
    torch.set_num_threads(config.threads)
    retain_freed_memory()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    results: Dict[str, Dict] = {}
    started = time.perf_counter()
    for name in config.images:
        path = Path(config.kodak) / f"{name}.png"
        if not path.is_file():
            raise NfplugError(f"--images: {path} does not exist (set --kodak to the folder of the Kodak PNGs)")
        image = load_image(path, config.downscale)
        height, width = image.shape[:2]
        key = f"{name}@{width}x{height}"
        results[key] = {}
        for field_name in FIELDS:
            run = fit(config, field_name, image)
            results[key][field_name] = run
            print(f"{key:>18} {field_name:>5}: {config.steps} steps {run['time'][-1]:.1f} s, PSNR {run['final_psnr']:.2f} dB, "
                  f"{run['macs_per_pixel']:,.0f} MACs/pixel, render {run['render_ms']:.1f} ms ({run['render_path']}, "
                  f"max |diff| to per-coordinate {run['render_max_abs_diff']:.1e})  [{time.perf_counter() - started:.0f} s total]", flush=True)  # fmt: skip
        (out / "results.json").write_text(json.dumps({"config": dataclasses.asdict(config), "results": results}))
    plot(results, out / "psnr_curves.png")
    print(f"wrote {out / 'results.json'}")
    print_table(results)


if __name__ == "__main__":
    main(tyro.cli(BenchConfig))
