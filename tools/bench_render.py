"""Render time per frame of a trained scene run: the held-out cameras at the training resolution
and at ``--scales`` multiples of it (lego at 200x200: 4 gives 800x800).

Usage (from the repo root)::

    python tools/bench_render.py --run runs/lego-ngp-uniform-... --baseline-tree bench_out/scene/baseline-89fedf7

What is timed is ``task.render_camera`` (what ``nfplug render`` and evaluation call per view), after
one warm-up view, median over ``--views`` views. ``--baseline-tree`` (a source tree exported by
``tools/bench_scene.py --baseline``) renders the same run with that build in a subprocess
afterwards and prints the ratios. Prints a table and writes ``render_times.json`` to ``--out``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

import tyro


@dataclass(frozen=True)
class BenchConfig:
    run: str
    """A scene run folder written by nfplug train."""
    scales: Tuple[float, ...] = (1.0, 4.0)
    """Multiples of the training resolution."""
    views: int = 5
    """Held-out views timed per scale (the median is reported)."""
    threads: int = 0
    """Torch threads (0: torch's default, every core)."""
    baseline_tree: Optional[str] = None
    """Source tree of an earlier build to time the same run with (bench_scene.py --baseline exports one)."""
    out: str = "bench_out/render"
    json_only: bool = False
    """Print only the measurements as JSON (used for the baseline subprocess)."""


def measure(config: BenchConfig) -> Dict[str, Dict[str, float]]:
    import torch

    from nfplug.rendering.paths import camera_path
    from nfplug.rendering.video import scaled
    from nfplug.training.run import load_run

    if config.threads:
        torch.set_num_threads(config.threads)
    run = load_run(Path(config.run), "cpu")
    split = run.task.eval_split_name
    results = {}
    for scale in config.scales:
        cameras = camera_path(run.task, split, 0)
        if scale != 1.0:
            cameras = scaled(cameras, scale)
        n = min(config.views + 1, cameras.c2w.shape[0])
        times = []
        for i in range(n):
            start = time.perf_counter()
            run.task.render_camera(run.field, cameras, i)
            times.append(time.perf_counter() - start)
        size = f"{cameras.width}x{cameras.height}"
        results[size] = {"scale": scale, "seconds": statistics.median(times[1:] if n > 1 else times)}
    return results


def main(config: BenchConfig) -> None:
    ours = measure(config)
    if config.json_only:
        print(json.dumps(ours))
        return
    base = None
    if config.baseline_tree:
        tree = Path(config.baseline_tree).resolve()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tree), str(tree / "plugins")]))
        args = [sys.executable, str(Path(__file__).resolve()), "--run", str(Path(config.run).resolve()), "--views", str(config.views),
                "--threads", str(config.threads), "--scales", *[str(s) for s in config.scales], "--json-only"]  # fmt: skip
        done = subprocess.run(args, env=env, cwd=str(tree), check=True, capture_output=True, text=True)
        base = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{'view':>10} {'this build':>11}" + (f" {'baseline':>9} {'speed-up':>9}" if base else ""))
    for size, r in ours.items():
        line = f"{size:>10} {r['seconds']:>10.3f}s"
        if base:
            line += f" {base[size]['seconds']:>8.3f}s {base[size]['seconds'] / r['seconds']:>8.2f}x"
        print(line)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "render_times.json").write_text(json.dumps({"this": ours, "baseline": base, "baseline_tree": config.baseline_tree}, indent=2))


if __name__ == "__main__":
    main(tyro.cli(BenchConfig))
