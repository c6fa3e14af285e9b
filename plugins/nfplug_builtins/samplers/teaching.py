"""``int``: implicit neural teaching (Zhang, Luo et al., "Nonparametric Teaching of Implicit
Neural Representations", ICML 2024).

At a selection step every trainable pixel is ranked by its error ``sum_c |y - f(x)|`` and
training uses the top ``k = ratio * N`` until the next selection: the whole subset per
step if it fits in the batch (full-batch training), else ``batch_size`` pixels drawn
uniformly from it. Schedules follow the official code (github.com/stevolopolis/nmt_inr,
``scheduler.py`` and ``strategy.py``).

Errors come from an error map. ``full``: a forward pass over every trainable pixel at
each selection step (cheap for images). ``chunked`` (the default for scenes, where a
full pass renders every ray of every training image): the map is refreshed
``refresh_rays`` pixels per step, round-robin, and from the training batches' own
errors; pixels never measured rank first, in random order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch
from torch import Tensor

from nfplug.api import API_VERSION, RayBatch, Sampler, SamplerContext, StepFeedback, require_choice, require_range
from nfplug.errors import NfplugError

SCHEDULES = ("step", "constant", "linear", "cosine")
RESELECTIONS = ("incremental", "dense")
ERROR_MAPS = ("auto", "full", "chunked")


@dataclass(frozen=True)
class TeachingConfig:
    ratio: float = 0.2
    """Starting fraction r0 of the trainable pixels selected (the whole schedule starts here)."""
    schedule: str = "step"
    """Ratio schedule: 'step' (r0 + floor(t / (T/10)) * (1 - r0) / 10), 'constant', 'linear', 'cosine'."""
    reselect: str = "incremental"
    """When to re-rank: 'incremental' (every step for the first quarter of training, then every
    10, 20, 30, 40, 50 steps in five equal stages) or 'dense' (every step)."""
    error_map: str = "auto"
    """'full': forward pass over every pixel at each selection; 'chunked': refresh a running
    per-pixel error map; 'auto': full for images, chunked for scenes."""
    refresh_rays: int = -1
    """Chunked error map: pixels re-measured per step, on top of the training batch's own errors
    (-1: as many as the batch size; each costs a forward pass without gradients)."""

    def validate(self) -> None:
        require_range(self.ratio, "--sampler.ratio", 0, 1, low_open=True)
        require_choice(self.schedule, "--sampler.schedule", SCHEDULES)
        require_choice(self.reselect, "--sampler.reselect", RESELECTIONS)
        require_choice(self.error_map, "--sampler.error-map", ERROR_MAPS)
        require_range(self.refresh_rays, "--sampler.refresh-rays", -1)  # -1: the batch size


def ratio_at(schedule: str, step: int, max_steps: int, r0: float) -> float:
    """Selected fraction at ``step`` of ``max_steps`` (official code's ``mt_*`` schedulers)."""
    t, total = float(step), float(max(1, max_steps))
    if schedule == "constant":
        return r0
    if schedule == "linear":
        return min(1.0, r0 + t / total * (1.0 - r0))
    if schedule == "cosine":
        return 1.0 - 0.5 * (1.0 - r0) * (1.0 + math.cos(t / total * math.pi))
    if schedule == "step":
        stage = t // (total / 10)
        return min(r0 + stage * (1.0 - r0) / 10, 1.0)
    raise NfplugError(f"--sampler.schedule: '{schedule}' is not one of {', '.join(SCHEDULES)}")


def is_selection_step(reselect: str, step: int, max_steps: int) -> bool:
    """Whether to re-rank at ``step`` (official code's ``incremental`` / ``dense`` strategies)."""
    if reselect == "dense":
        return True
    if reselect != "incremental":
        raise NfplugError(f"--sampler.reselect: '{reselect}' is not one of {', '.join(RESELECTIONS)}")
    startup = int(max_steps * 0.25)
    stage_len = (max_steps - startup) // 5
    if stage_len == 0 or step < startup or step // stage_len == 0:
        return True
    interval = 10 * (max(1, step - startup) // stage_len + 1)
    return step % interval == 0


class TeachingSampler(Sampler):
    """Train on the highest-error pixels, re-ranked on a schedule."""

    Config = TeachingConfig
    description = "implicit neural teaching: train on the top-k error pixels, re-ranked on a schedule (ICML 2024)"
    api_version = API_VERSION

    def __init__(self, config: TeachingConfig, context: SamplerContext) -> None:
        super().__init__(config, context)  # validates config (TeachingConfig.validate)
        self.image_index, self.pixel_xy = context.trainable_pixels()
        self.n_pixels = self.image_index.shape[0]
        mode = config.error_map
        self.chunked = mode == "chunked" or (mode == "auto" and context.task == "scene")
        self.subset: Optional[Tensor] = None  # [k] indices into the trainable pixels, by falling error
        self.error_map: Optional[Tensor] = None  # [P] chunked mode only
        self.cursor = 0
        self._last_pick: Optional[Tensor] = None

    def _k(self, step: int) -> int:
        ratio = ratio_at(self.config.schedule, step, self.context.max_steps, self.config.ratio)
        if math.isclose(ratio, 1.0):
            return self.n_pixels
        return max(1, int(ratio * self.n_pixels))

    def _errors(self, pick: Tensor) -> Tensor:
        device = self.context.device
        return self.context.predict_errors(self.image_index[pick].to(device), self.pixel_xy[pick].to(device)).detach().float().cpu()

    def _refresh(self, generator: torch.Generator) -> None:
        if self.error_map is None:
            # Unmeasured pixels rank above any real error, in random order.
            self.error_map = 1e3 + torch.rand(self.n_pixels, generator=generator)
        wanted = self.context.batch_size if self.config.refresh_rays == -1 else self.config.refresh_rays
        n = min(wanted, self.n_pixels)
        if n == 0:
            return
        pick = (self.cursor + torch.arange(n)) % self.n_pixels
        self.error_map[pick] = self._errors(pick)
        self.cursor = int((self.cursor + n) % self.n_pixels)

    def select(self, step: int) -> Tensor:
        """Rank the pixels and keep the top k -> indices ``[k]`` into the trainable pixels."""
        k = self._k(step)
        if k >= self.n_pixels:
            return torch.arange(self.n_pixels)
        if self.chunked:
            assert self.error_map is not None
            errors = self.error_map
        else:
            errors = self._errors(torch.arange(self.n_pixels))
        return torch.topk(errors, k).indices

    def sample(self, step: int, generator: torch.Generator) -> RayBatch:
        ctx = self.context
        if self.chunked:
            self._refresh(generator)
        if self.subset is None or is_selection_step(self.config.reselect, step, ctx.max_steps):
            self.subset = self.select(step)
        if self.subset.shape[0] <= ctx.batch_size:
            pick = self.subset
        else:
            pick = self.subset[torch.randint(0, self.subset.shape[0], (ctx.batch_size,), generator=generator)]
        self._last_pick = pick
        return RayBatch(
            image_index=self.image_index[pick].to(ctx.device),
            pixel_xy=self.pixel_xy[pick].to(ctx.device),
            weight=torch.ones(pick.shape[0], device=ctx.device),
        )

    def update(self, feedback: StepFeedback) -> None:
        if self.chunked and self.error_map is not None and self._last_pick is not None:
            self.error_map[self._last_pick] = feedback.error.detach().float().cpu()

    def state_dict(self) -> Dict[str, Any]:
        return {"subset": self.subset, "error_map": self.error_map, "cursor": self.cursor}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        subset, error_map = state.get("subset"), state.get("error_map")
        self.subset = None if subset is None else subset.cpu().long()
        self.error_map = None if error_map is None else error_map.cpu().float()
        self.cursor = int(state.get("cursor", 0))
