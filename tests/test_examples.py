"""examples/: each third-party package installs, is listed, trains a few steps, and passes its own tests."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY_TRAIN, install_package, smooth_image, write_png

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

# (folder, plugin name, kind, distribution, training arguments)
CASES = [
    ("nfplug-fourier", "fourier", "field", ["--field", "fourier", "--field.n-features", "32", "--field.hidden-dim", "32", *TINY_TRAIN]),
    ("nfplug-orthogonal", "orthogonal", "init", ["--field", "mlp", "--init", "orthogonal", "--data", "IMAGE", "--eval-every", "0", "--no-progress"]),
    ("nfplug-patches", "patch", "sampler", ["--sampler", "patch", "--sampler.patch-size", "4", *TINY_TRAIN]),
]


def test_every_example_is_covered():
    assert sorted(p.name for p in EXAMPLES.iterdir() if (p / "pyproject.toml").is_file()) == sorted(c[0] for c in CASES)


@pytest.mark.parametrize("folder, name, kind, args", CASES, ids=[c[0] for c in CASES])
def test_example_installs_lists_trains_and_passes_its_tests(tmp_path, folder, name, kind, args):
    src = tmp_path / folder
    shutil.copytree(EXAMPLES / folder, src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
    env = install_package(src, tmp_path / "site")

    def nfplug(*argv):
        return subprocess.run([sys.executable, "-m", "nfplug.cli", *argv], cwd=tmp_path, env=env, capture_output=True, text=True)

    listing = nfplug("plugins")
    row = next(line for line in listing.stdout.splitlines() if line.startswith(name + " "))
    assert row.split()[:4] == [name, kind, folder, "ok"], row
    image = write_png(tmp_path / "image.png", smooth_image(24, 32))
    argv = [str(image) if a == "IMAGE" else a for a in args]
    run = tmp_path / "run"
    result = nfplug("train", *argv, "--max-steps", "5", "--threads", "1", "--output", str(run))
    assert result.returncode == 0, result.stderr[-2000:]
    assert (run / "metrics.json").is_file()
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=src, env=env, capture_output=True, text=True)
    assert tests.returncode == 0, tests.stdout[-3000:]
