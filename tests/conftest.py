"""Shared test helpers: where the real data lives, and tiny training settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nfplug.testing import smooth_image, write_png

__all__ = ["DEMO_STEPS", "LEGO", "REPO", "SHARED_DATA", "TINY_TRAIN", "install_package", "needs_lego", "smooth_image", "write_png"]

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
LEGO = SHARED_DATA / "nerf_synthetic" / "lego"

needs_lego = pytest.mark.skipif(not (LEGO / "transforms_train.json").is_file(), reason=f"real data not found at {LEGO}")

# Small enough for a test, still a real NeRF run on the demo scene.
TINY_TRAIN = ["--batch-size", "512", "--render.grid-resolution", "32", "--eval-every", "0", "--no-progress"]


def install_package(src: Path, site: Path) -> dict:
    """``pip install`` the package folder ``src`` into ``site`` (no dependencies, no build
    isolation: offline) and return an environment whose PYTHONPATH finds it."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(site), str(src)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))


@pytest.fixture(autouse=True, scope="session")
def _demo_cache(tmp_path_factory):
    """One demo scene per test session, outside the user's home."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NFPLUG_CACHE", str(tmp_path_factory.getbasetemp() / "nfplug-cache"))
        yield


DEMO_STEPS = 300


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    """A 300-step run of the demo scene, shared by the tests that read a trained scene (eval,
    render, export, the viewer)."""
    from nfplug.cli import main

    run = tmp_path_factory.mktemp("demo") / "run"
    # The default 128^3 occupancy grid, not TINY_TRAIN's 32^3: the warm-up's 4x steps (the first 256
    # of these 300 steps) are 2 cells of a 32^3 grid long, which cost 1.3 dB here (README).
    options = [*TINY_TRAIN, "--batch-size", "1024", "--render.grid-resolution", "128"]
    assert main(["train", "--max-steps", str(DEMO_STEPS), "--output", str(run), *options]) == 0
    return run
