"""What training minimises and what minimises it, in one place: the per-ray loss, the step's loss
with its regularisers (the task's, such as the distortion loss, and the field's own through
``Field.loss_terms``), and the optimizer."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch
from torch import Tensor

from nfplug.api import Field, TrainingStage, field_parameter_parts
from nfplug.errors import NfplugError


def per_ray_loss(pred: Tensor, gt: Tensor) -> Tensor:
    """``[B]`` mean squared error over the colour channels (what samplers see and weigh)."""
    return ((pred - gt) ** 2).mean(dim=-1)


def ray_errors(pred: Tensor, gt: Tensor) -> Tensor:
    """``[B]`` L1 error summed over the channels, detached (for samplers)."""
    return (pred - gt).detach().abs().sum(dim=-1)


def field_regularizers(field: Field, step: int) -> Dict[str, Tensor]:
    """The field's own loss terms (``Field.loss_terms``), checked: a dict of scalar tensors (one line if not)."""
    terms = field.loss_terms(step)
    if not isinstance(terms, dict):
        raise NfplugError(f"--field: {type(field).__name__}.loss_terms() must return a dict of name -> scalar tensor, got {type(terms).__name__}")
    for name, value in terms.items():
        if not isinstance(value, Tensor) or value.numel() != 1:
            raise NfplugError(f"--field: {type(field).__name__}.loss_terms()['{name}'] must be a scalar tensor, got {getattr(value, 'shape', type(value).__name__)}")
    return {name: value.reshape(()) for name, value in terms.items()}


def step_loss(
    weight: Tensor, per_ray: Tensor, narrower: List[Tensor], regularizers: Dict[str, Tensor], total_rays: Optional[int] = None, processes: int = 1
) -> Tensor:
    """``mean(weight * per_ray)``, the same for each narrower decoding of a streamable field, plus
    every regulariser (already weighted by whoever added it).

    In distributed training each process holds ``per_ray`` of its share of a ``total_rays`` batch and
    the gradients are summed over the ``processes``: the per-ray terms are then divided by the global
    batch, and the regularisers (which every process computes whole) by the number of processes, so
    the summed gradient is the gradient of the whole batch's loss in one process.
    """
    if total_rays is None and processes == 1:
        loss = (weight * per_ray).mean() + sum((weight * other).mean() for other in narrower)
    else:
        n = per_ray.shape[0] if total_rays is None else total_rays
        loss = ((weight * per_ray).sum() + sum((weight * other).sum() for other in narrower)) / n
    for value in regularizers.values():
        loss = loss + (value if processes == 1 else value / processes)
    return loss


def build_optimizer(config: Any, field: Field, stage: TrainingStage, lr: float, task: Any) -> torch.optim.Optimizer:
    """A fresh Adam over the parameters ``stage`` trains, and the task's own (a learned
    background); frozen parts stop taking gradients, so nothing (moments, weight decay) can move them."""
    parts = field_parameter_parts(field)
    params = []
    for name, param in field.named_parameters():
        if stage.frozen and parts.get(name, 1) in stage.frozen:
            param.requires_grad_(False)
        elif stage.frozen or param.requires_grad:
            param.requires_grad_(True)
            params.append(param)
    params += list(task.parameters())
    # PyTorch's fused Adam (one kernel over all tensors): 1.9 ms a lego step against 7.6 ms for the
    # default multi-tensor Adam (README, Performance: the --profile table).
    fused = bool(params) and all(p.dtype in (torch.float32, torch.float64) and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.Adam(params, lr=lr, eps=config.optim.eps, weight_decay=config.optim.weight_decay, fused=fused or None)
