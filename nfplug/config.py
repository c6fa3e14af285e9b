"""Training configuration: plain frozen dataclasses that tyro turns into the CLI.

The plugin parts (``field``, ``init``, ``sampler``) are added at run time by
:func:`nfplug.cli.train_config_type` from the chosen plugins' own ``Config``
dataclasses, so ``--field.OPTION`` shows exactly the chosen field's options. A run
directory keeps the resolved config as plain JSON (``config.json``): plugin names
plus option values, never pickled classes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Literal, Optional, Tuple


@dataclass(frozen=True)
class DataConfig:
    path: str = "demo"
    """Scene folder in the NeRF Blender format (transforms_{train,val,test}.json), 'demo'
    for the built-in procedural scene, or an image file (PNG, JPEG) to fit in 2D.
    ``--data PATH`` is a shortcut."""
    task: Literal["auto", "scene", "image"] = "auto"
    """What to train: 'auto' infers it from --data (an image file: image; else scene)."""
    holdout: Literal["none", "checkerboard"] = "none"
    """Image task: 'checkerboard' trains on half the pixels and evaluates on the other half."""
    downscale: int = 1
    """Shrink the images by this integer factor (e.g. 4: lego 400x400 -> 100x100)."""
    background: Literal["white", "black", "random"] = "white"
    """Background that transparent pixels are composited on while training
    ('random': a random colour per ray and step; evaluation always uses white)."""
    gt_lookup: Literal["nearest", "bilinear"] = "nearest"
    """Ground truth of a ray at a continuous pixel position (rays off pixel centres, from
    --sampler softmine --sampler.no-snap or --sampler uniform --sampler.jitter): the nearest pixel,
    or bilinear between the 4 nearest (then d loss / d position includes the image's slope)."""
    val_split: str = "val"
    """Held-out split for periodic and final evaluation (falls back to 'test')."""


@dataclass(frozen=True)
class RenderConfig:
    grid_resolution: int = 128
    """Occupancy grid resolution per axis (nerfacc OccGridEstimator)."""
    grid_levels: int = 1
    """Occupancy grid levels (1 for object scenes inside the aabb)."""
    samples_per_cell: float = 2.0
    """Ray-marching step = cell diagonal / samples_per_cell (render_step_size)."""
    alpha_thre: float = 0.0
    """Skip samples whose opacity is below this (nerfacc alpha_thre)."""
    early_stop_eps: float = 1e-4
    """Stop marching a ray once its transmittance drops below this."""
    occ_thre: float = 0.01
    """Occupancy threshold on sigma * render_step_size when binarizing the grid."""
    grid_update_every: int = 16
    """Update the occupancy grid every N steps."""
    grid_warmup_steps: int = 256
    """Steps during which every cell is re-evaluated on each grid update."""
    chunk_rays: int = 4096
    """Rays per chunk when rendering without gradients (evaluation, videos)."""


@dataclass(frozen=True)
class OptimConfig:
    lr: Optional[float] = None
    """Peak Adam learning rate (default: the field's own default_lr, e.g. 1e-2 for ngp, 1e-4 for siren)."""
    eps: float = 1e-15
    """Adam epsilon (instant-ngp uses 1e-15)."""
    weight_decay: float = 1e-6
    """Adam weight decay (L2) on all field parameters."""
    warmup_steps: int = 100
    """Linear learning-rate warm-up steps."""
    schedule: Literal["step", "cosine"] = "step"
    """After warm-up: 'step' multiplies by decay_gamma at each of decay_milestones; 'cosine' anneals
    from lr to min_lr over training, or over each stage of a staged field (INT's image experiments
    use cosine with --optim.warmup-steps 0)."""
    decay_milestones: Tuple[float, ...] = (0.5, 0.75, 0.9)
    """Fractions of training after which the learning rate is multiplied by decay_gamma ('step' schedule)."""
    decay_gamma: float = 0.33
    """Learning-rate decay factor at each milestone ('step' schedule)."""
    min_lr: float = 1e-6
    """Learning rate at the end of training ('cosine' schedule)."""


@dataclass(frozen=True)
class TrainBase:
    data: DataConfig = field(default_factory=DataConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    output: Optional[str] = None
    """Run directory (default: runs/<scene>-<field>-<sampler>-<time>)."""
    max_steps: int = 1000
    """Training steps."""
    max_time: Optional[float] = None
    """Stop after this many seconds of training (wall clock), even before max_steps."""
    batch_size: int = 4096
    """Training rays (pixels) per step; 0 trains on every trainable pixel each step (full batch)."""
    eval_every: int = 500
    """Evaluate on a few held-out views every N steps (0: only at the end)."""
    eval_views: int = 4
    """Held-out views used by the periodic evaluations (the final one uses all)."""
    eval_at_seconds: Tuple[float, ...] = ()
    """Also evaluate when the training time passes each of these seconds (e.g. 120 300 600)."""
    checkpoint_every: int = 500
    """Write a checkpoint every N steps (and always at the end or on Ctrl-C)."""
    seed: int = 0
    """Random seed: a run is deterministic for a given seed."""
    device: str = "auto"
    """'cpu', 'cuda', 'cuda:1' or 'auto' (CUDA if available, else CPU)."""
    threads: int = 0
    """CPU threads for torch (0: torch's default)."""
    progress: bool = True
    """Show a progress bar."""


PLUGIN_SLOTS = ("field", "init", "sampler")
PLUGIN_KINDS = {"field": "fields", "init": "inits", "sampler": "samplers"}
DEFAULT_PLUGINS = {"field": "ngp", "init": "default", "sampler": "uniform"}


def to_json_dict(config: Any, plugin_names: Dict[str, str]) -> Dict[str, Any]:
    """The resolved config as plain JSON: ``{"plugins": {...}, "field": {...}, ...}``."""
    values = dataclasses.asdict(config)
    values["plugins"] = dict(plugin_names)
    return values


def from_json_dict(cls: type, values: Dict[str, Any]) -> Any:
    """Rebuild a (nested) config dataclass from :func:`to_json_dict` output.

    Lists become tuples and keys the dataclass does not know are ignored, so a run
    written by an older version with a since-removed option still loads.
    """
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        value = values[f.name]
        default = _default_of(f)
        if dataclasses.is_dataclass(default) and isinstance(value, dict):
            value = from_json_dict(type(default), value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[f.name] = value
    return cls(**kwargs)


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None
