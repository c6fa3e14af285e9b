"""The live viewer (nfplug.viewer): camera conventions, frame sizes, ports, bad input, and a real
browser (headless Chromium driven by Playwright) on `nfplug view` of a trained demo run."""

from __future__ import annotations

import math
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, TINY_TRAIN
from nfplug.cli import main
from nfplug.data.cameras import generate_rays
from nfplug.errors import NfplugError
from nfplug.viewer import RateMeter, camera_pose, check_port, frame_size, render_frame, vertical_fov, viewer_camera


def test_camera_pose_hand_cases_and_round_trip() -> None:
    identity = np.eye(3, 4)
    wxyz, position = camera_pose(identity)
    assert np.allclose(np.abs(wxyz), [1, 0, 0, 0]) and np.allclose(position, 0)
    # 90 degrees about z: x -> y, y -> -x. Quaternion (cos 45, 0, 0, sin 45).
    rz = np.array([[0.0, -1.0, 0.0, 1.0], [1.0, 0.0, 0.0, 2.0], [0.0, 0.0, 1.0, 3.0]])
    wxyz, position = camera_pose(rz)
    assert np.allclose(wxyz * np.sign(wxyz[0]), [math.sqrt(0.5), 0, 0, math.sqrt(0.5)]) and np.allclose(position, [1, 2, 3])
    cams = viewer_camera(wxyz, position, math.radians(60), 40, 30)
    assert torch.allclose(cams.c2w[0].double(), torch.tensor(rz), atol=1e-6)
    # Vertical fov 60 degrees over 30 pixels: focal 15 / tan(30 deg), centre (20, 15).
    assert cams.K[0, 1, 1].item() == pytest.approx(15 / math.tan(math.radians(30)), rel=1e-6)
    assert cams.K[0, 0, 0].item() == pytest.approx(cams.K[0, 1, 1].item()) and cams.K[0, :2, 2].tolist() == [20.0, 15.0]
    assert vertical_fov(cams, 0) == pytest.approx(math.radians(60))
    # The image's centre ray looks along the camera's +z (OpenCV, like viser); its top row looks up (-y).
    _, d = generate_rays(cams, torch.tensor([0, 0]), torch.tensor([[20.0, 15.0], [20.0, 0.0]]))
    assert torch.allclose(d[0], torch.tensor([0.0, 0.0, 1.0]), atol=1e-6)
    assert (d[1] @ cams.c2w[0, :, 1]).item() < 0


def test_frame_size_follows_the_ray_budget_and_the_canvas() -> None:
    w, h = frame_size(40_000, 4 / 3, 1600, 1200)
    assert abs(w * h - 40_000) < 600 and w / h == pytest.approx(4 / 3, rel=0.02)
    assert frame_size(10**9, 4 / 3, 800, 600) == (800, 600)  # never beyond the canvas
    assert max(frame_size(10**9, 2.0, 4000, 2000)) <= 1280
    assert min(frame_size(1, 1.0, 800, 600)) >= 8
    meter = RateMeter()
    meter.record(100_000, 0.5)
    assert meter.rays_per_s == pytest.approx(200_000)
    meter.record(100_000, 1.0)
    assert meter.rays_per_s == pytest.approx(150_000)


def test_a_viewer_camera_at_a_training_camera_renders_that_image(demo_run: Path) -> None:
    from nfplug.metrics import psnr
    from nfplug.training.run import load_run

    run = load_run(demo_run, "cpu")
    split = run.task.split("val")
    cams = split.cameras
    for i in (0, 3):
        wxyz, position = camera_pose(cams.c2w[i].numpy())
        viewer = viewer_camera(wxyz, position, vertical_fov(cams, i), cams.width, cams.height)
        rgb, rays, busy = render_frame(run.task, lambda: run.field, viewer, chunk=1000)
        assert busy > 0
        assert rays == cams.width * cams.height
        reference = run.task.render_view(run.field, "val", i)
        assert torch.allclose(rgb, reference.rgb, atol=1e-4)
        own = psnr(rgb, split.images[i][..., :3])
        assert own > 17.0, own  # the 300-step run: 22.4 dB over the 8 views
    # The check can fail: the next camera's pose does not render this image.
    wxyz, position = camera_pose(cams.c2w[1].numpy())
    other, _, _ = render_frame(run.task, lambda: run.field, viewer_camera(wxyz, position, vertical_fov(cams, 3), cams.width, cams.height))
    assert psnr(other, split.images[3][..., :3]) < own - 3.0
    stopped, rays, busy = render_frame(run.task, lambda: run.field, viewer, chunk=100, abandon=lambda: True)
    assert stopped is None and rays == 0 and busy == 0.0


