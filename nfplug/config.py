"""Training configuration: plain frozen dataclasses that tyro turns into the CLI.

The plugin parts (``field``, ``init``, ``sampler``) are added at run time by
:func:`nfplug.training.run.config_type` from the chosen plugins' own ``Config``
dataclasses, so ``--field.OPTION`` shows exactly the chosen field's options. A run
directory keeps the resolved config as plain JSON (``config.json``): plugin names
plus option values, never pickled classes.

Validation: every options dataclass, the engine's and each plugin's ``Config``, may define
``validate(self) -> None``, raising a one-line :class:`~nfplug.errors.NfplugError` that names
the option as ``--<slot>.<option-with-dashes>: ...``. :func:`validate_options` calls them
(nested parts first) and refuses NaN and infinite floats anywhere, right after the options
are parsed from the command line or read from a run's ``config.json``, whose values
:func:`from_json_dict` first checks against the fields' types. :func:`check`,
:func:`require_range`, :func:`require_choice` and :func:`check_memory` keep a
``validate()`` to one line per option.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Literal, Optional, Tuple, Union

from nfplug.errors import NfplugError

# ------------------------------------------------------------------ validation helpers


def check(ok: bool, option: str, message: str) -> None:
    """Raise ``NfplugError("{option}: {message}")`` unless ``ok``."""
    if not ok:
        raise NfplugError(f"{option}: {message}")


def _range_text(low: Any, high: Any, low_open: bool, high_open: bool) -> str:
    if high is None:
        if not low_open:
            return f"at least {low}"
        return "positive" if low == 0 else f"greater than {low}"
    if low is None:
        return f"less than {high}" if high_open else f"at most {high}"
    if not (low_open or high_open):
        return f"between {low} and {high}"
    return f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"


def require_range(
    value: Any, option: str, low: Any = None, high: Any = None, *, low_open: bool = False, high_open: bool = False
) -> None:
    """``value`` must be a finite number (not a bool) with ``low <= value <= high`` (``<`` when
    ``low_open`` / ``high_open``; ``None``: no bound); a tuple must hold such numbers only, and
    ``None`` (an optional option left unset) passes. Else one line: ``--opt: must be at least 1``."""
    if value is None:
        return
    many = isinstance(value, (tuple, list))
    subject = "every value must be" if many else "must be"
    for v in value if many else (value,):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise NfplugError(f"{option}: {subject} a number, got {v!r}")
        if isinstance(v, float) and not math.isfinite(v):
            raise NfplugError(f"{option}: {subject} a finite number, got {v}")
        if (low is not None and (v <= low if low_open else v < low)) or (high is not None and (v >= high if high_open else v > high)):
            text = _range_text(low, high, low_open, high_open)
            raise NfplugError(f"{option}: {subject} {text}" + (f", got {tuple(value)}" if many else ""))


def require_choice(value: Any, option: str, choices: Iterable[Any]) -> None:
    """``value`` must be one of ``choices``: else ``--opt: 'x' is not one of a, b``."""
    choices = tuple(choices)
    if value not in choices:
        raise NfplugError(f"{option}: {value!r} is not one of {', '.join(str(c) for c in choices)}")


MEMORY_FALLBACK = 64 * 10**9
"""Bytes of memory assumed when the OS does not say."""


def machine_memory() -> int:
    """Physical memory of this machine in bytes (:data:`MEMORY_FALLBACK` if the OS does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return MEMORY_FALLBACK


def check_memory(n_bytes: float, option: str, what: str) -> None:
    """Refuse options that would allocate more than this machine's memory, in one line:
    ``--opt: {what} would need 110.8 GB, more than this machine's 25.3 GB of memory``."""
    limit = machine_memory()
    check(n_bytes <= limit, option, f"{what} would need {n_bytes / 1e9:.1f} GB, more than this machine's {limit / 1e9:.1f} GB of memory")


def option_name(prefix: str, name: str) -> str:
    """``("--field.", "n_levels")`` -> ``"--field.n-levels"`` (the CLI spelling)."""
    return prefix + name.replace("_", "-")


def validate_options(options: Any, prefix: str = "--") -> None:
    """Validate an options dataclass and the dataclasses nested in it: a training config with
    its ``data``, ``render``, ``optim``, ``field``, ``init`` and ``sampler`` parts, or one
    plugin's ``Config`` (``prefix="--field."``). Every float must be finite; then each part's
    own ``validate()``, if it has one, is called (nested parts first)."""
    is_instance = dataclasses.is_dataclass(options) and not isinstance(options, type)
    for f in dataclasses.fields(options) if is_instance else ():
        value = getattr(options, f.name)
        option = option_name(prefix, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            validate_options(value, option + ".")
        elif isinstance(value, (tuple, list)):
            if any(isinstance(v, float) and not math.isfinite(v) for v in value):
                raise NfplugError(f"{option}: every value must be a finite number, got {tuple(value)}")
        elif isinstance(value, float) and not math.isfinite(value):
            raise NfplugError(f"{option}: must be a finite number, got {value}")
    validate = getattr(options, "validate", None)
    if callable(validate):
        validate()


# ------------------------------------------------------------------------- the options


@dataclass(frozen=True)
class DataConfig:
    path: str = "demo"
    """Scene folder (Blender transforms_{train,val,test}.json, nerfstudio/instant-ngp transforms.json,
    COLMAP sparse/0, LLFF poses_bounds.npy, or any installed format; see --data.format), 'demo' for
    the built-in procedural scene, or an image file (PNG, JPEG) to fit in 2D. ``--data PATH`` is a
    shortcut."""
    format: str = "auto"
    """Scene format (a dataset plugin, see 'nfplug plugins'); 'auto' detects it from the folder."""
    holdout_every: int = 8
    """Captures without their own split: hold out every N-th image (0, N, 2N, ...) as 'test'."""
    task: Literal["auto", "scene", "image"] = "auto"
    """What to train: 'auto' infers it from --data (an image file: image; else scene)."""
    holdout: Literal["none", "checkerboard"] = "none"
    """Image task: 'checkerboard' trains on half the pixels and evaluates on the other half."""
    downscale: int = 1
    """Shrink the images by this integer factor (e.g. 4: lego 400x400 -> 100x100)."""
    background: Literal["auto", "white", "black", "random", "learned"] = "auto"
    """Background behind what the field renders, and that transparent pixels are composited on while
    training. 'random': a random colour per ray and step (evaluation uses white); 'learned': a small
    network of the view direction, trained with the field and used by evaluation and renders too
    (for captures, whose sky and far walls lie beyond the field). 'auto': learned for 360-degree
    captures (2.7 dB better than white on cup_360 in 10 minutes; README), white otherwise."""
    gt_lookup: Literal["nearest", "bilinear"] = "nearest"
    """Ground truth of a ray at a continuous pixel position (rays off pixel centres, from
    --sampler softmine --sampler.no-snap or --sampler uniform --sampler.jitter): the nearest pixel,
    or bilinear between the 4 nearest (then d loss / d position includes the image's slope)."""
    val_split: str = "val"
    """Held-out split for periodic and final evaluation (falls back to 'test')."""

    def validate(self) -> None:
        check(self.path != "", "--data", "must not be empty")
        require_range(self.downscale, "--data.downscale", 1)
        require_range(self.holdout_every, "--data.holdout-every", 2)
        if self.format != "auto":
            from nfplug import registry

            valid = registry.names("datasets")
            if self.format not in valid:
                raise NfplugError(registry.unknown_name_message("datasets", self.format, valid))
        check(self.val_split != "", "--data.val-split", "must not be empty")


@dataclass(frozen=True)
class RenderConfig:
    grid_resolution: int = 128
    """Occupancy grid resolution per axis (nerfacc OccGridEstimator)."""
    grid_levels: Optional[int] = None
    """Occupancy grid levels, level k covering the scene box scaled 2^k about its centre (nerfacc's
    multi-level grid for unbounded scenes). Default: 1 for object scenes (Blender), 4 for captures."""
    cone_angle: Optional[float] = None
    """Ray-marching steps grow as max(step, t * cone_angle) (distant samples sparser). Default: 0 for
    object scenes, 0.004 for captures (nerfacc's unbounded setting)."""
    near: Optional[float] = None
    """Near plane in the scene's (normalised) units; default: from the dataset (Blender: 2). With
    NDC rays, the plane (distance along the mean camera's axis) that NDC maps to z = -1."""
    far: Optional[float] = None
    """Far plane; default: from the dataset (Blender: 6; captures: the outermost grid box)."""
    aabb: Optional[Tuple[float, float, float, float, float, float]] = None
    """Scene box xmin ymin zmin xmax ymax zmax (the grid's finest level), in the scene's
    (normalised) frame; default: from the dataset (Blender: -1.5..1.5; captures: the sparse points
    and the cameras)."""
    rays: Literal["auto", "world", "ndc"] = "auto"
    """Space the rays are marched in: 'world', or 'ndc' (normalised device coordinates of the mean
    training camera, the NeRF paper's treatment of forward-facing captures: even steps in
    disparity out to infinity). 'auto': world (it trained fern better than ndc in 10 minutes; README)."""
    contraction: Literal["auto", "none", "sphere", "cube"] = "auto"
    """Space the field lives in: 'none' (world positions, the field covering the outermost grid
    level), or the scene box contracted so all of space fits in |y| < 2 ('sphere': mip-NeRF 360's,
    'cube': nerfstudio's L-infinity one). 'auto': none for objects and NDC rays, the measured best
    for unbounded captures."""
    distortion_weight: float = 0.0
    """Training: weight of mip-NeRF 360's distortion loss (pulls each ray's weight into one short
    interval, against floaters and fog; distances as fractions of the far plane). 0: off."""
    samples_per_cell: Optional[float] = None
    """Ray-marching step = cell diagonal / samples_per_cell (render_step_size). Default: for object
    scenes (Blender, the demo) a step as wide as a training pixel at the box's centre, within 2 to
    3 samples a cell (lego: 2 at 100x100, 2.8 at 200x200; README); 2 for captures."""
    render_step: Optional[float] = None
    """Ray-marching step in the marched space's units, instead of the one --render.samples-per-cell gives."""
    alpha_thre: float = 0.0
    """Skip samples whose opacity is below this (nerfacc alpha_thre, capped at the grid's mean
    occupancy as nerfacc does). Training applies it from the end of the grid warm-up on: a new
    field's samples are all nearly transparent."""
    early_stop_eps: float = 1e-4
    """Stop marching a ray once its transmittance drops below this."""
    occ_thre: float = 0.01
    """Occupancy threshold on sigma * render_step_size when binarizing the grid."""
    grid_update_every: int = 16
    """Update the occupancy grid every N steps."""
    grid_warmup_steps: int = 256
    """Steps during which every cell is re-evaluated on each grid update."""
    warmup_step_scale: float = 4.0
    """Training marches steps this many times longer until the end of the grid warm-up
    (--render.grid-warmup-steps): a new field is transparent, so its rays march every occupied
    cell, 20-100 samples each, until the grid prunes. 1: the same step throughout (README). On a
    coarse grid (--render.grid-resolution 32) the 4x steps span 2 cells and cost PSNR early
    (the demo after 300 steps: 19.6 against 20.9 dB with 1)."""
    grid_sample_fraction: float = 0.0625
    """After the warm-up, each grid update evaluates this fraction of the cells drawn uniformly,
    plus the occupied cells (at most a quarter of all cells, as nerfacc). nerfacc draws 0.25; 1/16
    trained lego (200x200) 13% more steps in 10 minutes, to a 0.16 dB higher PSNR (README)."""
    chunk_rays: int = 16384
    """Rays per chunk when rendering without gradients (evaluation, videos). Larger chunks rendered
    lego faster on 2 cores (fewer passes per view); 16384 bounds the memory of captures that march
    hundreds of samples per ray."""

    def validate(self) -> None:
        # nerfacc counts a level's cells in int32: 1290^3 is the largest cube that fits.
        require_range(self.grid_resolution, "--render.grid-resolution", 1, 1290)
        if self.grid_levels is not None:
            require_range(self.grid_levels, "--render.grid-levels", 1, 12)
        if self.cone_angle is not None:
            require_range(self.cone_angle, "--render.cone-angle", 0, 1)
        if self.near is not None:
            require_range(self.near, "--render.near", 0)
        if self.far is not None:
            require_range(self.far, "--render.far", 0, low_open=True)
            check(self.near is None or self.near < self.far, "--render.far", f"must be greater than --render.near ({self.near})")
        if self.aabb is not None:
            check(all(lo < hi for lo, hi in zip(self.aabb[:3], self.aabb[3:])), "--render.aabb", f"needs min < max on every axis, got {list(self.aabb)}")
        # nerfacc's buffers: occupancy (float32) and binary (bool) per cell and level, coordinates
        # (3 x int64) and index (int64) per cell of one level.
        res, levels = self.grid_resolution, self.grid_levels or 4
        check_memory(res**3 * (5 * levels + 32), "--render.grid-resolution", f"the occupancy grid ({levels} level(s) of {res}^3 cells)")
        if self.samples_per_cell is not None:
            require_range(self.samples_per_cell, "--render.samples-per-cell", 0, low_open=True)
        require_range(self.distortion_weight, "--render.distortion-weight", 0)
        if self.render_step is not None:
            require_range(self.render_step, "--render.render-step", 0, low_open=True)
        require_range(self.alpha_thre, "--render.alpha-thre", 0, 1)
        require_range(self.early_stop_eps, "--render.early-stop-eps", 0, 1)
        require_range(self.occ_thre, "--render.occ-thre", 0)
        require_range(self.grid_update_every, "--render.grid-update-every", 1)
        require_range(self.grid_warmup_steps, "--render.grid-warmup-steps", 0)
        require_range(self.warmup_step_scale, "--render.warmup-step-scale", 1)
        require_range(self.grid_sample_fraction, "--render.grid-sample-fraction", 0, 1, low_open=True)
        require_range(self.chunk_rays, "--render.chunk-rays", 1)


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

    def validate(self) -> None:
        require_range(self.lr, "--optim.lr", 0, low_open=True)
        require_range(self.eps, "--optim.eps", 0, low_open=True)
        require_range(self.weight_decay, "--optim.weight-decay", 0)
        require_range(self.warmup_steps, "--optim.warmup-steps", 0)
        require_range(self.decay_milestones, "--optim.decay-milestones", 0, 1)
        require_range(self.decay_gamma, "--optim.decay-gamma", 0, 1, low_open=True)
        require_range(self.min_lr, "--optim.min-lr", 0)


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
    final_eval_views: Optional[int] = None
    """Held-out views of the final evaluation, spread evenly over the split (default: all of them)."""
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
    dist_timeout: float = 1800.0
    """Distributed runs (torchrun): seconds a process waits for the others before it stops with an
    error (a process that died is noticed at once; this bounds a hung one and must cover rank 0's
    periodic evaluations)."""
    dist_gradients: Literal["ddp", "flat"] = "ddp"
    """Distributed runs (torchrun): how the processes' gradients are combined: 'ddp' (PyTorch's
    DistributedDataParallel, averaged in buckets during the backward pass) or 'flat' (one explicit
    all-reduce of all gradients after it). They train the same; tools/bench_distributed.py compares
    their speed."""
    profile: bool = False
    """Time each stage of every training step (grid update, sampling, marching, hash encoding and
    MLPs forward and backward, volume rendering, optimizer, sampler update): prints a table at the
    end and writes profile.json in the run folder."""

    def validate(self) -> None:
        """The top-level options (``data``, ``render``, ``optim`` and the plugins' options are
        validated by :func:`validate_options`, which calls this last)."""
        check(self.output != "", "--output", "must not be empty")
        require_range(self.max_steps, "--max-steps", 1)
        require_range(self.max_time, "--max-time", 0, low_open=True)
        check(self.batch_size >= 0, "--batch-size", "must be at least 1 (or 0 for full batch)")
        require_range(self.eval_every, "--eval-every", 0)
        require_range(self.eval_views, "--eval-views", 1)
        if self.final_eval_views is not None:
            require_range(self.final_eval_views, "--final-eval-views", 1)
        require_range(self.eval_at_seconds, "--eval-at-seconds", 0)
        require_range(self.checkpoint_every, "--checkpoint-every", 0)
        require_range(self.seed, "--seed", 0, 2**32 - 1)  # numpy's seed range
        check(self.device != "", "--device", "must not be empty")
        require_range(self.threads, "--threads", 0)
        require_range(self.dist_timeout, "--dist-timeout", 0, low_open=True)


PLUGIN_SLOTS = ("field", "init", "sampler")
PLUGIN_KINDS = {"field": "fields", "init": "inits", "sampler": "samplers"}
DEFAULT_PLUGINS = {"field": "ngp", "init": "default", "sampler": "uniform"}
"""The plugins of a run whose ``config.json`` names none (runs written before a slot existed)."""


def default_plugins(kind: str) -> Dict[str, str]:
    """The plugins ``nfplug train`` uses when none is named, for ``kind`` of data ('object',
    'capture', 'demo' or 'image'; :func:`nfplug.training.tasks.data_kind`): ``softmine`` samples
    an object scene's training rays (lego at 200x200: 1.5 dB above ``uniform`` after 10
    minutes); ``uniform`` a capture's (fox: 0.5 dB above ``softmine``), the demo's (its
    1000-step quick start: half the time of ``softmine``'s and 0.5 dB higher) and an image's
    pixels (where ``--batch-size 0`` means every pixel each step). README, "Which sampler by default"."""
    return {**DEFAULT_PLUGINS, "sampler": "softmine" if kind == "object" else "uniform"}


def to_json_dict(config: Any, plugin_names: Dict[str, str]) -> Dict[str, Any]:
    """The resolved config as plain JSON: ``{"plugins": {...}, "field": {...}, ...}``."""
    values = dataclasses.asdict(config)
    values["plugins"] = dict(plugin_names)
    return values


def from_json_dict(cls: type, values: Dict[str, Any], where: str = "") -> Any:
    """Rebuild a (nested) config dataclass from :func:`to_json_dict` output.

    Every value is checked against its field's type (``int``, ``float`` (ints accepted),
    ``bool``, ``str``, ``Literal`` choices, ``Optional``, ``Tuple[...]``, nested dataclasses): a
    mismatch is a one-line NfplugError naming the key, e.g. ``field.hidden_dim: expected an
    integer, got 'wide'`` (``where`` prefixes nested keys; callers prefix the file). Lists
    become tuples, and keys the dataclass does not know are ignored, so a run written by an
    older version with a since-removed option still loads. Ranges are checked separately, by
    :func:`validate_options`.
    """
    if not isinstance(values, dict):
        raise NfplugError(f"{where.rstrip('.') or 'config'}: expected an object, got {_json_repr(values)}")
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - unresolvable annotations: take the values as they are
        hints = {}
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in values:
            kwargs[f.name] = _from_json(hints.get(f.name, Any), values[f.name], where + f.name)
    return cls(**kwargs)


def _json_repr(value: Any) -> str:
    return "null" if value is None else "true" if value is True else "false" if value is False else repr(value)


def _from_json(tp: Any, value: Any, key: str) -> Any:
    """``value`` read from JSON, checked against (and converted to) the type ``tp``."""

    def wrong(expected: str) -> NfplugError:
        return NfplugError(f"{key}: expected {expected}, got {_json_repr(value)}")

    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return from_json_dict(tp, value, key + ".")
    if tp is bool:
        if not isinstance(value, bool):
            raise wrong("true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong("an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise wrong("a number")
        try:
            return float(value)
        except OverflowError:
            raise wrong("a number within float range") from None
    if tp is str:
        if not isinstance(value, str):
            raise wrong("a string")
        return value
    if origin is Literal:
        if not any(value == a and type(value) is type(a) for a in args):
            raise wrong("one of " + ", ".join(repr(a) for a in args))
        return value
    if origin is Union or origin is getattr(types, "UnionType", Union):  # Optional[X], X | None (3.10+)
        options = [a for a in args if a is not type(None)]
        if value is None and len(options) < len(args):
            return None
        if len(options) == 1:  # Optional[X]: X's own message (it may name an element)
            return _from_json(options[0], value, key)
        for option in options:
            try:
                return _from_json(option, value, key)
            except NfplugError:
                pass
        raise wrong(" or ".join(str(getattr(a, "__name__", a)) for a in args))
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise wrong("a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_from_json(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
        if args and args != ((),):
            if len(value) != len(args):
                raise wrong(f"a list of {len(args)} values")
            return tuple(_from_json(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        return tuple(value)
    # Any, or a type nfplug does not check (a third-party plugin's): as before, lists become tuples.
    return tuple(value) if isinstance(value, list) else value
