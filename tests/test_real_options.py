"""The options real captures need, on the demo scene: learned background, per-image appearance,
the distortion loss, and their round trip through config.json and checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import TINY_TRAIN
from nfplug.api import FieldContext
from nfplug.cli import main
from nfplug.training.run import load_run
from nfplug_builtins.fields.mlp import MLPField
from nfplug_builtins.fields.ngp import NGPField


@pytest.fixture(scope="module")
def learned_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("learned") / "run"
    args = ["train", "--max-steps", "30", "--output", str(run), *TINY_TRAIN, "--data.background", "learned",
            "--field.appearance-dim", "4", "--render.distortion-weight", "0.01"]
    assert main(args) == 0
    return run


def test_options_are_saved_in_config_json(learned_run: Path) -> None:
    config = json.loads((learned_run / "config.json").read_text())
    assert config["data"]["background"] == "learned"
    assert config["field"]["appearance_dim"] == 4
    assert config["render"]["distortion_weight"] == 0.01
    assert {"rays", "contraction", "near", "far", "aabb", "cone_angle", "render_step"} <= set(config["render"])
    setup = json.loads((learned_run / "scene.json").read_text())
    assert setup["space"] == {"rays": "world", "contraction": "none"} and setup["train_images"] > 0


def test_learned_background_and_embeddings_are_trained_and_restored(learned_run: Path) -> None:
    loaded = load_run(learned_run, "cpu")
    background = loaded.task.learned_background
    assert background is not None
    # Trained: a fresh model starts from torch's default init, the loaded one from the checkpoint.
    ckpt = torch.load(next((learned_run / "checkpoints").glob("*.pt")), weights_only=True)
    for key, value in background.state_dict().items():
        assert torch.equal(value, ckpt["task"]["background"][key])
    # The embeddings start at zero; 30 steps of Adam move them, each image its own way.
    table = loaded.field.appearance.embedding.weight
    assert table.abs().max() > 0 and not torch.allclose(table[0], table[1])
    # Evaluation composites on the learned background: a ray that meets nothing shows it.
    d = torch.nn.functional.normalize(torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]), dim=-1)
    far_away = torch.full((2, 3), 100.0)
    out = loaded.task.renderer.render(loaded.field, far_away, d, loaded.task.eval_background(d))
    assert out.n_samples == 0 and torch.allclose(out.colors, background(d))


@pytest.mark.parametrize("cls", [NGPField, MLPField])
def test_appearance_embedding_changes_colour_per_image_and_held_out_views_use_the_mean(cls) -> None:
    torch.manual_seed(0)
    field = cls(cls.Config(appearance_dim=3), FieldContext(task="scene", aabb=(-1, -1, -1, 1, 1, 1), n_images=5))
    assert field.uses_appearance
    with torch.no_grad():
        field.appearance.embedding.weight.copy_(torch.randn(5, 3))
    x, d = torch.rand(8, 3) * 2 - 1, torch.nn.functional.normalize(torch.randn(8, 3), dim=-1)
    rgb0, sigma0 = field(x, d, image_index=torch.zeros(8, dtype=torch.long))
    rgb1, sigma1 = field(x, d, image_index=torch.ones(8, dtype=torch.long))
    assert not torch.allclose(rgb0, rgb1) and torch.equal(sigma0, sigma1)  # colour only, never geometry
    rgb_mean, _ = field(x, d, image_index=None)
    with torch.no_grad():
        field.appearance.embedding.weight.copy_(field.appearance.embedding.weight.mean(0).expand(5, 3).clone())
    rgb_at_mean, _ = field(x, d, image_index=torch.full((8,), 3, dtype=torch.long))
    assert torch.allclose(rgb_mean, rgb_at_mean, atol=1e-6)
    plain = cls(cls.Config(), FieldContext(task="scene", aabb=(-1, -1, -1, 1, 1, 1), n_images=5))
    assert not plain.uses_appearance


def test_bad_real_scene_options_fail_in_one_line(tmp_path: Path, capsys) -> None:
    cases = [
        (["--render.distortion-weight", "-1"], "--render.distortion-weight: must be at least 0"),
        (["--render.render-step", "0"], "--render.render-step: must be positive"),
        (["--field.appearance-dim", "-2"], "--field.appearance-dim"),
        (["--render.rays", "ndc"], "--render.rays ndc: needs a captured scene"),
        (["--render.contraction", "warp"], "--render.contraction"),
        (["--data.background", "grey"], "--data.background"),
    ]
    for extra, message in cases:
        assert main(["train", "--max-steps", "1", "--output", str(tmp_path / "x"), *TINY_TRAIN, *extra]) == 2, extra
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (extra, err)
