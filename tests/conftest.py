"""Shared test helpers: where the real data lives, and tiny training settings."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
LEGO = SHARED_DATA / "nerf_synthetic" / "lego"

needs_lego = pytest.mark.skipif(not (LEGO / "transforms_train.json").is_file(), reason=f"real data not found at {LEGO}")

# Small enough for a test, still a real NeRF run on the demo scene.
TINY_TRAIN = ["--batch-size", "512", "--render.grid-resolution", "32", "--eval-every", "0", "--no-progress"]


def smooth_image(height: int, width: int, freqs: Sequence[float] = (6.0, 5.0, 4.0)) -> np.ndarray:
    """A smooth synthetic RGB image in [0.1, 0.9], (height, width, 3)."""
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    fx, fy, fd = freqs
    return np.stack([0.5 + 0.4 * np.sin(fx * x), 0.5 + 0.4 * np.cos(fy * y), 0.5 + 0.3 * np.sin(fd * (x + y))], axis=-1)


def write_png(path: Path, rgb: np.ndarray) -> Path:
    """Write an RGB image in [0, 1] as an 8-bit PNG (OpenCV wants BGR)."""
    if not cv2.imwrite(str(path), (rgb[..., ::-1] * 255).astype(np.uint8)):
        raise OSError(f"could not write {path}")
    return path


@pytest.fixture(autouse=True, scope="session")
def _demo_cache(tmp_path_factory):
    """One demo scene per test session, outside the user's home."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NFPLUG_CACHE", str(tmp_path_factory.getbasetemp() / "nfplug-cache"))
        yield
