"""Choosing the task (what is trained) from the config."""

from __future__ import annotations

from typing import Any, Union

import torch

from nfplug.training.image_task import ImageTask, is_image_path
from nfplug.training.scene_task import SceneTask

Task = Union[SceneTask, ImageTask]


def task_name(config: Any) -> str:
    """``--data.task``, or inferred: an image file is the image task, anything else a scene."""
    if config.data.task != "auto":
        return config.data.task
    return "image" if is_image_path(config.data.path) else "scene"


def build_task(config: Any, device: torch.device, *, load_train: bool = True) -> Task:
    if task_name(config) == "image":
        return ImageTask(config.data, device)
    return SceneTask(config.data, config.render, device, load_train=load_train)