@pytest.fixture()
def busy_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_a_port_in_use_is_one_line(busy_port: int, demo_run: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(NfplugError, match=f"--port: port {busy_port} on 127.0.0.1 is in use by another program"):
        check_port("127.0.0.1", busy_port)
    assert main(["view", str(demo_run), "--port", str(busy_port)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"--port: port {busy_port}" in err and len(err.splitlines()) == 1
    # Training refuses before reading any data or creating the run folder.
    assert main(["train", "--viewer", "--viewer-port", str(busy_port), "--max-steps", "1", *TINY_TRAIN, "--output", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert f"--viewer-port: port {busy_port}" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["view", "RUN", "--port", "70000"], "--port: 70000 is not a port"),
        (["view", "RUN", "--port", "x"], "--port"),
        (["view", "RUN", "--host", ""], "--host: must not be empty"),
        (["view", "RUN", "--seconds", "0"], "--seconds: must be a positive number"),
        (["view", "NOT_A_RUN"], "is not an nfplug run directory"),
        (["view", "MISSING"], "no such run directory"),
        (["train", "--viewer-port", "7100"], "--viewer-port: only with --viewer"),
        (["train", "--viewer", "--viewer-share", "0"], "--viewer-share: must be in (0, 1]"),
        (["train", "--viewer", "--viewer-share", "lots"], "--viewer-share: expected a number"),
        (["train", "--viewer", "--viewer-port", "http"], "--viewer-port: expected a port number"),
        (["train", "--viewer", "--viewer-host", "no.such.host.invalid"], "--viewer-host: cannot resolve"),
    ],
)
def test_bad_viewer_input_is_one_line(argv, message, demo_run: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "NOT_A_RUN").mkdir()
    places = {"RUN": str(demo_run), "NOT_A_RUN": str(tmp_path / "NOT_A_RUN"), "MISSING": str(tmp_path / "missing")}
    assert main([places.get(a, a) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_training_with_the_viewer_serves_and_closes(tmp_path: Path, capsys) -> None:
    """`--viewer` trains as without it (same steps, same result) and closes its server at the end."""
    run = tmp_path / "run"
    assert main(["train", "--viewer", "--viewer-port", "0", "--max-steps", "6", *TINY_TRAIN, "--output", str(run)]) == 0
    out = capsys.readouterr().out
    port = int(re.search(r"viewer at http://127\.0\.0\.1:(\d+)", out).group(1))
    assert re.search(r"viewer closed \(0 frame\(s\) shown, 0\.0 s of rendering in [\d.]+ s \(0%\)\); open the trained run with: nfplug view", out), out
    with socket.socket() as s:  # the port is free again
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
    plain = tmp_path / "plain"
    assert main(["train", "--max-steps", "6", *TINY_TRAIN, "--output", str(plain)]) == 0
    a = torch.load(run / "checkpoints" / "ckpt_0000006.pt", weights_only=True)["field"]
    b = torch.load(plain / "checkpoints" / "ckpt_0000006.pt", weights_only=True)["field"]
    assert all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------ the browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader", "--use-angle=swiftshader", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def _frame_text(page) -> str:
    text = page.inner_text("body")
    found = re.search(r"frame: (\d+)x(\d+) in [\d.]+ s", text)
    return found.group(0) if found else ""


def _wait_for_frame(page, previous: str = "", timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = _frame_text(page)
        if text and text != previous:
            return text
        page.wait_for_timeout(250)
    raise AssertionError(f"no new frame within {timeout} s (last: {previous!r})")


def _wait_until_still(page, quiet: float = 2.5, timeout: float = 60.0) -> str:
    """Wait until no new frame has come for ``quiet`` seconds: the sharpest frame of a still camera
    is on the canvas, and its fade-in is over."""
    last, since = _frame_text(page), time.monotonic()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        page.wait_for_timeout(250)
        text = _frame_text(page)
        if text != last:
            last, since = text, time.monotonic()
        elif text and time.monotonic() - since >= quiet:
            return text
    raise AssertionError(f"frames kept coming for {timeout} s")


def _canvas(page, path: Path) -> np.ndarray:
    import imageio.v2 as imageio

    page.screenshot(path=str(path))
    image = imageio.imread(path)[..., :3].astype(np.float64)
    return image[150:, :460]  # below the notices, left of the panel: only the 3D view


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (Debian: apt install chromium)")
def test_the_viewer_in_a_real_browser(demo_run: Path, tmp_path: Path) -> None:
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    server = subprocess.Popen(
        [sys.executable, "-m", "nfplug", "view", str(demo_run), "--port", "0", "--seconds", "300"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO, env=env,
    )
    try:
        line = server.stdout.readline()
        found = re.search(r"viewer at (http://\S+)", line)
        assert found, line
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 800, "height": 600})
            page.goto(found.group(1), wait_until="load")
            _wait_for_frame(page)
            first = _wait_until_still(page)
            before = _canvas(page, tmp_path / "before.png")
            # The scene, not a blank canvas: varied colours, and the demo's saturated objects.
            assert before.std(axis=(0, 1)).mean() > 25, before.std(axis=(0, 1))
            saturated = (before.max(-1) - before.min(-1)) > 80
            assert saturated.mean() > 0.02, saturated.mean()
            page.mouse.move(220, 420)
            page.mouse.down()
            page.mouse.move(380, 400, steps=12)
            page.mouse.up()
            _wait_for_frame(page, first)
            _wait_until_still(page)  # then the sharper frames of the still camera
            after = _canvas(page, tmp_path / "after.png")
            assert np.abs(after - before).mean() > 10, np.abs(after - before).mean()
            assert after.std(axis=(0, 1)).mean() > 25
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)


def _step_shown(page) -> int:
    found = re.search(r"step ([\d,]+) of", page.inner_text("body"))
    return int(found.group(1).replace(",", "")) if found else -1


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (Debian: apt install chromium)")
def test_pause_and_resume_training_from_the_browser(tmp_path: Path) -> None:
    """`nfplug train --viewer`: the page shows training advancing; its Pause button stops the steps
    and Resume continues them; Ctrl-C then stops the run with a checkpoint, as without a viewer."""
    import signal

    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    run = tmp_path / "run"
    argv = [sys.executable, "-m", "nfplug", "train", "--viewer", "--viewer-port", "0", "--max-steps", "100000", *TINY_TRAIN, "--output", str(run)]
    trainer = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        url = None
        for line in trainer.stdout:
            found = re.search(r"viewer at (http://\S+)", line)
            if found:
                url = found.group(1)
                break
        assert url, "no viewer URL printed"
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 800, "height": 600})
            page.goto(url, wait_until="load")
            page.get_by_text("Pause training").wait_for(timeout=60_000)
            deadline = time.monotonic() + 60
            while _step_shown(page) < 20 and time.monotonic() < deadline:
                page.wait_for_timeout(250)
            assert _step_shown(page) >= 20
            page.get_by_text("Pause training").click()
            page.get_by_text("Resume training").wait_for(timeout=10_000)
            page.wait_for_timeout(1500)  # the step in progress ends; the panel catches up
            paused_at = _step_shown(page)
            page.wait_for_timeout(2000)
            assert _step_shown(page) == paused_at and "paused" in page.inner_text("body")
            page.get_by_text("Resume training").click()
            deadline = time.monotonic() + 30
            while _step_shown(page) <= paused_at + 5 and time.monotonic() < deadline:
                page.wait_for_timeout(250)
            assert _step_shown(page) > paused_at + 5
            browser.close()
        trainer.send_signal(signal.SIGINT)
        out, _ = trainer.communicate(timeout=60)
        assert trainer.returncode == 130, out
        assert "checkpoint saved" in out and "viewer closed" in out
        assert list((run / "checkpoints").glob("ckpt_*.pt"))
    finally:
        if trainer.poll() is None:
            trainer.kill()
