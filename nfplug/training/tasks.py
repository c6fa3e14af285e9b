"""Choosing the task (what is trained) from the config."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Protocol, Tuple, runtime_checkable

import torch
from torch import Tensor

from nfplug.api import Field, FieldContext, RayBatch
from nfplug.training.image_task import ImageTask, is_image_path
from nfplug.training.scene_task import SceneTask


@runtime_checkable
class Task(Protocol):
    """What the engine (training, evaluation, renders, export) asks of a task: ``SceneTask`` (rays,
    marching, volume rendering) and ``ImageTask`` (coordinates in [-1, 1]^2). Between the field and
    the sampler, a task turns pixels into the field's inputs and its outputs into colours."""

    name: str
    """``"scene"`` or ``"image"``."""
    images: Tensor
    """``[n, H, W, C]`` training images in [0, 1]."""
    train_mask: Optional[Tensor]
    """``[n, H, W]`` bool, the pixels training may use, or None for all."""

    @property
    def eval_split_name(self) -> str: ...  # the held-out split evaluations use

    @property
    def scene_name(self) -> str: ...  # for default run-folder names

    def splits(self) -> List[str]: ...

    def n_views(self, split: str) -> int: ...

    def field_context(self) -> FieldContext: ...

    def parameters(self) -> List[Tensor]: ...  # the task's own trainable parameters (a learned background)

    def before_step(self, step: int, field: Field) -> Optional[str]: ...  # e.g. the occupancy-grid update; a warning or None

    def train_forward(
        self, field: Field, batch: RayBatch, generator: torch.Generator, share: Optional[Tuple[int, int]] = None
    ) -> Tuple[Tensor, Tensor, Dict[str, Any]]: ...  # share: (start, total) of a batch split over processes

    def predict_errors(self, field: Field, image_index: Tensor, pixel_xy: Tensor) -> Tensor: ...

    def render_view(self, field: Field, split: str, index: int) -> Any: ...

    def state_dict(self) -> Dict[str, Any]: ...

    def load_state_dict(self, state: Dict[str, Any]) -> None: ...


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
