"""Choosing the task (what is trained) from the config."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

import torch

from nfplug.training.image_task import ImageTask, is_image_path
from nfplug.training.scene_task import SceneTask

Task = Union[SceneTask, ImageTask]


def task_name(config: Any) -> str:
    """``--data.task``, or inferred: an image file is the image task, anything else a scene."""
    if config.data.task != "auto":
        return config.data.task
    return "image" if is_image_path(config.data.path) else "scene"


def build_task(config: Any, device: torch.device, *, load_train: bool = True, run_dir: Optional[Path] = None) -> Task:
    """The task; a scene task takes its setup (normalisation, box) from ``run_dir`` if that run has one."""
    if task_name(config) == "image":
        return ImageTask(config.data, device)
    return SceneTask(config.data, config.render, device, load_train=load_train, run_dir=run_dir)
