"""Choosing the task (what is trained) from the config."""

from __future__ import annotations

from typing import Any

import torch

from nfplug.training.scene_task import SceneTask


def build_task(config: Any, device: torch.device, *, load_train: bool = True) -> SceneTask:
    """The scene task for a Blender-format folder or the built-in demo."""
    return SceneTask(config.data, config.render, device, load_train=load_train)
