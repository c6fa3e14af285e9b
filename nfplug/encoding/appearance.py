"""Per-image appearance embeddings (NeRF in the Wild's, as nerfacto uses them).

Photos of one capture differ in exposure and white balance; a field that must reproduce each
photo exactly paints those differences into the scene as view-dependent colour or floaters.
An embedding per training image, fed to the colour network beside the view direction, gives the
differences somewhere else to go.

Rule for views that are not training images (held-out photos, render paths): the **mean of the
training embeddings**, so a held-out photo is scored against the capture's average appearance
(NeRF-W fits an embedding on half of each test image instead; nfplug does not, so its held-out
PSNR never sees the pixels it is scored on).
"""

from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from nfplug.errors import NfplugError


class AppearanceEmbedding(nn.Module):
    """``n_images`` learned vectors of ``dim`` numbers, starting at zero (every image alike)."""

    def __init__(self, n_images: int, dim: int) -> None:
        super().__init__()
        if n_images < 1:
            raise NfplugError("--field.appearance-dim: the task has no training images to embed (scenes only)")
        self.embedding = nn.Embedding(n_images, dim)
        nn.init.zeros_(self.embedding.weight)

    def forward(self, image_index: Optional[Tensor], n: int) -> Tensor:
        """``[n, dim]``: the embeddings of ``image_index [n]``, or their mean if it is ``None``."""
        if image_index is None:
            return self.embedding.weight.mean(0).expand(n, -1)
        return self.embedding(image_index)
