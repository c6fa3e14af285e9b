"""Shared test helpers: where the real data lives, and tiny training settings."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
LEGO = SHARED_DATA / "nerf_synthetic" / "lego"

needs_lego = pytest.mark.skipif(not (LEGO / "transforms_train.json").is_file(), reason=f"real data not found at {LEGO}")

# Small enough for a test, still a real NeRF run on the demo scene.
TINY_TRAIN = ["--batch-size", "512", "--render.grid-resolution", "32", "--eval-every", "0", "--no-progress"]


@pytest.fixture(autouse=True, scope="session")
def _demo_cache(tmp_path_factory):
    """One demo scene per test session, outside the user's home."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NFPLUG_CACHE", str(tmp_path_factory.getbasetemp() / "nfplug-cache"))
        yield
