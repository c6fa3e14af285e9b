"""Train a scene for a fixed wall-clock budget; report held-out PSNR against time, throughput, memory.

Usage (from the repo root, after ``pip install -e .``)::

    python tools/bench_scene.py --data ../shared/data/nerf_synthetic/lego --downscales 4 2 --minutes 10

Each configuration is one ``nfplug train --max-time`` run (a separate process, so runs do
not share caches or memory), evaluated on ``--eval-views`` held-out views when the
training time passes each of ``--marks`` minutes, and on every held-out view at the end.
Evaluation time is not training time. Prints a table and writes ``scene_psnr_vs_time.png``
and ``scene_results.json`` to ``--out``.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

import tyro


@dataclass(frozen=True)
class BenchConfig:
    data: str = "../shared/data/nerf_synthetic/lego"
    """Blender-format scene folder."""
    downscales: Tuple[int, ...] = (4, 2)
    """Image downscale factors to benchmark (lego 400x400: 4 -> 100x100, 2 -> 200x200)."""
    minutes: float = 10.0
    """Training budget per run (wall clock, excluding evaluation)."""
    marks: Tuple[float, ...] = (2.0, 5.0, 10.0)
    """Report held-out PSNR when training time passes these minutes."""
    eval_views: int = 20
    """Held-out views at each mark (the final evaluation uses every view)."""
    field: str = "ngp"
    sampler: str = "uniform"
    init: str = "default"
    extra: Tuple[str, ...] = ()
    """Further ``nfplug train`` options, e.g. --extra --batch-size 8192."""
    out: str = "bench_out/scene"
    """Output folder (runs, table, plot)."""


def run_one(config: BenchConfig, downscale: int, out: Path) -> Dict:
    run_dir = out / f"{Path(config.data).name}-ds{downscale}-{config.field}-{config.sampler}"
    args = [
        sys.executable, "-m", "nfplug.cli", "train",
        "--data", config.data, "--data.downscale", str(downscale),
        "--field", config.field, "--sampler", config.sampler, "--init", config.init,
        "--max-steps", "1000000", "--max-time", str(config.minutes * 60),
        "--eval-every", "0", "--eval-views", str(config.eval_views),
        "--eval-at-seconds", *[str(m * 60) for m in config.marks],
        "--output", str(run_dir), "--no-progress", *config.extra,
    ]  # fmt: skip
    print(" ".join(args[2:]), flush=True)
    subprocess.run(args, check=True)
    history = json.loads((run_dir / "history.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    train_rows = history["train"][len(history["train"]) // 10 :]  # skip the warm-up
    return {
        "downscale": downscale,
        "eval": history["eval"],
        "final_psnr": metrics["mean"]["psnr"],
        "final_ssim": metrics["mean"]["ssim"],
        "steps": metrics["step"],
        "rays_per_s": statistics.median(r["rays_per_s"] for r in train_rows),
        "samples_per_s": statistics.median(r["samples_per_s"] for r in train_rows),
        "peak_memory_mb": metrics["peak_memory_mb"],
    }


def psnr_at(evals: List[Dict], minutes: float) -> float:
    """PSNR of the first evaluation at or after ``minutes`` of training."""
    rows = [r for r in evals if r["time"] >= minutes * 60 - 1e-6]
    return rows[0]["psnr"] if rows else float("nan")


def main(config: BenchConfig) -> None:
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    results = [run_one(config, ds, out) for ds in config.downscales]
    marks = " ".join(f"{f'PSNR@{m:g}min':>11}" for m in config.marks)
    print(f"\n{'downscale':>9} {marks} {'final(all)':>10} {'SSIM':>6} {'steps':>6} {'rays/s':>8} {'samples/s':>10} {'peak MB':>8}")
    for r in results:
        cells = " ".join(f"{psnr_at(r['eval'], m):>11.2f}" for m in config.marks)
        print(
            f"{r['downscale']:>9} {cells} {r['final_psnr']:>10.2f} {r['final_ssim']:>6.3f} {r['steps']:>6} "
            f"{r['rays_per_s']:>8.0f} {r['samples_per_s']:>10.0f} {r['peak_memory_mb']:>8.0f}"
        )
    (out / "scene_results.json").write_text(json.dumps(results, indent=2))
    plot(results, out / "scene_psnr_vs_time.png", config)


def plot(results: List[Dict], path: Path, config: BenchConfig) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in results:
        ax.plot([e["time"] / 60 for e in r["eval"]], [e["psnr"] for e in r["eval"]], "o-", label=f"downscale {r['downscale']}")
    ax.set_xlabel("training time (min)")
    ax.set_ylabel("held-out PSNR (dB)")
    ax.set_title(f"{Path(config.data).name}: {config.field} / {config.sampler}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"wrote {path}")


if __name__ == "__main__":
    main(tyro.cli(BenchConfig))
