"""Choosing the dataset plugin (scene format) for a ``--data`` folder."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import List, Tuple

from nfplug import registry
from nfplug.api import Dataset, DatasetContext, EmptyConfig
from nfplug.errors import NfplugError


def detect_formats(root: Path) -> List[Tuple[str, type]]:
    """Every installed format that recognises ``root``, best (highest priority) first.

    A format plugin that fails to import is skipped with a warning, so one broken third-party
    package cannot stop auto-detection.
    """
    found = []
    for name, entry in registry.discover("datasets").items():
        try:
            cls = entry.load()
        except NfplugError as e:
            warnings.warn(str(e), stacklevel=2)
            continue
        if cls.detect(root):
            found.append((name, cls))
    return sorted(found, key=lambda item: -item[1].priority)


def open_dataset(root: Path, format_name: str, context: DatasetContext) -> Tuple[str, Dataset]:
    """-> (format name, dataset) for ``root``: ``format_name``, or the detected format if ``"auto"``."""
    if format_name != "auto":
        cls = registry.get("datasets", format_name)
    else:
        found = detect_formats(root)
        if not found:
            known = ", ".join(registry.discover("datasets"))
            raise NfplugError(
                f"--data: {root}: not a scene folder in any known format ({known}; 'nfplug plugins' says what each looks for); "
                f"for a folder of photos or a video, run 'nfplug process-data {root} --output SCENE' first"
            )
        format_name, cls = found[0]
    config = cls.Config() if cls.Config is not EmptyConfig else EmptyConfig()
    return format_name, cls(config, context)
