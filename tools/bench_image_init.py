"""Check the weight-scaling paper on real photos: SIREN init against weight scaling (alpha sweep).

Yeom, Lee, Lee, "Fast Training of Sinusoidal Neural Fields via Scaling Initialization" (ICLR
2025) claim that multiplying SIREN's initial weights (all layers but the last) by alpha ~ 2.5
trains image fits about 10x faster. This script fits a SIREN (``hidden_layers`` x
``hidden_features``, sine activations, omega_0 = 30) to each photo with full-batch Adam at
lr 1e-4 (as in both papers), once per init, from the same seed, and reports:

- train PSNR against step and against wall-clock training time (one figure per photo);
- the steps (and seconds) each init needs to reach 30 dB and 40 dB, and the speed-up
  over SIREN's init;
- generalisation: the same fit on the even checkerboard half of the pixels, PSNR on the
  other half after ``heldout_steps`` steps (the paper notes that large alpha trades
  generalisation for speed).

Weight scaling with alpha = 1 is SIREN's init draw for draw (``tests/test_inits.py``), so
the ``siren`` row is also the alpha = 1 row. The loop runs in-process on nfplug's own
pieces (field and init plugins from the registry, the image task's coordinates and
checkerboard, the metrics).

Usage (from the repo root; ``pip install -e .[bench]`` for scikit-image's photos)::

    python tools/bench_image_init.py --out bench_out/image_init
    python tools/bench_image_init.py --images camera --sizes 512 --steps 300 --heldout-images

Images: ``camera`` / ``astronaut`` (scikit-image's bundled photos), ``kodimNN`` (Kodak, from
``--kodak``), with ``:gray`` for the luminance only; each is centre-cropped to a square and
resized (area filter) to every ``--sizes`` entry.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np
import torch
import tyro
from torch import Tensor

from nfplug import registry
from nfplug.api import FieldContext
from nfplug.metrics import psnr, psnr_from_mse
from nfplug.runtime import retain_freed_memory
from nfplug.training.image_task import checkerboard, load_image, pixel_to_coords

KODAK = Path(__file__).resolve().parents[2] / "shared" / "data" / "kodak"


@dataclass(frozen=True)
class BenchConfig:
    images: Tuple[str, ...] = ("camera", "astronaut", "kodim05:gray", "kodim05")
    """Photos: camera, astronaut, kodimNN; ':gray' keeps the luminance only."""
    sizes: Tuple[int, ...] = (256,)
    """Square side lengths to fit at."""
    alphas: Tuple[float, ...] = (1.5, 2.0, 2.5, 3.0)
    """Weight-scaling factors to compare with SIREN's init (alpha 1 is SIREN's init itself)."""
    steps: int = 1000
    """Maximum full-batch steps of each fit."""
    stop_db: float = 45.0
    """End a fit once its train PSNR reaches this (0: never), to spend the budget on slow fits."""
    thresholds: Tuple[float, ...] = (30.0, 40.0)
    """Train PSNRs whose first-reaching step is reported."""
    heldout_images: Tuple[str, ...] = ("camera", "astronaut")
    """Photos (at the first size) also fitted on the checkerboard half; () for none."""
    heldout_steps: int = 300
    """Steps of each checkerboard fit."""
    hidden_features: int = 256
    hidden_layers: int = 3
    lr: float = 1e-4
    seed: int = 0
    threads: int = 2
    kodak: str = str(KODAK)
    """Folder of the Kodak PNGs."""
    out: str = "bench_out/image_init"
    """Output folder (table, JSON, plots)."""
    from_results: Optional[str] = None
    """Redraw the plots and reprint the table of an earlier results.json instead of training."""


def load_photo(spec: str, size: int, kodak: Path) -> Tensor:
    """``[size, size, C]`` float32 in [0, 1] (C = 1 for ':gray' and camera, else 3)."""
    name, _, mode = spec.partition(":")
    if name in ("camera", "astronaut"):
        import skimage.data  # optional: pip install -e .[bench]

        image = getattr(skimage.data, name)().astype(np.float32) / 255.0
        image = image[..., None] if image.ndim == 2 else image
    else:
        image = load_image(kodak / f"{name}.png").numpy()
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    image = cv2.resize(image[top : top + side, left : left + side], (size, size), interpolation=cv2.INTER_AREA)
    image = image.reshape(size, size, -1)
    if mode == "gray" and image.shape[2] == 3:
        image = image @ np.array([[0.299], [0.587], [0.114]], dtype=np.float32)  # ITU-R BT.601 luma
    return torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))


def pixel_grid(height: int, width: int) -> Tensor:
    """``[H * W, 2]`` field coordinates of the pixel centres, row-major."""
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return pixel_to_coords(torch.stack([cols, rows], -1).reshape(-1, 2).float() + 0.5, width, height)


def fit(
    config: BenchConfig, image: Tensor, init_name: str, alpha: Optional[float], steps: int, stop_db: float,
    train_mask: Optional[Tensor] = None,
) -> Dict:
    """Full-batch fit of one init; -> ``{"psnr": [...], "time": [...], "heldout_psnr": ...}``.

    ``psnr[i]`` is the train PSNR of the field after ``i`` updates and ``time[i]`` the training
    seconds spent until it was measured (forward, backward and update of steps ``0..i``).
    """
    height, width, channels = image.shape
    coords, target = pixel_grid(height, width), image.reshape(-1, channels)
    mask = train_mask.reshape(-1) if train_mask is not None else torch.ones(height * width, dtype=torch.bool)
    train_coords, train_target = coords[mask], target[mask]
    field_cls, init_cls = registry.get("fields", "siren"), registry.get("inits", init_name)
    torch.manual_seed(config.seed)
    field = field_cls(field_cls.Config(config.hidden_features, config.hidden_layers), FieldContext("image", (-1.0, -1.0, 1.0, 1.0), channels))
    init_config = init_cls.Config(alpha=alpha) if alpha is not None else init_cls.Config()
    init_cls(init_config).apply(field, torch.Generator().manual_seed(config.seed))
    curve, times = train_full_batch(field, train_coords, train_target, config.lr, steps, stop_db)
    result = {"psnr": curve, "time": times}
    if train_mask is not None:
        with torch.no_grad():
            pred = field(coords)
        result["heldout_psnr"] = psnr(pred[~mask], target[~mask])
        result["train_half_psnr"] = psnr(pred[mask], target[mask])
    return result


def train_full_batch(field: torch.nn.Module, coords: Tensor, target: Tensor, lr: float, steps: int, stop_db: float = 0.0) -> Tuple[List[float], List[float]]:
    """Full-batch Adam on the MSE for ``steps + 1`` updates (or until the train PSNR reaches
    ``stop_db``); -> (PSNR before each update, training seconds until it was measured)."""
    optimizer = torch.optim.Adam(field.parameters(), lr=lr)
    curve, times, elapsed = [], [], 0.0
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        loss = ((field(coords) - target) ** 2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        elapsed += time.perf_counter() - t0
        curve.append(psnr_from_mse(loss.item()))
        times.append(elapsed)
        if stop_db and curve[-1] >= stop_db:
            break
    return curve, times


def first_reach(curve: List[float], times: List[float], db: float) -> Tuple[Optional[int], Optional[float]]:
    """(step, seconds) at which ``curve`` first reaches ``db``, or (None, None)."""
    for step, (value, seconds) in enumerate(zip(curve, times)):
        if value >= db:
            return step, seconds
    return None, None


def label(alpha: Optional[float]) -> str:
    return "siren" if alpha is None else f"ws a={alpha:g}"


def plot(image_name: str, runs: Dict[str, Dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_step, ax_time) = plt.subplots(1, 2, figsize=(9, 3.4))
    colours = plt.cm.viridis(np.linspace(0.15, 0.9, max(1, len(runs) - 1)))
    for i, (name, run) in enumerate(runs.items()):
        style = {"color": "black", "lw": 2.0} if name == "siren" else {"color": colours[i - 1], "lw": 1.3}
        ax_step.plot(range(len(run["psnr"])), run["psnr"], label=name, **style)
        ax_time.plot(run["time"], run["psnr"], label=name, **style)
    for ax, xlabel in ((ax_step, "step"), (ax_time, "training time (s)")):
        ax.set_xlabel(xlabel)
        ax.set_ylabel("train PSNR (dB)")
        ax.grid(alpha=0.3)
        ax.axhline(30, color="grey", lw=0.6, ls="--")
        ax.axhline(40, color="grey", lw=0.6, ls="--")
    ax_step.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"{image_name}: SIREN init vs weight scaling (full batch, Adam 1e-4)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    print(f"wrote {path}", flush=True)


def fmt_reach(step: Optional[int], base: Optional[int], base_steps: int) -> str:
    """``step (speed-up)``; a lower bound ``>x`` when siren did not get there in its ``base_steps``."""
    if step is None:
        return "-"
    if base is None:
        return f"{step} (>{base_steps / max(step, 1):.1f}x)"
    return f"{step} ({base / max(step, 1):.1f}x)"


def main(config: BenchConfig) -> None:
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    if config.from_results:
        saved = json.loads(Path(config.from_results).read_text())
        for key, result in saved["results"].items():
            plot(key, result["fit"], out / f"{key.replace(':', '_').replace('@', '_')}.png")
        print_table(BenchConfig(**{**saved["config"], "out": config.out}), saved["results"])
        return
    torch.set_num_threads(config.threads)
    retain_freed_memory()
    kodak = Path(config.kodak)
    inits: List[Tuple[str, Optional[float]]] = [("siren", None)] + [("weight-scaling", a) for a in config.alphas]
    results: Dict[str, Dict] = {}
    started = time.perf_counter()
    for size in config.sizes:
        for spec in config.images:
            image = load_photo(spec, size, kodak)
            key = f"{spec}@{size}"
            results[key] = {"fit": {}, "heldout": {}}
            for init_name, alpha in inits:
                run = fit(config, image, init_name, alpha, config.steps, config.stop_db)
                results[key]["fit"][label(alpha)] = run
                print(f"{key:>18} {label(alpha):>9}: {len(run['psnr']) - 1} steps {run['time'][-1]:.0f} s, "
                      f"PSNR {run['psnr'][-1]:.2f} dB  [{time.perf_counter() - started:.0f} s total]", flush=True)  # fmt: skip
            plot(key, results[key]["fit"], out / f"{key.replace(':', '_').replace('@', '_')}.png")
            if spec in config.heldout_images and size == config.sizes[0]:
                mask = checkerboard(size, size)
                for init_name, alpha in inits:
                    run = fit(config, image, init_name, alpha, config.heldout_steps, 0.0, train_mask=mask)
                    results[key]["heldout"][label(alpha)] = {k: run[k] for k in ("heldout_psnr", "train_half_psnr")}
                    print(f"{key:>18} {label(alpha):>9}: checkerboard, {config.heldout_steps} steps: train half "
                          f"{run['train_half_psnr']:.2f} dB, held-out {run['heldout_psnr']:.2f} dB", flush=True)  # fmt: skip
            (out / "results.json").write_text(json.dumps({"config": dataclasses.asdict(config), "results": results}))
    print_table(config, results)


def print_table(config: BenchConfig, results: Dict[str, Dict]) -> None:
    """Markdown: steps to each threshold (speed-up over siren), speed-up at siren's final PSNR, held-out PSNR."""
    heads = [f"steps to {db:g} dB (x)" for db in config.thresholds]
    print(f"\n| image | init | {' | '.join(heads)} | steps to siren's final PSNR (x) | s/step | PSNR @ last step | held-out PSNR @ {config.heldout_steps} |")
    print("|" + "---|" * (6 + len(heads)))
    for key, result in results.items():
        base = result["fit"]["siren"]
        base_steps, base_final = len(base["psnr"]) - 1, base["psnr"][-1]
        for name, run in result["fit"].items():
            cells = []
            for db in config.thresholds:
                step, _ = first_reach(run["psnr"], run["time"], db)
                base_step, _ = first_reach(base["psnr"], base["time"], db)
                if name == "siren":
                    cells.append(str(base_step) if base_step is not None else f">{base_steps}")
                else:
                    cells.append(fmt_reach(step, base_step, base_steps) if step is not None else f">{len(run['psnr']) - 1}")
            # A measured (not bounded) speed-up: the steps to the PSNR siren ends its budget at.
            step, _ = first_reach(run["psnr"], run["time"], base_final)
            cells.append(fmt_reach(step, first_reach(base["psnr"], base["time"], base_final)[0], base_steps) + f" @ {base_final:.1f} dB")
            per_step = run["time"][-1] / len(run["time"])
            heldout = result["heldout"].get(name, {}).get("heldout_psnr")
            held = f"{heldout:.2f}" if heldout is not None else "-"
            print(f"| {key} | {name} | {' | '.join(cells)} | {per_step:.2f} | {run['psnr'][-1]:.2f} ({len(run['psnr']) - 1}) | {held} |")


if __name__ == "__main__":
    main(tyro.cli(BenchConfig))
