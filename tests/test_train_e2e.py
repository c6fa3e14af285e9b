"""Short real training runs on the demo scene: quality floor, outputs, resume, bad checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import TINY_TRAIN
from nfplug.cli import main
from nfplug_builtins.samplers.uniform import UniformSampler

DEMO_STEPS = 300
DEMO_PSNR_FLOOR = 20.0


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("demo") / "run"
    assert main(["train", "--max-steps", str(DEMO_STEPS), "--output", str(run), *TINY_TRAIN, "--batch-size", "1024"]) == 0
    return run


def test_demo_training_reaches_quality_floor(demo_run):
    metrics = json.loads((demo_run / "metrics.json").read_text())
    assert metrics["step"] == DEMO_STEPS
    assert metrics["mean"]["psnr"] >= DEMO_PSNR_FLOOR, metrics["mean"]
    assert 0.0 < metrics["mean"]["ssim"] <= 1.0
    config = json.loads((demo_run / "config.json").read_text())
    assert config["plugins"] == {"field": "ngp", "init": "default", "sampler": "uniform"}
    assert (demo_run / "curves.png").stat().st_size > 0
    assert list((demo_run / "tensorboard").iterdir())


def test_eval_writes_metrics(demo_run, capsys):
    (demo_run / "metrics.json").unlink()
    assert main(["eval", str(demo_run), "--split", "test"]) == 0
    metrics = json.loads((demo_run / "metrics.json").read_text())
    assert metrics["split"] == "test" and len(metrics["views"]) > 0
    assert {"index", "psnr", "ssim"} <= set(metrics["views"][0])
    assert "PSNR" in capsys.readouterr().out
    assert main(["eval", str(demo_run), "--split", "nope"]) == 2
    assert "--split: 'nope'" in capsys.readouterr().err


def test_render_orbit_and_split(demo_run, tmp_path):
    out = tmp_path / "orbit"
    assert main(["render", str(demo_run), "--path", "orbit", "--frames", "4", "--output", str(out)]) == 0
    assert len(list(out.glob("rgb_*.png"))) == 4 and len(list(out.glob("depth_*.png"))) == 4
    assert (out / "video.mp4").stat().st_size > 1000
    import imageio.v2 as imageio

    frame = imageio.imread(out / "rgb_0000.png")
    assert frame.ndim == 3 and frame.shape[2] == 3 and frame.std() > 5  # not a blank image
    assert main(["render", str(demo_run), "--path", "val", "--output", str(tmp_path / "val")]) == 0
    assert len(list((tmp_path / "val").glob("rgb_*.png"))) >= 1


def _field_state(run: Path):
    from nfplug.training.checkpoint import latest_checkpoint, load_checkpoint

    return load_checkpoint(latest_checkpoint(run))


def test_ctrl_c_saves_and_resume_continues_identically(tmp_path, monkeypatch, capsys):
    args = ["--max-steps", "12", "--checkpoint-every", "100", *TINY_TRAIN, "--batch-size", "256"]
    straight = tmp_path / "straight"
    assert main(["train", "--output", str(straight), *args]) == 0

    original = UniformSampler.sample

    def interrupt_at_7(self, step, generator):
        if step == 7:
            raise KeyboardInterrupt
        return original(self, step, generator)

    resumed = tmp_path / "resumed"
    monkeypatch.setattr(UniformSampler, "sample", interrupt_at_7)
    assert main(["train", "--output", str(resumed), *args]) == 130
    assert "--resume" in capsys.readouterr().out
    assert _field_state(resumed)["step"] == 7
    monkeypatch.setattr(UniformSampler, "sample", original)
    assert main(["train", "--resume", str(resumed)]) == 0

    a, b = _field_state(straight), _field_state(resumed)
    assert a["step"] == b["step"] == 12
    for key in a["field"]:
        assert torch.equal(a["field"][key], b["field"][key]), key
    assert torch.equal(a["task"]["estimator"]["occs"], b["task"]["estimator"]["occs"])


def test_existing_run_directory_is_not_overwritten(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--output", str(run), "--max-steps", "2", *TINY_TRAIN]) == 0
    assert main(["train", "--output", str(run), "--max-steps", "2", *TINY_TRAIN]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_bad_checkpoints_are_one_line_errors(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--output", str(run), "--max-steps", "2", *TINY_TRAIN]) == 0
    (ckpt,) = list((run / "checkpoints").glob("ckpt_*.pt"))
    data = ckpt.read_bytes()

    ckpt.write_bytes(data[: len(data) // 2])
    assert main(["eval", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("nfplug: error:") and str(ckpt) in err and "\n" not in err

    torch.save({"model": torch.zeros(3)}, ckpt)
    assert main(["render", str(run), "--frames", "1"]) == 2
    assert "not an nfplug checkpoint" in capsys.readouterr().err

    assert main(["eval", str(tmp_path / "missing")]) == 2
    assert "no such run directory" in capsys.readouterr().err


def test_sigterm_in_a_background_run_saves_a_checkpoint(tmp_path):
    """A real signal to a real process (background jobs start with SIGINT ignored; we handle it)."""
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "nfplug.cli", "train", "--output", str(run), "--max-steps", "100000", *TINY_TRAIN],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not (run / "history.json").exists() and not (run / "tensorboard").exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(3.0)  # inside the training loop by now
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "checkpoint saved" in out
    assert _field_state(run)["step"] >= 0  # a loadable checkpoint exists (raises otherwise)


def test_resume_with_mismatched_checkpoint_is_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--output", str(run), "--max-steps", "2", *TINY_TRAIN]) == 0
    config = json.loads((run / "config.json").read_text())
    config["field"]["hidden_dim"] = config["field"].get("hidden_dim", 64) * 2  # a different network
    (run / "config.json").write_text(json.dumps(config))
    assert main(["train", "--resume", str(run), "--max-steps", "4"]) == 2
    err = capsys.readouterr().err.strip()
    assert "does not match the run's config" in err and "\n" not in err
