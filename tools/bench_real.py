"""Real captures in 10 minutes: held-out PSNR/SSIM over time on fern, cup_360 and fox.

Each run is ``nfplug train --data SCENE --max-time T --max-steps 100000`` plus the variant's
options; the learning-rate schedule follows the time budget (``--max-time``), so every run
anneals within it. Held-out photos are every 8th (LLFF's and the captures' rule). Runs of one
``--group`` go side by side (``--parallel`` at once, ``--threads`` each), so a comparison shares
the machine's noise; the default group trains each scene alone on both cores.

Scenes (``../shared/data``):

- ``fern``: LLFF fern at 504x378 (``images_8``), 17 train / 3 test photos.
- ``cup``: cup_360 from its COLMAP model, photos at 200x150 (``--data.downscale 4``).
- ``fox``: instant-ngp's fox from its ``transforms.json``, photos at 270x480 (``--data.downscale 4``).

Groups (variants compared side by side):

- ``default``: each scene with no options (what a new user gets), alone on 2 threads.
- ``fern-rays``: fern with NDC rays against world rays (one grid level over the frustums' box).
- ``fern-space``: fern unbounded (4 grid levels, cone angle 0.004) with and without contraction.
- ``cup-space``: cup_360, 4 levels, with and without contraction.
- ``cup-background``: cup_360 with a white and a learned background.
- ``cup-distortion``: cup_360 with and without the distortion loss (``--render.distortion-weight``).
- ``cup-cone``: cup_360 with marching steps growing as 0.004 t (nerfacc's) and 0.016 t.
- ``fox-appearance``: fox (phone photos) with and without per-image appearance embeddings.
- ``fern-sampler``, ``cup-sampler``, ``fox-sampler``: the ``uniform`` against the ``softmine`` sampler.

Prints a table, writes ``results.json``, ``real_<group>.png`` (PSNR over time) and, with
``--videos``, an orbit or spiral video of each default run and ``real_videos.png`` (five frames of each).

Usage (from the repo root)::

    python tools/bench_real.py --groups default --videos --out bench_out/real
    python tools/bench_real.py --groups default --videos --reuse --out bench_out/real   # after an interruption
    python tools/bench_real.py --groups fern-rays cup-space --max-time 600 --out bench_out/real
    # each run alone on both cores; a comparison's baseline is the default run, trained once
    python tools/bench_real.py --groups default cup-background cup-distortion fox-appearance --parallel 1 --videos --out bench_out/real
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

import tyro

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SCENES: Dict[str, Tuple[str, Tuple[str, ...]]] = {
    "fern": ("nerf_llff_data/fern", ()),
    "cup": ("captures/cup_360", ("--data.downscale", "4")),
    "fox": ("captures/fox", ("--data.downscale", "4")),
}
WORLD4 = ("--render.rays", "world", "--render.grid-levels", "4", "--render.cone-angle", "0.004")
GROUPS: Dict[str, List[Tuple[str, str, Tuple[str, ...]]]] = {  # group -> [(scene, variant, options)]
    "default": [("fern", "default", ()), ("cup", "default", ()), ("fox", "default", ())],
    "fern-rays": [("fern", "ndc", ("--render.rays", "ndc")), ("fern", "world", ("--render.rays", "world"))],
    "fern-space": [
        ("fern", "4 levels", WORLD4 + ("--render.contraction", "none")),
        ("fern", "4 levels + contraction", WORLD4 + ("--render.contraction", "sphere")),
    ],
    "cup-space": [
        ("cup", "4 levels", ("--render.contraction", "none")),
        ("cup", "4 levels + contraction", ("--render.contraction", "sphere")),
    ],
    "cup-background": [("cup", "white", ()), ("cup", "learned background", ("--data.background", "learned"))],
    "cup-distortion": [("cup", "no regulariser", ()), ("cup", "distortion 0.01", ("--render.distortion-weight", "0.01"))],
    "cup-cone": [("cup", "cone angle 0.004", ()), ("cup", "cone angle 0.016", ("--render.cone-angle", "0.016"))],
    "fox-appearance": [("fox", "no embedding", ()), ("fox", "appearance 16", ("--field.appearance-dim", "16"))],
    **{
        f"{scene}-sampler": [(scene, "uniform", ("--sampler", "uniform")), (scene, "softmine", ("--sampler", "softmine"))]
        for scene in ("fern", "cup", "fox")
    },
}


@dataclass(frozen=True)
class BenchConfig:
    groups: Tuple[str, ...] = ("default",)
    """Groups to run (see the module doc)."""
    max_time: float = 600.0
    """Training seconds per run."""
    parallel: int = 0
    """Runs of a group at once (0: 1 for 'default', 2 for comparisons)."""
    threads: int = 0
    """Torch threads per run (0: 2 // parallel)."""
    videos: bool = False
    """Render an orbit (360 captures) or spiral (forward-facing) video of each default run."""
    video_frames: int = 30
    """Frames of each video."""
    video_scale: float = 0.5
    """Video resolution as a multiple of the training photos' (renders are slow on 2 cores)."""
    reuse: bool = False
    """Keep a run whose folder already has metrics.json (an interrupted benchmark resumes)."""
    extra: str = ""
    """Extra options for every run."""
    out: str = "bench_out/real"


def run_group(cfg: BenchConfig, group: str, out: Path, done: Dict[tuple, dict]) -> List[dict]:
    """Train a group's runs; a run identical to one already trained in this benchmark (same scene,
    options, threads and runs at once; e.g. a comparison's baseline and the default run) is shared,
    not trained twice. ``done`` maps those keys to results."""
    runs = GROUPS[group]
    parallel = cfg.parallel or (1 if group == "default" else 2)
    threads = cfg.threads or max(1, 2 // parallel)
    results: List[dict] = []
    pending = list(runs)
    while pending:
        batch, pending = pending[:parallel], pending[parallel:]
        procs = []
        for scene, variant, options in list(batch):
            key = (scene, options, threads, len(batch))
            if key in done:
                print(f"  {scene} {variant}: the same run as {done[key]['group']} / {done[key]['variant']}", flush=True)
                results.append({**done[key], "group": group, "variant": variant})
                batch.remove((scene, variant, options))
        for scene, variant, options in batch:
            rel, scene_options = SCENES[scene]
            run_dir = out / group / f"{scene}-{variant.replace(' ', '_').replace('+', 'plus')}"
            cmd = [
                "nfplug", "train", "--data", str(SHARED / rel), *scene_options, *options, *cfg.extra.split(),
                "--max-time", str(cfg.max_time), "--max-steps", "100000", "--eval-every", "0",
                "--eval-at-seconds", *[str(round(cfg.max_time * f)) for f in (0.1, 0.2, 0.35, 0.5, 0.75)],
                "--checkpoint-every", "100000", "--threads", str(threads), "--no-progress", "--output", str(run_dir),
            ]
            run_dir.parent.mkdir(parents=True, exist_ok=True)
            if cfg.reuse and (run_dir / "metrics.json").is_file():
                print(f"  {scene} {variant}: reusing {run_dir}", flush=True)
                procs.append((scene, variant, run_dir, cmd, None, None))
                continue
            log = open(run_dir.parent / f"{run_dir.name}.log", "w")
            print("$", " ".join(cmd), flush=True)
            procs.append((scene, variant, run_dir, cmd, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log))
        for scene, variant, run_dir, cmd, proc, log in procs:
            code = proc.wait() if proc is not None else 0
            if log is not None:
                log.close()
            if code != 0:
                print(f"  {scene} {variant}: failed (exit {code}), see {run_dir}.log", flush=True)
                continue
            metrics = json.loads((run_dir / "metrics.json").read_text())
            history = json.loads((run_dir / "history.json").read_text())
            results.append({
                "group": group, "scene": scene, "variant": variant, "threads": threads, "parallel": len(batch),
                "command": " ".join(cmd), "run": str(run_dir), "split": metrics["split"], "views": len(metrics["views"]),
                "psnr": metrics["mean"]["psnr"], "ssim": metrics["mean"]["ssim"], "steps": metrics["step"],
                "seconds": metrics["train_seconds"],
                # periodic evaluations on --eval-views (4) held-out photos, then the final one on all of them
                "curve": [(row["time"], row["psnr"]) for row in history["eval"]],
            })
            done[(scene, options, threads, len(batch))] = results[-1]
            if cfg.videos and group == "default":
                render_video(run_dir, cfg)
    return results


def render_video(run_dir: Path, cfg: BenchConfig) -> None:
    if cfg.reuse and list((run_dir / "renders").glob("*/video.mp4")):
        return
    # orbit, or spiral if forward-facing
    cmd = ["nfplug", "render", str(run_dir), "--frames", str(cfg.video_frames), "--fps", "10", "--scale", str(cfg.video_scale)]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=False)


def video_strip(results: List[dict], out: Path, n_frames: int = 5, height: int = 160) -> None:
    """``real_videos.png``: ``n_frames`` evenly spaced frames of each default run's video, one row per scene."""
    import cv2
    import imageio.v2 as imageio
    import numpy as np

    rows = []
    for r in results:
        frames = sorted(Path(r["run"]).glob("renders/*/rgb_*.png")) if r["group"] == "default" else []
        if not frames:
            continue
        picked = [imageio.imread(frames[round(i * (len(frames) - 1) / max(1, n_frames - 1))])[..., :3] for i in range(n_frames)]
        picked = [cv2.resize(f, (round(f.shape[1] * height / f.shape[0]), height), interpolation=cv2.INTER_AREA) for f in picked]
        rows.append(np.concatenate(picked, axis=1))
    if rows:
        width = max(row.shape[1] for row in rows)
        rows = [np.pad(row, ((0, 0), (0, width - row.shape[1]), (0, 0)), constant_values=255) for row in rows]
        imageio.imwrite(out / "real_videos.png", np.concatenate(rows, axis=0))


def plot(results: List[dict], group: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results if r["group"] == group]
    scenes = sorted({r["scene"] for r in rows})
    fig, axes = plt.subplots(1, len(scenes), figsize=(5 * len(scenes), 3.6), squeeze=False)
    for ax, scene in zip(axes[0], scenes):
        for r in rows:
            if r["scene"] == scene:
                t, p = zip(*r["curve"])
                ax.plot(t, p, marker="o", label=f"{r['variant']} ({r['psnr']:.2f} dB)")
        ax.set_title(f"{scene}: held-out PSNR ({group})")
        ax.set_xlabel("training seconds")
        ax.set_ylabel("PSNR (dB; 4 photos, last point: all)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / f"real_{group}.png", dpi=110)
    plt.close(fig)


def main(cfg: BenchConfig) -> None:
    unknown = [g for g in cfg.groups if g not in GROUPS]
    if unknown:
        sys.exit(f"--groups: unknown {', '.join(unknown)} (one of {', '.join(GROUPS)})")
    if not SHARED.is_dir():
        sys.exit(f"{SHARED}: the shared data is not here")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    previous = json.loads(results_path.read_text()) if results_path.is_file() else []
    started = time.time()
    done: Dict[tuple, dict] = {}
    for group in cfg.groups:
        results = run_group(cfg, group, out, done)
        previous = [r for r in previous if r["group"] != group] + results
        results_path.write_text(json.dumps(previous, indent=1))
        plot(previous, group, out)
        if cfg.videos and group == "default":
            video_strip(previous, out)
    print(f"\n{'group':<11} {'scene':<5} {'variant':<24} {'threads':>7} {'steps':>6} {'PSNR':>7} {'SSIM':>6}  held out")
    for r in previous:
        if r["group"] in cfg.groups:
            print(f"{r['group']:<11} {r['scene']:<5} {r['variant']:<24} {r['threads']:>7} {r['steps']:>6} {r['psnr']:>7.2f} {r['ssim']:>6.3f}  {r['views']} {r['split']} photos")
    print(f"({time.time() - started:.0f} s; {results_path}, {out}/real_<group>.png)")


if __name__ == "__main__":
    main(tyro.cli(BenchConfig))
