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


def data_kind(path: str, task: str = "auto", format_name: str = "auto") -> str:
    """What ``--data`` holds, for the defaults chosen before the options are parsed (the sampler,
    :func:`nfplug.config.default_plugins`): 'image', 'demo' (the built-in scene), 'object' (a
    scene in its own box, whose poses the engine keeps as they are: Blender) or 'capture' (any
    other scene, and a folder that cannot be read: building the task then says what is wrong)."""
    if task == "image" or (task == "auto" and is_image_path(path)):
        return "image"
    if path == "demo":
        return "demo"
    from nfplug.api import DatasetContext
    from nfplug.data.formats import open_dataset

    try:
        _, dataset = open_dataset(Path(path), format_name, DatasetContext(root=Path(path)))
        return "capture" if dataset.hints().normalize else "object"
    except Exception:  # noqa: BLE001 - a format plugin may raise anything; SceneTask reports it
        return "capture"


def build_task(config: Any, device: torch.device, *, load_train: bool = True, run_dir: Optional[Path] = None) -> Task:
    """The task; a scene task takes its setup (normalisation, box) from ``run_dir`` if that run has one."""
    if task_name(config) == "image":
        return ImageTask(config.data, device)
    return SceneTask(config.data, config.render, device, load_train=load_train, run_dir=run_dir)
