"""Benchmark the ``softmine`` and ``int`` samplers against their baselines, side by side.

Usage (from the repo root, after ``pip install -e .``)::

    python tools/bench_samplers.py                       # everything, ~20 min on 2 CPU cores
    python tools/bench_samplers.py --parts image-int     # one part
    python tools/bench_samplers.py --parts image-int --image-field="--field siren --field.hidden-features 128"

Parts (every run is one ``nfplug train`` process with the same seed and one CPU thread;
runs are sequential so they do not compete with each other; to use both cores, start a second
benchmark with another ``--out``; finished runs with the same options are reused;
evaluation time is not training time; the learning rate is constant after warm-up
(``--optim.decay-gamma 1``) except in ``image-int``, which anneals as the authors' Kodak runs):

- ``image-int``: SIREN 3x256 (lr 1e-4) on Kodak photos, ``int`` against full-batch
  training: the wall time ``int`` needs to reach the PSNR full batch has after
  ``--image-int-steps`` steps (the paper uses 5000 steps at full resolution; on a CPU
  we downscale the photos and take fewer steps).
- ``image-softmine``: SIREN at 512 rays per step, ``softmine`` against ``uniform``: PSNR
  at ``--image-marks`` steps.
- ``scene``: lego at ``--scene-downscale``, ``ngp``: ``uniform``, ``softmine`` and ``int``:
  held-out PSNR (``--scene-eval-views`` views) against steps and time, and the steps
  ``softmine`` and ``int`` need to reach the PSNR ``uniform`` has at ``--scene-steps``.

Writes ``results.json``, ``results.md`` (tables) and PNG plots to ``--out``.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import tyro

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@dataclass(frozen=True)
class BenchConfig:
    parts: Tuple[str, ...] = ("image-int", "image-softmine", "scene")
    """Which comparisons to run: image-int, image-softmine, scene."""
    softmine_kodak: Tuple[str, ...] = ("kodim05.png",)
    """Photos of the softmine comparison (5000 steps each, so fewer)."""
    image_downscale: int = 8
    """Kodak 768x512 -> 96x64 at 8 (full batch: 6144 pixels per step)."""
    image_field: str = "--field siren --init siren --field.hidden-layers 3 --field.hidden-features 256 --optim.lr 1e-4"
    """Field options of the image runs, one string given with '=' (--image-field="--field siren ...")."""
    image_int_steps: Tuple[int, ...] = (300, 1000)
    """Steps T of the full-batch and int runs, one pair per value (the paper: 5000 at full resolution)."""
    image_int_photos: Tuple[str, ...] = ("kodim05.png",)
    """Photos of the int comparison."""
    image_int_reselect: Tuple[str, ...] = ("incremental",)
    """int's re-selection schedules to run (incremental, dense), each against the same full-batch run."""
    image_marks: Tuple[int, ...] = (1000, 2000, 5000)
    image_softmine_batch: int = 512
    image_softmine_lookup: bool = False
    """Also run softmine with rays off pixel centres (--sampler.no-snap), ground truth from the
    nearest pixel and bilinear (--data.gt-lookup)."""
    scene: str = str(DATA / "nerf_synthetic" / "lego")
    scene_downscale: int = 4
    scene_steps: int = 300
    """Uniform's PSNR at this step is the target (the paper's comparison uses 2000+ steps at 4096 rays)."""
    scene_eval_every: int = 50
    scene_eval_views: int = 8
    """Val views of every evaluation, the final one included (a linked subset of the scene)."""
    scene_batch: int = 1024
    scene_samplers: Tuple[str, ...] = ("uniform", "softmine", "int")
    """Sampler variants of the scene part (uniform always runs: it sets the target); see VARIANTS."""
    image_samplers: Tuple[str, ...] = ("uniform", "softmine")
    """Sampler variants of the image-softmine part (uniform always runs); see VARIANTS."""
    seed: int = 0
    out: str = "bench_out/samplers"


