"""How much the live viewer slows training, and how fast its frames arrive.

Trains the demo scene three ways, one after the other in one run, and prints a table:

- ``no viewer``: ``nfplug train``;
- ``viewer, nobody looking``: ``nfplug train --viewer``, no browser connected;
- ``viewer, orbiting``: ``nfplug train --viewer`` with headless Chromium (Debian's, driven by
  Playwright) dragging the camera around all the time;
- ``browser only``: ``nfplug train`` while the same browser orbits a bare viser page (a background
  image, no nfplug renders) served by this script: what the browser alone takes from training.

Training time is the run's own ``train_seconds`` (the steps, including any wait for the viewer's
lock). On these 2-core machines the browser runs on the same two cores and draws WebGL in
software, so ``orbiting`` also measures Chromium's own use of the CPU: a browser on another
machine (the usual case, over SSH) costs training less. Writes ``bench_viewer.png``.

    python tools/bench_viewer.py --steps 400 --share 0.5
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader", "--use-angle=swiftshader", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def train(out: Path, steps: int, viewer: bool, share: float, orbit: bool, bare_page: bool = False) -> dict:
    argv = [sys.executable, "-u", "-m", "nfplug", "train", "--max-steps", str(steps), "--no-progress", "--eval-every", "0",
            "--final-eval-views", "1", "--output", str(out)]
    if viewer:
        argv += ["--viewer", "--viewer-port", "0", "--viewer-share", str(share)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    frames: list = []
    lines: list = []
    url = None
    browsing = None
    bare = None
    if bare_page:
        import numpy as np
        import viser

        with contextlib.redirect_stdout(io.StringIO()):  # viser's banner
            bare = viser.ViserServer(host="127.0.0.1", port=0, verbose=False)
        picture = (np.random.default_rng(0).random((300, 400, 3)) * 255).astype(np.uint8)
        bare.on_client_connect(lambda client: client.scene.set_background_image(picture, format="jpeg"))
        browsing = threading.Thread(target=_orbit, args=(f"http://127.0.0.1:{bare.get_port()}", proc, frames), daemon=True)
        browsing.start()
    for line in proc.stdout:
        lines.append(line)
        found = re.search(r"viewer at (http://\S+)", line)
        if found and orbit:
            url = found.group(1)
            browsing = threading.Thread(target=_orbit, args=(url, proc, frames), daemon=True)
            browsing.start()
    proc.wait()
    if browsing is not None:
        browsing.join(timeout=30)
    if bare is not None:
        with contextlib.redirect_stdout(io.StringIO()):
            bare.stop()
    if proc.returncode != 0:
        raise SystemExit("".join(lines[-20:]))
    metrics = json.loads((out / "metrics.json").read_text())
    closed = re.search(r"viewer closed \((\d+) frame\(s\) shown, ([\d.]+) s of rendering in ([\d.]+) s", "".join(lines))
    shown, busy = (int(closed.group(1)), float(closed.group(2))) if closed else (0, 0.0)
    return {"seconds": metrics["train_seconds"], "psnr": metrics["mean"]["psnr"], "frames": frames, "shown": shown, "busy": busy}


def _orbit(url: str, proc: subprocess.Popen, frames: list) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 800, "height": 600})
        page.goto(url, wait_until="load")
        seen = ""
        x = 200
        while proc.poll() is None:
            try:
                page.mouse.move(x, 400)
                page.mouse.down()
                x = 600 if x == 200 else 200
                page.mouse.move(x, 380, steps=8)
                page.mouse.up()
                text = page.inner_text("body")
            except Exception:  # noqa: BLE001 - the server went away at the end of training
                break
            found = re.search(r"frame: (\d+)x(\d+) in ([\d.]+) s", text)
            if found and found.group(0) != seen:
                seen = found.group(0)
                frames.append((int(found.group(1)), int(found.group(2)), float(found.group(3))))
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--share", type=float, default=0.5)
    parser.add_argument("--output", default="bench_viewer.png")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        runs = [("no viewer", False, False, False), ("viewer, nobody looking", True, False, False), ("viewer, orbiting", True, True, False),
                ("browser only", False, False, True)]
        for name, viewer, orbit, bare in runs:
            start = time.perf_counter()
            result = train(Path(tmp) / name.replace(" ", "_").replace(",", ""), args.steps, viewer, args.share, orbit, bare)
            result.update(name=name, wall=time.perf_counter() - start)
            rows.append(result)
    base = rows[0]["seconds"]
    print(f"demo scene, {args.steps} steps, --viewer-share {args.share}")
    print(f"{'':<24}{'training s':>11}{'x slower':>10}{'PSNR':>8}{'shown':>7}{'rendering s':>13}{'median frame s':>16}{'median size':>13}")
    for r in rows:
        frames = sorted(r["frames"], key=lambda f: f[2])
        median = frames[len(frames) // 2] if frames else None
        print(
            f"{r['name']:<24}{r['seconds']:>11.1f}{r['seconds'] / base:>10.2f}{r['psnr']:>8.2f}{r['shown']:>7}{r['busy']:>13.1f}"
            f"{(f'{median[2]:.2f}' if median else '-'):>16}{(f'{median[0]}x{median[1]}' if median else '-'):>13}"
        )
    print("shown: frames the viewer sent; rendering s: its time holding the lock (training waits that long);")
    print("median frame: of the frames the browser displayed, sampled after each drag")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    ax.barh([r["name"] for r in rows][::-1], [r["seconds"] for r in rows][::-1], color=["#aaa", "#c44", "#48c", "#888"])
    ax.set_xlabel(f"training seconds, {args.steps} steps (demo scene)")
    fig.tight_layout()
    fig.savefig(args.output, dpi=120)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
