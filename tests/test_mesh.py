"""Mesh and point-cloud export (nfplug.mesh): the pieces on hand-made cases, and bad input.

The whole export of a trained demo run is in test_train_e2e.py (it reuses that run)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import TINY_TRAIN, smooth_image, write_png
from nfplug.cli import main
from nfplug.data.demo import signed_distance
from nfplug.errors import NfplugError
from nfplug.mesh import BYTES_PER_VOXEL, MeshResult, check_lattice_memory, default_threshold, sample_surface


def test_default_threshold_makes_one_marching_step_half_opaque() -> None:
    step = 0.02
    sigma = default_threshold(step)
    assert 1.0 - math.exp(-sigma * step) == pytest.approx(0.5)


def test_surface_samples_follow_triangle_area_and_stay_on_the_triangles() -> None:
    # Two triangles in z = 0: areas 0.5 and 1.5 (x in [0, 1] and in [2, 5]).
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [2, 0, 0], [5, 0, 0], [2, 1, 0]], np.float32)
    mesh = MeshResult(vertices, np.array([[0, 1, 2], [3, 4, 5]]), np.zeros((6, 3), np.uint8), 1.0, (0,) * 6)
    points = sample_surface(mesh, 40000, np.random.default_rng(0))
    assert (points[:, 2] == 0).all()
    first = points[:, 0] <= 1.0
    assert first.mean() == pytest.approx(0.25, abs=0.01)
    a, b = points[first], points[~first]
    assert (a[:, 0] + a[:, 1] <= 1 + 1e-6).all() and (a >= -1e-6).all()
    assert ((b[:, 0] - 2) / 3 + b[:, 1] <= 1 + 1e-6).all() and (b[:, 0] >= 2 - 1e-6).all()
    # Uniform inside a triangle: the centroid of the samples is the triangle's centroid.
    assert a[:, :2].mean(0) == pytest.approx([1 / 3, 1 / 3], abs=0.01)


def test_the_demo_scene_signed_distance_on_hand_points() -> None:
    # The red sphere: centre (0.35, -0.35, 0.15), radius 0.35; the table top's upper face at z = -0.2.
    assert signed_distance(np.array([[0.35, -0.35, 0.15]]))[0] == pytest.approx(-0.35)
    assert signed_distance(np.array([[0.35, -0.35, 0.6]]))[0] == pytest.approx(0.1)
    assert signed_distance(np.array([[0.0, -0.9, -0.1]]))[0] == pytest.approx(0.1)
    assert signed_distance(np.array([[0.0, 0.0, 1.4]]))[0] > 0.3


def test_memory_is_checked_before_any_work() -> None:
    check_lattice_memory(256, 24 * 2**30)  # fits
    check_lattice_memory(256, None)  # unknown: not refused
    with pytest.raises(NfplugError, match=r"--resolution 2048: needs about .* GB of memory .* available; use --resolution \d+ or less"):
        check_lattice_memory(2048, 8 * 2**30)
    needed = BYTES_PER_VOXEL * 258**3
    with pytest.raises(NfplugError):
        check_lattice_memory(256, int(needed))  # more than 80% of what is available


@pytest.fixture(scope="module")
def image_run(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("mesh")
    write_png(root / "img.png", smooth_image(16, 16))
    run = root / "run"
    assert main(["train", "--data", str(root / "img.png"), "--field", "siren", "--max-steps", "2", "--no-progress", "--output", str(run)]) == 0
    return str(run)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--format", "mesh"], "--format: mesh and points export a scene; this run trained an image"),
        (["--format", "points", "--points", "0"], "--points: must be at least 1"),
        (["--format", "mesh", "--resolution", "4"], "--resolution: must be at least 8"),
        (["--format", "mesh", "--resolution", "100000"], "--resolution: at most 4096"),
        (["--format", "mesh", "--threshold", "-1"], "--threshold: must be a positive density"),
        (["--format", "mesh", "--threshold", "nan"], "--threshold: must be a positive density"),
        (["--format", "stream", "--parts", "1"], "--parts: only for --format mesh or points"),
        (["--format", "obj"], "--format"),
    ],
)
def test_bad_export_options_are_one_line_errors(image_run: str, args, message, capsys) -> None:
    assert main(["export", image_run, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_a_folder_that_is_not_a_run_is_one_line(tmp_path, capsys) -> None:
    assert main(["export", str(tmp_path), "--format", "mesh"]) == 2
    err = capsys.readouterr().err.strip()
    assert "is not an nfplug run directory" in err and len(err.splitlines()) == 1


def test_a_forward_facing_ndc_run_says_how_to_get_a_mesh(tmp_path, capsys) -> None:
    from test_paths import make_forward_llff

    make_forward_llff(tmp_path / "scene")
    run = tmp_path / "run"
    argv = ["train", "--data", str(tmp_path / "scene"), "--max-steps", "1", *TINY_TRAIN, "--field.log2-hashmap-size", "12", "--render.rays", "ndc", "--output", str(run)]
    assert main(argv) == 0
    assert main(["export", str(run), "--format", "mesh", "--resolution", "16"]) == 2
    assert "--render.rays world" in capsys.readouterr().err
