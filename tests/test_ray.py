"""``nfplug train-ray``: Ray Train launches the same data-parallel training as torchrun.

The end-to-end test needs the extra (``pip install -e .[ray]``) and skips without it; the option
checks run everywhere (they fail before Ray is imported)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from test_distributed import RUN, SAME_STEPS, _assert_took_the_same_steps, _last_checkpoint, _train_one_process


def _train_ray(args, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nfplug", "train-ray", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--workers", "0"], "--workers: must be at least 1, got 0"),
        (["--workers", "two"], "--workers: expected a whole number, got 'two'"),
        (["--cpus-per-worker", "-1"], "--cpus-per-worker: must be at least 1, got -1"),
        (["--address", " "], "--address: must not be empty"),
        (["--viewer"], "--viewer: not with train-ray"),
        (["--threads", "2"], "--device, --threads: set by train-ray"),
        (["--max-steps", "0"], "--max-steps"),  # a training option, checked before Ray starts
        (["--workers", "64"], "--workers 64 x --cpus-per-worker 1: needs 64 CPU cores"),  # a local Ray would wait for ever
    ],
)
def test_bad_options_are_one_line_before_ray_starts(args, message):
    r = _train_ray([*RUN, *args], timeout=120)
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nfplug: error: ") and message in lines[0], r.stderr[-2000:]


def test_ray_train_takes_the_single_process_steps(tmp_path):
    """Two Ray Train workers on this machine train the demo scene as one process does: after 3 steps
    the fields agree to float tolerance and the grids are equal (as the torchrun test checks)."""
    pytest.importorskip("ray.train.torch")
    one, two = tmp_path / "one", tmp_path / "two"
    _train_one_process(one)
    r2 = _train_ray(["--workers", "2", "--cpus-per-worker", "1", *RUN, *SAME_STEPS, "--output", str(two)])
    assert r2.returncode == 0, (r2.stdout + r2.stderr)[-4000:]
    _assert_took_the_same_steps(one, two)
    report = json.loads((two / "distributed.json").read_text())
    assert report["consistent"] and report["world_size"] == 2
    assert (r2.stdout + r2.stderr).count("nfplug: trained 3 steps") == 1  # rank 0 alone reports


def test_ray_worker_error_is_one_line(tmp_path):
    """A worker that fails (here every worker: the image is unreadable, which the driver's option
    checks do not read) ends the run with the worker's error as nfplug's one error line."""
    pytest.importorskip("ray.train.torch")
    scene = tmp_path / "scene.png"
    scene.write_bytes(b"not an image")
    r = _train_ray(["--workers", "2", "--data", str(scene), "--max-steps", "2", "--no-progress", "--output", str(tmp_path / "run")])
    assert r.returncode == 2
    errors = [line for line in r.stderr.splitlines() if line.startswith("nfplug: error")]
    assert len(errors) == 1 and "train-ray:" in errors[0] and "scene.png" in errors[0], r.stderr[-3000:]


def test_without_ray_the_error_says_what_to_install(monkeypatch, capsys):
    """The options are fine, Ray is missing: one line naming the extra (Ray hidden from the import)."""
    from nfplug.cli import main

    for name in ("ray", "ray.train", "ray.train.torch"):
        monkeypatch.setitem(sys.modules, name, None)
    assert main(["train-ray", *RUN, "--max-steps", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["nfplug: error: train-ray needs Ray Train: pip install nfplug[ray] (or pip install 'ray[default,train]')"]


def test_ctrl_c_is_one_line_and_keeps_the_checkpoint(tmp_path):
    """Ctrl-C in the driver: Ray Train aborts the workers; nfplug says so in one line (exit 130) and the
    periodic checkpoint written before it is still there to resume from."""
    pytest.importorskip("ray.train.torch")
    import signal
    import time

    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "nfplug", "train-ray", "--workers", "2", *RUN, "--max-steps", "100000", "--checkpoint-every", "5", "--output", str(run)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.time() + 300
        while not list((run / "checkpoints").glob("*.pt")) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.5)
        assert list((run / "checkpoints").glob("*.pt")), "no checkpoint was written"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-3000:]
    assert err.strip().splitlines()[-1] == (
        "nfplug: train-ray interrupted; the workers were stopped without a final checkpoint. Continue from the last periodic one "
        f"(--checkpoint-every) with: nfplug train-ray ... --resume {run}"
    )
    assert not [line for line in err.splitlines() if line.startswith("Traceback")]
    assert _last_checkpoint(run)["step"] >= 5
