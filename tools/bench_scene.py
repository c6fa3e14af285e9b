"""Train a scene for a fixed wall-clock budget; report held-out PSNR against time, throughput, memory.

Usage (from the repo root, after ``pip install -e .``)::

    python tools/bench_scene.py --data ../shared/data/nerf_synthetic/lego --downscales 4 2 --minutes 10
    # this build and an earlier one side by side (one thread each), with ratios:
    python tools/bench_scene.py --downscales 2 --baseline 89fedf7

Each configuration is one ``nfplug train --max-time`` run (a separate process, so runs do
not share caches or memory), evaluated on ``--eval-views`` held-out views when the
training time passes each of ``--marks`` minutes, and on every held-out view at the end.
Evaluation time is not training time.

``--baseline REV`` exports that git revision of nfplug (``git archive``) and trains it at the
same time as this build, each with half of the machine's threads, so both see the same machine
(these machines are noisy, and their CPUs differ from session to session); the table then gives
this build's samples/s as a ratio to the baseline's and the PSNR difference. The machine's
sgemm and random-gather rates are measured first (``tools/machine_peak.py``) and samples/s is
also given as a fraction of each.

Prints a table and writes ``scene_psnr_vs_time.png`` and ``scene_results.json`` to ``--out``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
import tyro

import machine_peak

REPO = Path(__file__).resolve().parent.parent


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
    sampler: Optional[str] = None
    """Sampler of both builds; None: each build's own default (this build: softmine on scenes;
    89fedf7: uniform), which is what a user gets."""
    init: str = "default"
    extra: Tuple[str, ...] = ()
    """Further ``nfplug train`` options, each written with "=" so that they are not read as this
    tool's own: e.g. ``--extra=--batch-size=8192``."""
    out: str = "bench_out/scene"
    """Output folder (runs, table, plot)."""
    baseline: Optional[str] = None
    """A git revision of nfplug to train side by side with this build (e.g. the previous release)."""
    threads: int = 0
    """Torch threads per run (0: all cores alone, half of them each with --baseline)."""


def export_baseline(rev: str, out: Path) -> Path:
    """Source tree of nfplug at ``rev`` (``git archive``), run through PYTHONPATH: its ``nfplug`` and
    ``nfplug_builtins`` shadow the installed ones (the entry points name modules, not files)."""
    found = subprocess.run(["git", "rev-parse", "--short", "--verify", f"{rev}^{{commit}}"], cwd=REPO, capture_output=True, text=True)
    if found.returncode != 0:
        raise SystemExit(f"bench_scene: --baseline: {rev!r} is not a commit of {REPO}")
    sha = found.stdout.strip()
    tree = out / f"baseline-{sha}"
    if not (tree / "nfplug").is_dir():
        tree.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", sha], cwd=REPO, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def start_one(config: BenchConfig, downscale: int, out: Path, build: str, tree: Optional[Path], threads: int):
    """Launch one ``nfplug train`` run; returns ``(run_dir, process, log)``."""
    run_dir = out.resolve() / f"{Path(config.data).name}-ds{downscale}-{config.field}-{config.sampler or 'default'}-{build}"
    args = [
        sys.executable, "-m", "nfplug.cli", "train",
        "--data", str(Path(config.data).resolve()), "--data.downscale", str(downscale),
        "--field", config.field, *(["--sampler", config.sampler] if config.sampler else []), "--init", config.init,
        "--max-steps", "1000000", "--max-time", str(config.minutes * 60),
        "--eval-every", "0", "--eval-views", str(config.eval_views),
        "--eval-at-seconds", *[str(m * 60) for m in config.marks],
        "--output", str(run_dir), "--no-progress", *config.extra,
    ]  # fmt: skip
    if threads:
        args += ["--threads", str(threads)]
    env = dict(os.environ)
    if tree is not None:  # run in the tree: "python -m" puts the working folder first on the path
        env["PYTHONPATH"] = os.pathsep.join([str(tree), str(tree / "plugins"), env.get("PYTHONPATH", "")])
    print(f"[{build}] " + " ".join(args[2:]), flush=True)
    log = open(out / f"{run_dir.name}.log", "w")
    proc = subprocess.Popen(args, env=env, cwd=str(tree or REPO), stdout=log, stderr=subprocess.STDOUT)
    return run_dir, proc, log