# Named sampler variants: ``softmine-drift4096`` scales the authors' Langevin drift by 4096,
# about what nfplug 0.1 applied at 4096 rays per step (it left out the 1 / (B c) factor).
VARIANTS = {
    "uniform": ["--sampler", "uniform"],
    "softmine": ["--sampler", "softmine"],
    "int": ["--sampler", "int"],
    "softmine-drift4096": ["--sampler", "softmine", "--sampler.drift-scale", "4096"],
    "softmine-drift512": ["--sampler", "softmine", "--sampler.drift-scale", "512"],
}


def variants(names: Sequence[str]) -> Dict[str, List[str]]:
    """``uniform`` first, then the named variants; an unknown name ends the benchmark with a one-line error."""
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        sys.exit(f"bench_samplers: unknown sampler variant(s) {', '.join(unknown)} (known: {', '.join(VARIANTS)})")
    return {name: VARIANTS[name] for name in ("uniform", *names)}


COMMON = ("--optim.decay-gamma", "1.0", "--no-progress", "--checkpoint-every", "0", "--threads", "1")


def train(run_dir: Path, args: Sequence[str], seed: int) -> Dict:
    """One ``nfplug train`` run (reused if already finished with the same options) -> history and final metrics."""
    cmd = [sys.executable, "-m", "nfplug.cli", "train", *args, *COMMON, "--seed", str(seed), "--output", str(run_dir)]
    stamp = run_dir / "bench_command.json"
    if (run_dir / "metrics.json").is_file():
        if stamp.is_file() and json.loads(stamp.read_text()) != cmd[3:]:
            sys.exit(f"bench_samplers: {run_dir} was trained with other options ({stamp}); give another --out")
    else:
        print("$ nfplug " + " ".join(cmd[3:]), flush=True)
        t0 = time.time()
        subprocess.run(cmd, check=True)
        stamp.write_text(json.dumps(cmd[3:]))
        print(f"  ({time.time() - t0:.0f} s wall incl. startup and evaluation)", flush=True)
    history = json.loads((run_dir / "history.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    rows = [r for r in history["train"] if r.get("rays_per_s")]
    spr = sum(r["samples_per_s"] / r["rays_per_s"] for r in rows) / len(rows) if rows else float("nan")
    return {"eval": history["eval"], "final_psnr": metrics["mean"]["psnr"], "train_seconds": metrics["train_seconds"], "steps": metrics["step"], "samples_per_ray": spr}


def first_reach(evals: List[Dict], target: float, key: str) -> Optional[float]:
    """``key`` (step or time) at which the eval curve first reaches ``target``, linearly interpolated."""
    prev = None
    for row in evals:
        if row["psnr"] >= target:
            if prev is None or row["psnr"] == prev["psnr"]:
                return float(row[key])
            f = (target - prev["psnr"]) / (row["psnr"] - prev["psnr"])
            return prev[key] + f * (row[key] - prev[key])
        prev = row
    return None


def _divisor_near(n: int, at_least: int) -> int:
    """The smallest divisor of ``n`` that is >= ``at_least`` (so step ``n`` is evaluated)."""
    return next(d for d in range(max(1, at_least), n + 1) if n % d == 0)


def psnr_at_time(evals: List[Dict], seconds: float) -> float:
    """The eval curve's PSNR at training time ``seconds``, linearly interpolated."""
    prev = evals[0]
    for row in evals:
        if row["time"] >= seconds:
            if row["time"] == prev["time"]:
                return row["psnr"]
            f = (seconds - prev["time"]) / (row["time"] - prev["time"])
            return prev["psnr"] + f * (row["psnr"] - prev["psnr"])
        prev = row
    return evals[-1]["psnr"]


def psnr_at_step(evals: List[Dict], step: int) -> float:
    rows = [r for r in evals if r["step"] == step]
    return rows[0]["psnr"] if rows else float("nan")


# ------------------------------------------------------------------------ parts


def image_args(config: BenchConfig, photo: str) -> List[str]:
    """``nfplug train`` options of an image run: the Kodak photo, its downscale and ``--image-field``."""
    return ["--data", str(DATA / "kodak" / photo), "--data.downscale", str(config.image_downscale), *shlex.split(config.image_field)]


def image_int(config: BenchConfig, out: Path) -> List[Dict]:
    rows = []
    for photo, steps in [(p, t) for p in config.image_int_photos for t in config.image_int_steps]:
        data = image_args(config, photo)
        # max_steps + 1 so that step `steps` is a periodic evaluation like all the others. The learning
        # rate anneals to 1e-6 by a cosine over T steps, without warm-up, as in the authors' Kodak runs.
        base = [*data, "--batch-size", "0", "--max-steps", str(steps + 1), "--eval-every", str(_divisor_near(steps, steps // 40)),
                "--optim.schedule", "cosine", "--optim.warmup-steps", "0"]
        name = f"image-int-{Path(photo).stem}-x{config.image_downscale}-{steps}"
        full = train(out / f"{name}-full", [*base, "--sampler", "uniform"], config.seed)
        target = psnr_at_step(full["eval"], steps)
        full_time = first_reach(full["eval"], target, "time")
        for reselect in config.image_int_reselect:
            suffix = "" if reselect == "incremental" else f"-{reselect}"
            teach = train(out / f"{name}-int{suffix}", [*base, "--sampler", "int", "--sampler.reselect", reselect], config.seed)
            int_total = [r for r in teach["eval"] if r["step"] == steps][0]["time"]
            int_time = first_reach(teach["eval"], target, "time")
            rows.append(
                {
                    "photo": photo,
                    "reselect": reselect,
                    "target_psnr": target,
                    "full_time": full_time,
                    "int_time": int_time,
                    "int_step": first_reach(teach["eval"], target, "step"),
                    "steps": steps,
                    "int_psnr_at_steps": psnr_at_step(teach["eval"], steps),
                    "int_seconds": int_total,
                    "full_psnr_at_int_seconds": psnr_at_time(full["eval"], int_total),
                    "time_saved": None if int_time is None or not full_time else 1.0 - int_time / full_time,
                    "curves": {"full batch": full["eval"], f"int ({reselect})": teach["eval"]},
                }
            )
    return rows


def image_softmine(config: BenchConfig, out: Path) -> List[Dict]:
    rows = []
    last = max(config.image_marks)
    for photo in config.softmine_kodak:
        data = image_args(config, photo)
        base = [*data, "--batch-size", str(config.image_softmine_batch), "--max-steps", str(last + 1), "--eval-every", "250"]
        runs = variants(config.image_samplers)
        if config.image_softmine_lookup:
            for lookup in ("nearest", "bilinear"):
                runs[f"softmine-no-snap-{lookup}"] = ["--sampler", "softmine", "--sampler.no-snap", "--data.gt-lookup", lookup]
        curves = {name: train(out / f"image-sm-{Path(photo).stem}-{name}", [*base, *extra], config.seed) for name, extra in runs.items()}
        rows.append(
            {
                "photo": photo,
                "psnr": {name: {str(m): psnr_at_step(c["eval"], m) for m in config.image_marks} for name, c in curves.items()},
                "seconds": {name: c["train_seconds"] for name, c in curves.items()},
                "curves": {name: c["eval"] for name, c in curves.items()},
            }
        )
    return rows


def scene_subset(root: Path, n_val: int, out: Path) -> Path:
    """A copy of the scene's transforms with only ``n_val`` evenly spread val views (images linked).

    The final evaluation of a run renders every view of the split; on a CPU the full lego val
    split costs minutes per run, so every evaluation here uses the same ``n_val`` views.
    """
    sub = out / f"{root.name}-val{n_val}"
    sub.mkdir(parents=True, exist_ok=True)
    for entry in root.iterdir():
        if entry.name.startswith("transforms_"):
            continue
        link = sub / entry.name
        if not link.exists():
            link.symlink_to(entry.resolve())
    for name in ("transforms_train.json", "transforms_test.json"):
        if (root / name).is_file():
            (sub / name).write_text((root / name).read_text())
    meta = json.loads((root / "transforms_val.json").read_text())
    frames = meta["frames"]
    keep = sorted({round(i * (len(frames) - 1) / max(1, n_val - 1)) for i in range(n_val)})
    meta["frames"] = [frames[i] for i in keep]
    (sub / "transforms_val.json").write_text(json.dumps(meta, indent=1))
    return sub


def scene(config: BenchConfig, out: Path) -> Dict:
    steps = config.scene_steps
    data = scene_subset(Path(config.scene), config.scene_eval_views, out)
    base = [
        "--data", str(data), "--data.downscale", str(config.scene_downscale), "--field", "ngp",
        "--batch-size", str(config.scene_batch), "--max-steps", str(steps + 1),
        "--eval-every", str(config.scene_eval_every), "--eval-views", str(config.scene_eval_views),
    ]  # fmt: skip
    runs = {name: train(out / f"scene-{name}", [*base, *extra], config.seed) for name, extra in variants(config.scene_samplers).items()}
    target = psnr_at_step(runs["uniform"]["eval"], steps)
    return {
        "target_psnr": target,
        "psnr_at_steps": {n: psnr_at_step(r["eval"], steps) for n, r in runs.items()},
        "final_all_views": {n: r["final_psnr"] for n, r in runs.items()},
        "seconds": {n: r["train_seconds"] for n, r in runs.items()},
        "samples_per_ray": {n: r["samples_per_ray"] for n, r in runs.items()},
        "steps_to_target": {n: first_reach(r["eval"], target, "step") for n, r in runs.items()},
        "time_to_target": {n: first_reach(r["eval"], target, "time") for n, r in runs.items()},
        "curves": {n: r["eval"] for n, r in runs.items()},
    }


# ---------------------------------------------------------------------- reports


def _fmt(value: Optional[float], spec: str = ".1f", none: str = "not reached", unit: str = "") -> str:
    """``value`` formatted with ``spec`` and ``unit``, or ``none`` (without the unit) when it is missing."""
    return none if value is None else format(value, spec) + unit


def report(config: BenchConfig, results: Dict, out: Path) -> str:
    lines: List[str] = []
    if "image-int" in results:
        h, w = 512 // config.image_downscale, 768 // config.image_downscale
        lines += [
            f"**Images, `int` vs full batch** (`{config.image_field}`, cosine-annealed to 1e-6; "
            f"Kodak at {w}x{h}; T steps each)",
            "",
            "| photo | T | int re-selection | full batch: PSNR @ T, time | int: time to that PSNR (steps) | time saved | int: PSNR @ T, time "
            "| full batch: PSNR at int's time | full batch: time to int's PSNR @ T | time saved at int's PSNR |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in results["image-int"]:
            saved = None if r["time_saved"] is None else 100 * r["time_saved"]
            full_to_int = first_reach(r["curves"]["full batch"], r["int_psnr_at_steps"], "time")
            saved_at_int = None if not full_to_int else 100 * (1.0 - r["int_seconds"] / full_to_int)
            lines.append(
                f"| {r['photo']} | {r['steps']} | {r.get('reselect', 'incremental')} | {r['target_psnr']:.2f} dB, {_fmt(r['full_time'], unit=' s')} | "
                f"{_fmt(r['int_time'], '.1f', 'not reached in T steps', ' s')} ({_fmt(r['int_step'], '.0f', '-')}) | {_fmt(saved, '.0f', '-', '%')} | "
                f"{r['int_psnr_at_steps']:.2f} dB, {r['int_seconds']:.1f} s | {r['full_psnr_at_int_seconds']:.2f} dB | "
                f"{_fmt(full_to_int, unit=' s')} | {_fmt(saved_at_int, '.0f', '-', '%')} |"
            )
        lines.append("")
    if "image-softmine" in results:
        marks = config.image_marks
        lines += [
            f"**Images, `softmine` vs `uniform`** ({config.image_softmine_batch} rays per step, same field and photos)",
            "",
            "| photo | sampler | " + " | ".join(f"PSNR @ {m}" for m in marks) + " | train time |",
            "|---|---|" + "---|" * len(marks) + "---|",
        ]
        for r in results["image-softmine"]:
            for name in r["psnr"]:
                cells = " | ".join(f"{r['psnr'][name][str(m)]:.2f}" for m in marks)
                lines.append(f"| {r['photo']} | {name} | {cells} | {r['seconds'][name]:.0f} s |")
        lines.append("")
    if "scene" in results:
        s = results["scene"]
        steps = config.scene_steps
        lines += [
            f"**Scene, lego at 1/{config.scene_downscale} resolution, `ngp`, {config.scene_batch} rays per step** "
            f"(PSNR on {config.scene_eval_views} val views)",
            "",
            f"| sampler | PSNR @ {steps} | steps to uniform's PSNR @ {steps} ({s['target_psnr']:.2f} dB) | time to it | "
            f"train time for {steps + 1} steps | samples per ray |",
            "|---|---|---|---|---|---|",
        ]
        for name in s["psnr_at_steps"]:
            lines.append(
                f"| {name} | {s['psnr_at_steps'][name]:.2f} | {_fmt(s['steps_to_target'][name], '.0f')} | "
                f"{_fmt(s['time_to_target'][name], '.1f', '-', ' s')} | {s['seconds'][name]:.0f} s | {s.get('samples_per_ray', {}).get(name, float('nan')):.1f} |"
            )
        lines.append("")
    text = "\n".join(lines)
    (out / "results.md").write_text(text + "\n")
    return text


def plot(config: BenchConfig, results: Dict, out: Path) -> List[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []

    def curves_figure(panels: List[Tuple[str, Dict[str, List[Dict]], Optional[float]]], name: str) -> None:
        fig, axes = plt.subplots(len(panels), 2, figsize=(9, 3.2 * len(panels)), squeeze=False)
        for row, (title, curves, target) in enumerate(panels):
            for col, (key, label) in enumerate((("step", "step"), ("time", "training time (s)"))):
                ax = axes[row][col]
                for label_curve, evals in curves.items():
                    ax.plot([e[key] for e in evals], [e["psnr"] for e in evals], ".-", ms=3, label=label_curve)
                if target is not None:
                    ax.axhline(target, color="gray", lw=0.8, ls="--")
                ax.set_xlabel(label)
                ax.set_ylabel("PSNR (dB)")
                ax.set_title(title, fontsize=9)
                ax.grid(alpha=0.3)
                ax.legend(fontsize=8)
        fig.tight_layout()
        path = out / name
        fig.savefig(path, dpi=80)
        plt.close(fig)
        paths.append(path)

    if "image-int" in results:
        panels = [
            (f"{r['photo']}, {r['steps']} steps: int ({r.get('reselect', 'incremental')}) vs full batch", r["curves"], r["target_psnr"])
            for r in results["image-int"]
        ]
        curves_figure(panels, "samplers_image_int.png")
    if "image-softmine" in results:
        curves_figure(
            [(f"{r['photo']}: softmine vs uniform, {config.image_softmine_batch} rays/step", r["curves"], None) for r in results["image-softmine"]],
            "samplers_image_softmine.png",
        )
    if "scene" in results:
        s = results["scene"]
        curves_figure([(f"lego 1/{config.scene_downscale}, ngp: val PSNR ({config.scene_eval_views} views)", s["curves"], s["target_psnr"])], "samplers_scene.png")
    return paths


def main(config: BenchConfig) -> None:
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    results: Dict = json.loads(path.read_text()) if path.is_file() else {}
    for part, fn in (("image-int", image_int), ("image-softmine", image_softmine), ("scene", scene)):
        if part in config.parts:
            results[part] = fn(config, out)
            path.write_text(json.dumps(results, indent=1))
    print(report(config, results, out))
    for p in plot(config, results, out):
        print(f"wrote {p}")


if __name__ == "__main__":
    main(tyro.cli(BenchConfig))
