"""A real third-party plugin package: built in a temp folder, pip-installed, found, used."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import TINY_TRAIN

PYPROJECT = """
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "nfplug-patches"
version = "0.1.0"
dependencies = ["nfplug"]

[project.entry-points."nfplug.samplers"]
patch = "nfplug_patches.sampler:PatchSampler"
"""

SAMPLER = '''
from __future__ import annotations

from dataclasses import dataclass

import torch

from nfplug.api import RayBatch, Sampler


@dataclass(frozen=True)
class PatchConfig:
    patch_size: int = 8
    """Side of each square patch, in pixels."""


class PatchSampler(Sampler):
    """Random square patches of pixels (for patch-based losses)."""

    Config = PatchConfig
    description = "random square pixel patches"

    def sample(self, step: int, generator: torch.Generator) -> RayBatch:
        ctx, p = self.context, self.config.patch_size
        n_patches = max(1, ctx.batch_size // (p * p))
        image_index = torch.randint(0, ctx.n_images, (n_patches,), generator=generator)
        x0 = torch.randint(0, ctx.width - p + 1, (n_patches, 1), generator=generator)
        y0 = torch.randint(0, ctx.height - p + 1, (n_patches, 1), generator=generator)
        dy, dx = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
        xy = torch.stack([x0 + dx.reshape(1, -1), y0 + dy.reshape(1, -1)], dim=-1).reshape(-1, 2) + 0.5
        return RayBatch(
            image_index=image_index.repeat_interleave(p * p).to(ctx.device),
            pixel_xy=xy.float().to(ctx.device),
            weight=torch.ones(xy.shape[0], device=ctx.device),
        )
'''


def _install_plugin(tmp_path: Path) -> dict:
    src = tmp_path / "nfplug-patches"
    (src / "nfplug_patches").mkdir(parents=True)
    (src / "pyproject.toml").write_text(textwrap.dedent(PYPROJECT))
    (src / "nfplug_patches" / "__init__.py").write_text("")
    (src / "nfplug_patches" / "sampler.py").write_text(SAMPLER)
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(site), str(src)],
        check=True,
        capture_output=True,
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
    return env


def _nfplug(args, env, cwd):
    return subprocess.run([sys.executable, "-m", "nfplug.cli", *args], env=env, cwd=cwd, capture_output=True, text=True)


def test_installed_plugin_is_listed_and_trains(tmp_path):
    env = _install_plugin(tmp_path)
    listing = _nfplug(["plugins"], env, tmp_path)
    assert listing.returncode == 0, listing.stderr
    row = next(line for line in listing.stdout.splitlines() if line.startswith("patch "))
    assert "sampler" in row and "nfplug-patches" in row and " ok " in row and "random square pixel patches" in row
    help_text = _nfplug(["train", "--sampler", "patch", "--help"], env, tmp_path)
    assert "--sampler.patch-size" in help_text.stdout and "patch" in help_text.stdout

    run = tmp_path / "run"
    result = _nfplug(
        ["train", "--sampler", "patch", "--sampler.patch-size", "4", "--max-steps", "5", "--output", str(run), *TINY_TRAIN],
        env,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (run / "metrics.json").is_file()
    assert '"sampler": "patch"' in (run / "config.json").read_text()


def test_plugin_that_raises_on_import_does_not_break_listing(tmp_path):
    env = _install_plugin(tmp_path)
    # Break the installed plugin's module: `nfplug plugins` must still list everything else.
    (tmp_path / "site" / "nfplug_patches" / "sampler.py").write_text("raise RuntimeError('boom at import')\n")
    listing = _nfplug(["plugins"], env, tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert "FAILED" in next(line for line in listing.stdout.splitlines() if line.startswith("patch "))
    assert "uniform" in listing.stdout and "ngp" in listing.stdout
    assert "'patch' from distribution 'nfplug-patches' failed to load" in listing.stderr and "boom at import" in listing.stderr
    # Other commands still work with the broken plugin installed.
    assert _nfplug(["train", "--help"], env, tmp_path).returncode == 0