def collect(run_dir: Path, downscale: int, build: str) -> Dict:
    history = json.loads((run_dir / "history.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    train_rows = history["train"][len(history["train"]) // 10 :]  # skip the warm-up
    return {
        "downscale": downscale,
        "build": build,
        "eval": history["eval"],
        "final_psnr": metrics["mean"]["psnr"],
        "final_ssim": metrics["mean"]["ssim"],
        "steps": metrics["step"],
        "rays_per_s": statistics.median(r["rays_per_s"] for r in train_rows),
        "samples_per_s": statistics.median(r["samples_per_s"] for r in train_rows),
        "peak_memory_mb": metrics["peak_memory_mb"],
    }


def run_downscale(config: BenchConfig, downscale: int, out: Path, baseline: Optional[Tuple[str, Path]]) -> List[Dict]:
    """This build (and the baseline, at the same time) at one downscale."""
    builds = [("this", None)] + ([baseline] if baseline else [])
    threads = config.threads or (max(1, (os.cpu_count() or 2) // len(builds)) if baseline else 0)
    running = [(build, *start_one(config, downscale, out, build, tree, threads)) for build, tree in builds]
    results = []
    for build, run_dir, proc, log in running:
        code = proc.wait()
        log.close()
        if code != 0:
            raise SystemExit(f"bench_scene: the {build} run failed (exit {code}); see {log.name}")
        results.append(collect(run_dir, downscale, build))
    return results


def psnr_at(evals: List[Dict], minutes: float) -> float:
    """PSNR of the first evaluation at or after ``minutes`` of training."""
    rows = [r for r in evals if r["time"] >= minutes * 60 - 1e-6]
    return rows[0]["psnr"] if rows else float("nan")


def main(config: BenchConfig) -> None:
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    baseline = None
    if config.baseline:
        tree = export_baseline(config.baseline, out)
        baseline = (tree.name, tree)
    peak = machine_peak.measure()
    print(machine_peak.describe(peak), flush=True)
    results = [r for ds in config.downscales for r in run_downscale(config, ds, out, baseline)]
    marks = " ".join(f"{f'PSNR@{m:g}min':>11}" for m in config.marks)
    print(
        f"\n{'downscale':>9} {'build':>16} {marks} {'final(all)':>10} {'SSIM':>6} {'steps':>6} {'rays/s':>8} "
        f"{'samples/s':>10} {'of sgemm':>8} {'of gather':>9} {'peak MB':>8}"
    )
    for r in results:
        cells = " ".join(f"{psnr_at(r['eval'], m):>11.2f}" for m in config.marks)
        frac = machine_peak.fractions(r["samples_per_s"], peak)
        print(
            f"{r['downscale']:>9} {r['build']:>16} {cells} {r['final_psnr']:>10.2f} {r['final_ssim']:>6.3f} {r['steps']:>6} "
            f"{r['rays_per_s']:>8.0f} {r['samples_per_s']:>10.0f} {frac['of_sgemm']:>8.1%} {frac['of_gather']:>9.1%} {r['peak_memory_mb']:>8.0f}"
        )
    if baseline:
        print(f"\nthis build against {baseline[0]} (side by side, same machine):")
        for ds in config.downscales:
            this, base = [next(r for r in results if r["downscale"] == ds and r["build"] == b) for b in ("this", baseline[0])]
            diffs = " ".join(f"PSNR@{m:g}min {psnr_at(this['eval'], m) - psnr_at(base['eval'], m):+.2f} dB" for m in config.marks)
            print(
                f"  downscale {ds}: samples/s x{this['samples_per_s'] / base['samples_per_s']:.2f}, rays/s "
                f"x{this['rays_per_s'] / base['rays_per_s']:.2f}, steps x{this['steps'] / base['steps']:.2f}, {diffs}, "
                f"final {this['final_psnr'] - base['final_psnr']:+.2f} dB, peak memory x{this['peak_memory_mb'] / base['peak_memory_mb']:.2f}"
            )
    (out / "scene_results.json").write_text(json.dumps({"machine": peak, "threads": torch.get_num_threads(), "runs": results}, indent=2))
    plot(results, out / "scene_psnr_vs_time.png", config)


def plot(results: List[Dict], path: Path, config: BenchConfig) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in results:
        style = "o-" if r["build"] == "this" else "s--"
        label = f"downscale {r['downscale']}" + ("" if r["build"] == "this" else f", {r['build']}")
        ax.plot([e["time"] / 60 for e in r["eval"]], [e["psnr"] for e in r["eval"]], style, label=label)
    ax.set_xlabel("training time (min)")
    ax.set_ylabel("held-out PSNR (dB)")
    ax.set_title(f"{Path(config.data).name}: {config.field} / {config.sampler or 'default sampler'}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"wrote {path}")


if __name__ == "__main__":
    main(tyro.cli(BenchConfig))
