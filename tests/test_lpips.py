"""LPIPS (nfplug.lpips): the same numbers as torchmetrics' implementation on the same weights, the
plumbing of `nfplug eval` with and without the backbone's weights, and never a download."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import SHARED_DATA
from nfplug.cli import main
from nfplug.errors import NfplugError
from nfplug.lpips import LPIPS, backbone_features, default_backbone_path, load_lpips


def _random_backbone(net: str, path: Path) -> Path:
    """A backbone checkpoint in torchvision's layout (``features.*`` plus a classifier), random weights."""
    torch.manual_seed(0)
    state = {f"features.{k}": v for k, v in backbone_features(net).state_dict().items()}
    state["classifier.1.weight"] = torch.zeros(4, 4)  # torchvision's file has more than the features
    torch.save(state, path)
    return path


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_same_distance_as_torchmetrics_on_the_same_weights(net: str, tmp_path: Path, monkeypatch) -> None:
    """torchmetrics' _LPIPS with its backbone built from nfplug's layers (torchvision is not
    needed for that) against nfplug's LPIPS: forward equal to float tolerance."""
    import torchmetrics.functional.image.lpips as tm

    path = _random_backbone(net, tmp_path / "backbone.pth")
    ours = LPIPS(net)
    ours.load_backbone(path)
    ours.load_linear()

    def features(name: str, pretrained: bool = False) -> torch.nn.Sequential:
        module = backbone_features(net)
        module.load_state_dict(ours.features.state_dict())
        return module

    monkeypatch.setattr(tm, "_get_tv_model_features", features)
    reference = tm._LPIPS(pretrained=True, net=net, pnet_rand=False).eval()
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(3, 3, 64, 48, generator=g), torch.rand(3, 3, 64, 48, generator=g)
    expected = reference(a, b, normalize=True).reshape(-1)
    assert torch.allclose(ours(a, b), expected, rtol=1e-5, atol=1e-7), (ours(a, b), expected)
    assert ours(a, a).abs().max() < 1e-6  # identical: 0
    assert torch.allclose(ours(a, b), ours(b, a), rtol=1e-6)  # symmetric
    assert (ours(a, b) > 0).all()


def test_without_weights_lpips_is_skipped_in_one_line_and_nothing_is_downloaded(demo_run: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("a download was attempted"))
    metric, why = load_lpips("alex")
    assert metric is None and str(tmp_path / "torch" / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth") in why
    assert main(["eval", str(demo_run), "--split", "val"]) == 0
    out = capsys.readouterr().out
    assert out.count("LPIPS skipped") == 1 and "--metrics.lpips-weights PATH" in out
    metrics = json.loads((demo_run / "metrics.json").read_text())
    assert "lpips" not in metrics["mean"] and "lpips" not in metrics["views"][0]


def test_eval_reports_lpips_with_weights_in_the_hub_cache_or_given(demo_run: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = default_backbone_path("alex")
    cached.parent.mkdir(parents=True)
    _random_backbone("alex", cached)
    # The demo's views are 64x64: LPIPS on each, then the mean.
    assert main(["eval", str(demo_run), "--split", "val"]) == 0
    out = capsys.readouterr().out
    assert "LPIPS (alex)" in out and "skipped" not in out
    metrics = json.loads((demo_run / "metrics.json").read_text())
    values = [v["lpips"] for v in metrics["views"]]
    assert all(v > 0 for v in values) and metrics["mean"]["lpips"] == pytest.approx(sum(values) / len(values))
    # --metrics.lpips-weights PATH, and its errors.
    given = _random_backbone("vgg", tmp_path / "vgg.pth")
    assert main(["eval", str(demo_run), "--split", "val", "--metrics.lpips-net", "vgg", "--metrics.lpips-weights", str(given)]) == 0
    assert "LPIPS (vgg)" in capsys.readouterr().out
    for argv, message in [
        (["--metrics.lpips-weights", str(tmp_path / "missing.pth")], "--metrics.lpips-weights: " + str(tmp_path / "missing.pth") + ": no such file"),
        (["--metrics.lpips-weights", str(given)], "not torchvision's AlexNet weights"),
        (["--metrics.lpips-weights", str(demo_run / "config.json")], "not a readable PyTorch checkpoint"),
    ]:
        assert main(["eval", str(demo_run), "--split", "val", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    with pytest.raises(NfplugError, match="--metrics.lpips-net: 'squeeze'"):
        LPIPS("squeeze")


KODAK = SHARED_DATA / "kodak" / "kodim05.png"


@pytest.mark.skipif(not default_backbone_path("alex").is_file(), reason="no AlexNet weights in the torch-hub cache (nothing is downloaded)")
@pytest.mark.skipif(not KODAK.is_file(), reason="no shared data")
def test_a_real_lpips_value_grows_with_the_distortion() -> None:
    from nfplug.training.image_task import load_image

    metric, _ = load_lpips("alex")
    image = load_image(KODAK).permute(2, 0, 1)[None]
    g = torch.Generator().manual_seed(0)
    noisy = [(image + s * torch.randn(image.shape, generator=g)).clamp(0, 1) for s in (0.02, 0.1)]
    small, large = (float(metric(image, n)[0]) for n in noisy)
    assert float(metric(image, image)[0]) < 1e-6
    assert 0.0 < small < large < 1.0
