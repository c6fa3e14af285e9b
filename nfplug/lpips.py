"""LPIPS (Zhang et al., CVPR 2018), the perceptual distance papers report next to PSNR and SSIM.

LPIPS compares two images through a pretrained classification network: each of five feature
layers is normalised per pixel over its channels, the squared difference is weighed per channel
by a learned linear layer, averaged over the pixels, and the five layers are summed (0: identical).

Two sets of weights make it up, and nothing is downloaded at run time:

- **The linear layers** ship inside torchmetrics (``torchmetrics/functional/image/lpips_models``,
  the official v0.1 weights), which nfplug already depends on.
- **The backbone** (AlexNet by default, or VGG-16) is torchvision's ImageNet checkpoint, read from
  the standard torch-hub cache (``$TORCH_HOME/hub/checkpoints/alexnet-owt-7be5be79.pth``, where
  ``torchvision.models.alexnet(weights="DEFAULT")`` leaves it) or from ``--metrics.lpips-weights PATH``.

torchmetrics' own LPIPS builds its backbone through torchvision, which does not install beside
PyTorch's CPU wheel here; so nfplug holds the two backbones' convolution layers itself, in
torchvision's layout (same module indices, so the same checkpoint keys), and computes the
distance exactly as torchmetrics' ``_LPIPS`` does: the parity test runs both on the same weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from nfplug.errors import NfplugError

BACKBONES: Dict[str, Tuple[str, Tuple[int, ...], Tuple[int, ...]]] = {
    # net: (torchvision's checkpoint file, channels of the five compared layers, the feature
    # indices after which they are taken: the ReLUs of LPIPS' "slices")
    "alex": ("alexnet-owt-7be5be79.pth", (64, 192, 384, 256, 256), (1, 4, 7, 9, 11)),
    "vgg": ("vgg16-397923af.pth", (64, 128, 256, 512, 512), (3, 8, 15, 22, 29)),
}
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
"""LPIPS' input scaling: images in [-1, 1] are shifted and scaled to ImageNet's statistics."""


def backbone_features(net: str) -> nn.Sequential:
    """The convolutional part (``features``) of torchvision's AlexNet or VGG-16, same layer indices."""
    if net == "alex":
        return nn.Sequential(
            nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(inplace=False), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=False), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=False),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=False),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=False), nn.MaxPool2d(3, 2),
        )
    if net == "vgg":
        layers: List[nn.Module] = []
        channels = 3
        for width in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"):
            if width == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, int(width), 3, padding=1), nn.ReLU(inplace=False)]
                channels = int(width)
        return nn.Sequential(*layers)
    raise NfplugError(f"--metrics.lpips-net: '{net}' is not one of {', '.join(BACKBONES)}")


def linear_weights_path(net: str) -> Path:
    """The official LPIPS v0.1 linear layers of ``net``, as torchmetrics ships them."""
    import torchmetrics.functional.image.lpips as tm_lpips

    return Path(tm_lpips.__file__).resolve().parent / "lpips_models" / f"{net}.pth"


def default_backbone_path(net: str) -> Path:
    """Where torchvision's download of the backbone lands: the torch-hub cache."""
    return Path(torch.hub.get_dir()) / "checkpoints" / BACKBONES[net][0]


class LPIPS(nn.Module):
    """``LPIPS(net)(a, b)``: images ``[N, 3, H, W]`` in [0, 1] -> distance ``[N]`` (0: identical).

    Built with random weights; :meth:`load_backbone` and :meth:`load_linear` give it the real ones.
    """

    def __init__(self, net: str = "alex") -> None:
        super().__init__()
        self.net = net
        self.features = backbone_features(net)
        _, channels, self.taps = BACKBONES[net]
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in channels)
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def load_backbone(self, path: Path) -> None:
        """torchvision's checkpoint (its ``features.*`` tensors are used) or a bare ``features`` state."""
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable file is the user's to fix
            raise NfplugError(f"--metrics.lpips-weights: {path}: not a readable PyTorch checkpoint ({type(e).__name__})") from None
        if not isinstance(state, dict):
            raise NfplugError(f"--metrics.lpips-weights: {path}: not a state dict")
        features = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")} or state
        try:
            self.features.load_state_dict(features)
        except RuntimeError:
            raise NfplugError(
                f"--metrics.lpips-weights: {path}: not torchvision's {'AlexNet' if self.net == 'alex' else 'VGG-16'} weights "
                f"(the layers do not match; --metrics.lpips-net picks the backbone)"
            ) from None

    def load_linear(self, path: Optional[Path] = None) -> None:
        state = torch.load(path or linear_weights_path(self.net), map_location="cpu", weights_only=True)
        for i, lin in enumerate(self.lins):
            lin.weight.copy_(state[f"lin{i}.model.1.weight"])

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        n = a.shape[0]
        x = (torch.cat([a, b]) * 2.0 - 1.0 - self.shift) / self.scale
        total = torch.zeros(n, device=a.device)
        taps = iter(self.taps)
        tap, k = next(taps), 0
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i == tap:
                unit = x / (1e-8 + x.pow(2).sum(dim=1, keepdim=True)).sqrt()
                diff = (unit[:n] - unit[n:]).pow(2)
                total = total + self.lins[k](diff).mean(dim=(1, 2, 3))
                k += 1
                tap = next(taps, None)
                if tap is None:
                    break
        return total


def load_lpips(net: str = "alex", weights: Optional[str] = None, device: str | torch.device = "cpu") -> Tuple[Optional[LPIPS], str]:
    """-> (the LPIPS metric, "") if the backbone's weights are at ``weights`` or in the torch-hub
    cache, else (None, one line saying why LPIPS is skipped and how to enable it). A ``weights``
    path given but missing or wrong is an error, not a skip."""
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise NfplugError(f"--metrics.lpips-weights: {path}: no such file")
    else:
        path = default_backbone_path(net)
        if not path.is_file():
            return None, (
                f"LPIPS skipped: the {net} backbone's weights are not at {path} (nothing is downloaded); "
                f"put torchvision's {BACKBONES[net][0]} there or pass --metrics.lpips-weights PATH"
            )
    metric = LPIPS(net)
    metric.load_backbone(path)
    metric.load_linear()
    return metric.to(device), ""


MIN_SIDE = 32
"""Smaller images vanish in the backbone's strides and poolings before its last compared layer."""


def lpips_of(metric: LPIPS, rgb: Tensor, gt: Tensor) -> Optional[float]:
    """LPIPS of one ``[H, W, 3]`` render against its ground truth (both in [0, 1]); None for a
    grey image or one smaller than :data:`MIN_SIDE` pixels a side."""
    if rgb.shape[-1] < 3 or min(rgb.shape[0], rgb.shape[1]) < MIN_SIDE:
        return None
    with torch.no_grad():
        a = rgb[..., :3].permute(2, 0, 1)[None].float().clamp(0, 1)
        b = gt[..., :3].permute(2, 0, 1)[None].float().clamp(0, 1)
        return float(metric(a, b)[0])
