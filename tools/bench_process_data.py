"""``nfplug process-data`` on real captures: time per stage, images registered, reprojection error,
and how well the recovered poses agree with the poses that ship with the data.

Inputs (``../shared/data``):

- ``fern``: LLFF's fern, 20 photos at 504x378 (``images_8/``); reference: ``poses_bounds.npy``.
- ``cup``: the cup_360 capture, 77 photos at 800x600; reference: its COLMAP model (``sparse/0``).
- ``fox``: instant-ngp's fox, 67 phone photos at 1080x1920; reference: its ``transforms.json``.
- ``cup-video``: an mp4 made here from the cup photos in capture order (each photo held for
  ``--video-hold`` frames, H.264), processed with ``--num-frames 77`` and sequential matching;
  every window of frames comes from one photo, so frame i is compared with photo i.

Pose agreement: the recovered camera centres are aligned to the reference ones by a similarity
(Umeyama: scale, rotation, translation); then the rotation error is the angle between each
aligned camera orientation and the reference one, and the position error is the distance between
aligned and reference centres divided by the reference cameras' spread (RMS distance from their
mean); the table gives the median and the worst image. Prints a table and writes ``results.json`` and ``process_data_times.png``.

Usage (from the repo root)::

    python tools/bench_process_data.py --out bench_out/process_data
    python tools/bench_process_data.py --inputs fern
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch
import tyro

from nfplug.data.cameras import opengl_to_opencv
from nfplug.data.colmap_model import camera_to_world, read_model

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@dataclass(frozen=True)
class BenchConfig:
    inputs: Tuple[str, ...] = ("fern", "cup", "cup-video", "fox")
    """Which captures: fern, cup, cup-video, fox."""
    video_hold: int = 3
    """Frames each cup photo is held for in the video."""
    out: str = "bench_out/process_data"
    extra: str = ""
    """Extra options for every ``nfplug process-data`` call (e.g. "--max-image-size 800")."""


def numeric_order(paths: List[Path]) -> List[Path]:
    """Photos in capture order: by the number in the name when every name has one."""
    if all(re.search(r"\d+", p.stem) for p in paths):
        return sorted(paths, key=lambda p: int(re.findall(r"\d+", p.stem)[-1]))
    return sorted(paths)


def llff_reference(root: Path) -> Dict[str, np.ndarray]:
    """Image name -> OpenCV c2w ``[3, 4]`` from ``poses_bounds.npy`` (images in name order)."""
    poses = np.load(root / "poses_bounds.npy")[:, :15].reshape(-1, 3, 5)
    names = sorted(p.name for p in (root / "images_8").iterdir())
    c2w = np.stack([poses[:, :, 1], poses[:, :, 0], -poses[:, :, 2], poses[:, :, 3]], axis=-1)
    return dict(zip(names, c2w))


def colmap_reference(root: Path) -> Dict[str, np.ndarray]:
    model = read_model(root / "sparse" / "0")
    return {image.name: camera_to_world(image) for image in model.images.values()}


def recovered_poses(scene: Path) -> Dict[str, np.ndarray]:
    """Image name -> OpenCV c2w ``[3, 4]`` from a ``transforms.json`` (OpenGL matrices)."""
    meta = json.loads((scene / "transforms.json").read_text())
    out = {}
    for frame in meta["frames"]:
        gl = np.asarray(frame["transform_matrix"], dtype=np.float64)[:3]
        out[Path(frame["file_path"]).name] = opengl_to_opencv(torch.from_numpy(gl)).numpy()
    return out


def umeyama(source: np.ndarray, target: np.ndarray) -> Tuple[float, np.ndarray, np.ndarray]:
    """Similarity ``(s, R, t)`` minimising ``sum |s R source_i + t - target_i|^2`` (Umeyama 1991)."""
    mu_s, mu_t = source.mean(0), target.mean(0)
    a, b = source - mu_s, target - mu_t
    U, D, Vt = np.linalg.svd(b.T @ a / len(source))
    S = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        S[2, 2] = -1
    R = U @ S @ Vt
    s = float(np.trace(np.diag(D) @ S) / (a**2).sum(1).mean())
    return s, R, mu_t - s * R @ mu_s


def pose_agreement(recovered: Dict[str, np.ndarray], reference: Dict[str, np.ndarray]) -> Dict[str, float]:
    names = sorted(set(recovered) & set(reference))
    est = np.stack([recovered[n] for n in names])
    ref = np.stack([reference[n] for n in names])
    s, R, t = umeyama(est[:, :, 3], ref[:, :, 3])
    centres = est[:, :, 3] @ (s * R).T + t
    spread = float(np.sqrt(((ref[:, :, 3] - ref[:, :, 3].mean(0)) ** 2).sum(1).mean()))
    position = np.linalg.norm(centres - ref[:, :, 3], axis=1) / spread
    relative = np.einsum("ij,njk,nlk->nil", R, est[:, :, :3], ref[:, :, :3])  # R R_est R_ref^T
    angle = np.degrees(np.arccos(np.clip((np.trace(relative, axis1=1, axis2=2) - 1) / 2, -1, 1)))
    return {
        "compared": len(names),
        "rotation_error_deg_median": float(np.median(angle)),
        "rotation_error_deg_max": float(angle.max()),
        "position_error_rel_median": float(np.median(position)),
        "position_error_rel_max": float(position.max()),
        "worst": names[int(position.argmax())],
    }


def make_video(photos: List[Path], path: Path, hold: int) -> None:
    import imageio.v2 as imageio

    with imageio.get_writer(path, fps=30, codec="libx264", quality=8, macro_block_size=1) as writer:
        for photo in photos:
            frame = imageio.imread(photo)
            for _ in range(hold):
                writer.append_data(frame)


def run(input_path: Path, scene: Path, options: List[str]) -> Tuple[float, str]:
    command = [sys.executable, "-m", "nfplug.cli", "process-data", str(input_path), "--output", str(scene), "--overwrite", *options]
    print("$", " ".join(command), flush=True)
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"process-data failed on {input_path}: {result.stderr.strip()[-2000:]}")
    return seconds, result.stdout


def stage_times(scene: Path) -> Dict[str, float]:
    stats = scene / "process_data.json"
    return json.loads(stats.read_text()).get("stage_seconds", {}) if stats.is_file() else {}


def bench_one(name: str, config: BenchConfig, out: Path) -> Dict:
    extra = config.extra.split()
    if name == "fern":
        root = SHARED / "nerf_llff_data" / "fern"
        seconds, stdout = run(root / "images_8", out / "fern", extra)
        reference, scene, given = llff_reference(root), out / "fern", 20
    elif name == "cup":
        root = SHARED / "captures" / "cup_360"
        seconds, stdout = run(root / "images", out / "cup", extra)
        reference, scene, given = colmap_reference(root), out / "cup", 77
    elif name == "fox":
        root = SHARED / "captures" / "fox"
        seconds, stdout = run(root / "images", out / "fox", extra)
        reference, scene, given = recovered_poses(root), out / "fox", 67
    elif name == "cup-video":
        root = SHARED / "captures" / "cup_360"
        photos = numeric_order([p for p in (root / "images").iterdir() if p.suffix.lower() == ".jpg"])
        video = out / "cup.mp4"
        make_video(photos, video, config.video_hold)
        seconds, stdout = run(video, out / "cup-video", ["--num-frames", str(len(photos)), *extra])
        by_photo = colmap_reference(root)
        reference = {f"frame_{i + 1:05d}.png": by_photo[p.name] for i, p in enumerate(photos)}
        scene, given = out / "cup-video", len(photos)
    else:
        raise SystemExit(f"--inputs: unknown input '{name}' (fern, cup, cup-video, fox)")
    meta = json.loads((scene / "transforms.json").read_text())
    row = {
        "input": name,
        "given": given,
        "registered": len(meta["frames"]),
        "reprojection_px": meta.get("mean_reprojection_error"),
        "seconds": seconds,
        "stages": stage_times(scene),
        "focal": meta.get("fl_x"),
        **pose_agreement(recovered_poses(scene), reference),
    }
    print(stdout.strip().splitlines()[-1] if stdout.strip() else "", flush=True)
    return row


def plot(rows: List[Dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = list(dict.fromkeys(s for r in rows for s in r["stages"]))  # in the order they ran
    fig, ax = plt.subplots(figsize=(7, 3.5))
    left = np.zeros(len(rows))
    for stage in stages:
        values = np.array([r["stages"].get(stage, 0.0) for r in rows])
        ax.barh([r["input"] for r in rows], values, left=left, label=stage)
        left += values
    ax.set_xlabel("seconds (2 CPU cores)")
    ax.set_title("nfplug process-data: wall time per stage")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(config: BenchConfig) -> None:
    if not SHARED.is_dir():
        raise SystemExit(f"{SHARED}: the shared data is not here")
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [bench_one(name, config, out) for name in config.inputs]
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    header = "| input | registered | reprojection | total | per stage | rotation error (median / max) | position error (median / max, of the camera spread) |"
    print("\n" + header + "\n|" + "---|" * 7)
    for r in rows:
        stages = ", ".join(f"{k} {v:.0f} s" for k, v in r["stages"].items())
        print(
            f"| {r['input']} | {r['registered']} of {r['given']} | {r['reprojection_px']:.2f} px | {r['seconds']:.0f} s | {stages} | "
            f"{r['rotation_error_deg_median']:.2f} / {r['rotation_error_deg_max']:.2f} deg | "
            f"{100 * r['position_error_rel_median']:.2f}% / {100 * r['position_error_rel_max']:.2f}% ({r['worst']}) |"
        )
    plot(rows, out / "process_data_times.png")
    print(f"\nwrote {out / 'results.json'} and {out / 'process_data_times.png'}")


if __name__ == "__main__":
    main(tyro.cli(BenchConfig))
