"""``default``: keep the initialization each field's own constructor chose."""

from __future__ import annotations

import torch

from nfplug.api import API_VERSION, Field, Init


class DefaultInit(Init):
    """The field's own initialization (PyTorch layer defaults, small hash-table values)."""

    description = "the field's own initialization, unchanged"
    api_version = API_VERSION

    def apply(self, field: Field, generator: torch.Generator) -> None:
        """Nothing to do: the field initialized itself when it was built."""
