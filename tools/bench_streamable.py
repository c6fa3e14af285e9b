"""Streamable fields against their paper: PSNR of every width, and on a scene, every k.

Cho et al., "Streamable Neural Fields" (ECCV 2022), fit Kodak kodim09 with a SIREN grown in
four parts (widths 30 / 69 / 110 / 151, progressive training, 50k steps per stage) and report
26.5 / 30.1 / 32.5 / 34.5 dB; slimmable training and SIRENs trained one per width (30 / 60 / 90 / 120, about the
parameters of the first 1-4 parts) are their baselines. This
script runs the three side by side through ``nfplug train`` (full batch, Adam, the field's
default lr 2e-4, no warm-up or decay), with far fewer steps on this CPU, and the scene version
on lego with the ``uniform`` and ``softmine`` samplers. It prints a table and writes
``results.json`` and PNG plots.

Usage (from the repo root)::

    python tools/bench_streamable.py --parts image --image-steps 1000 --image-downscale 4
    python tools/bench_streamable.py --parts scene --scene-steps 2000
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

import tyro

from nfplug.cli import main as nfplug
from nfplug.training.evaluation import part_parameter_count
from nfplug.training.run import load_run

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
IMAGE_FLAGS = ["--batch-size", "0", "--optim.warmup-steps", "0", "--optim.decay-milestones", "--optim.weight-decay", "0"]


@dataclass(frozen=True)
class BenchConfig:
    parts: Tuple[str, ...] = ("image", "scene")
    """Which benchmarks to run: image (kodim09: progressive, slimmable, individual), scene (lego)."""
    image: str = str(SHARED / "kodak" / "kodim09.png")
    image_downscale: int = 4
    """Kodak images are 768x512; 4 fits 192x128."""
    image_steps: int = 1000
    """Steps per stage (progressive), in all (slimmable) and per width (individual)."""
    progressive_widths: Tuple[int, ...] = (30, 69, 110, 151)
    individual_widths: Tuple[int, ...] = (30, 60, 90, 120)
    """Widths of the SIRENs trained one per width: about the parameters of the first 1..4
    streamable parts (the authors' choice). Slimmable training uses the progressive widths:
    here both modes share one architecture, so they are compared at equal parameters."""
    scene: str = str(SHARED / "nerf_synthetic" / "lego")
    scene_downscale: int = 4
    scene_steps: int = 2000
    scene_samplers: Tuple[str, ...] = ("uniform", "softmine")
    scene_eval_views: int = 25
    """Val views each k is evaluated on."""
    threads: int = 2
    out: str = "bench_out/streamable"


def train(args: List[str], out: Path) -> Tuple[Dict, float]:
    """One quiet ``nfplug train`` run; -> (metrics.json, wall seconds)."""
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        code = nfplug(["train", *args, "--output", str(out), "--no-progress"])
    if code != 0:
        raise SystemExit(f"nfplug train {' '.join(args)} failed with exit code {code}")
    return json.loads((out / "metrics.json").read_text()), time.perf_counter() - t0


def bench_image(config: BenchConfig, out: Path) -> Dict[str, List[Dict]]:
    common = ["--data", config.image, "--data.downscale", str(config.image_downscale), "--field", "streamable",
              "--threads", str(config.threads), *IMAGE_FLAGS]  # fmt: skip
    widths = lambda ws: ["--field.widths", *map(str, ws)]  # noqa: E731
    rows: Dict[str, List[Dict]] = {}
    n = len(config.progressive_widths)
    metrics, seconds = train([*common, *widths(config.progressive_widths), "--max-steps", str(n * config.image_steps),
                              "--field.steps-per-stage", str(config.image_steps)], out / "progressive")  # fmt: skip
    rows["progressive"] = [{"width": w, **r, "seconds": seconds} for w, r in zip(config.progressive_widths, metrics["parts"])]
    print(f"progressive done in {seconds:.0f} s", flush=True)
    metrics, seconds = train([*common, *widths(config.progressive_widths), "--field.mode", "slimmable",
                              "--max-steps", str(config.image_steps)], out / "slimmable")  # fmt: skip
    rows["slimmable"] = [{"width": w, **r, "seconds": seconds} for w, r in zip(config.progressive_widths, metrics["parts"])]
    print(f"slimmable done in {seconds:.0f} s", flush=True)
    rows["individual"] = []
    for w in config.individual_widths:
        metrics, seconds = train([*common, *widths([w]), "--max-steps", str(config.image_steps)], out / f"individual_{w}")
        params = part_parameter_count(load_run(out / f"individual_{w}", "cpu").field, 1)
        rows["individual"].append({"width": w, "parts": 1, "params": params, "psnr": metrics["mean"]["psnr"], "seconds": seconds})
        print(f"individual width {w} done in {seconds:.0f} s", flush=True)
    return rows


def bench_scene(config: BenchConfig, out: Path) -> Dict[str, List[Dict]]:
    rows = {}
    for sampler in config.scene_samplers:
        metrics, seconds = train(["--data", config.scene, "--data.downscale", str(config.scene_downscale), "--field", "streamable",
                                  "--sampler", sampler, "--max-steps", str(config.scene_steps), "--eval-views",
                                  str(config.scene_eval_views), "--threads", str(config.threads)], out / f"lego_{sampler}")  # fmt: skip
        rows[sampler] = [{**r, "seconds": seconds} for r in metrics["parts"]]
        print(f"lego {sampler} done in {seconds:.0f} s", flush=True)
    return rows


def plot(results: Dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [g for g in ("image", "scene") if g in results]
    fig, axes = plt.subplots(1, len(groups), figsize=(4.6 * len(groups), 3.4), squeeze=False)
    for ax, group in zip(axes[0], groups):
        for name, rows in results[group].items():
            params = [r["params"] / 1e3 for r in rows]
            ax.plot(params, [r["psnr"] for r in rows], "o-", label=name)
        ax.set_xlabel("parameters decoded (thousands)")
        ax.set_ylabel("PSNR (dB)")
        ax.set_title("kodim09" if group == "image" else "lego (val)", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    print(f"wrote {path}")


def main(config: BenchConfig) -> None:
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    if "image" in config.parts:
        results["image"] = bench_image(config, out)
    if "scene" in config.parts:
        results["scene"] = bench_scene(config, out)
    (out / "results.json").write_text(json.dumps({"config": config.__dict__, "results": results}, indent=1))
    for group, runs in results.items():
        print(f"\n{group}:\n| training | k | width | parameters | PSNR (dB) | run wall time |\n|---|---|---|---|---|---|")
        for name, rows in runs.items():
            for k, r in enumerate(rows, start=1):
                print(f"| {name} | {k} | {r.get('width', '-')} | {r['params']:,} | {r['psnr']:.2f} | {r['seconds']:.0f} s |")
    plot(results, out / "streamable.png")


if __name__ == "__main__":
    main(tyro.cli(BenchConfig))
