"""The plugin contracts: what a field, an init and a sampler implement.

A plugin is a class with a nested frozen ``Config`` dataclass (every option has a
default), a one-line ``description`` and a constructor taking that config plus a
context object built by the engine. Plugins are registered as Python entry points
in the groups ``nfplug.fields``, ``nfplug.inits``, ``nfplug.samplers`` and
``nfplug.datasets`` (scene formats, see :class:`Dataset`), whose value is ``"module:Class"``::

    [project.entry-points."nfplug.samplers"]
    my-sampler = "my_package.sampler:MySampler"

A ``Config`` may define ``validate(self) -> None``: the engine calls it right after parsing the
options (``nfplug train``, and a run's ``config.json`` for ``--resume``, ``eval``, ``render``,
``export``), and the plugin's base constructor calls it again; it raises
:class:`~nfplug.errors.NfplugError` naming the option the way the CLI spells it, e.g.
``--sampler.patch-size: must be at least 1``. :func:`check`, :func:`require_range`,
:func:`require_choice` and :func:`check_memory` make that one line per option::

    def validate(self) -> None:
        require_range(self.patch_size, "--sampler.patch-size", 1)

NaN and infinite floats are refused for every plugin, with or without ``validate()``.

Versions: :data:`API_VERSION` is the version of these contracts. A plugin may declare the version
it was written for as a class attribute, ``api_version = 2``; ``nfplug plugins`` (and loading it
for a run) then says so in one line when it differs from this nfplug's. ``nfplug.testing``
checks a plugin against the contracts (shapes, ranges, gradients, state, determinism, a few
training steps).

Conventions used throughout:

- Scene coordinates are world units; ``FieldContext.aabb`` is the scene box
  ``[xmin, ymin, zmin, xmax, ymax, zmax]`` the field should cover.
- Image coordinates (the ``image`` task) are in ``[-1, 1]^2``, ``x`` to the right and
  ``y`` down, pixel centres at ``-1 + (2 i + 1) / W``.
- Pixel coordinates handed out by samplers are continuous, in pixels, with the
  centre of pixel ``(col, row)`` at ``(col + 0.5, row + 0.5)``; ``[..., 0]`` is x
  (column), ``[..., 1]`` is y (row).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Dict, List, Optional, Protocol, Tuple, runtime_checkable

import torch
from torch import Tensor, nn

# The helpers for plugins' Config.validate() (see the module doc), re-exported here.
from nfplug.config import check, check_memory, require_choice, require_range, validate_options  # noqa: F401
from nfplug.errors import NfplugError

TASKS = ("scene", "image")

API_VERSION = 2
"""Version of the plugin contracts in this module (docs/DESIGN.md, "API versions")."""


@dataclass(frozen=True)
class EmptyConfig:
    """A plugin without options."""


# --------------------------------------------------------------------------- fields


@dataclass(frozen=True)
class FieldContext:
    """What the engine tells a field when building it.

    Attributes:
        task: ``"scene"`` (NeRF: density and view-dependent colour in 3D) or
            ``"image"`` (2D coordinates to colour).
        aabb: ``[6]`` scene box (scene task); for images ``[-1, -1, 1, 1]``.
        out_channels: colour channels to predict (3 for scenes, 1 or 3 for images).
        resolution: ``(height, width)`` of the image in pixels (image task), for fields
            laid out on the pixel grid; ``None`` for scenes.
        n_images: training images (scene task), for per-image appearance embeddings.
        pixel_size: scene task: the width a training pixel covers at the centre of the field's
            box, as a fraction of the box's largest side (the median over the training cameras
            of distance / focal length), for fields that size their finest detail to what the
            images resolve. Object scenes only (Blender, the demo); ``None`` for captures (their
            content lies at many distances), images, and runs from before it was recorded.
    """

    task: str
    aabb: Tuple[float, ...]
    out_channels: int = 3
    resolution: Optional[Tuple[int, int]] = None
    n_images: int = 0
    pixel_size: Optional[float] = None


class Field(nn.Module):
    """A neural field: what every field shares (its config and context, the box, options).

    Subclass :class:`SceneField`, :class:`ImageField` or both (then ``tasks = ("scene", "image")``
    and ``forward`` follows ``self.context.task``); each says what its task calls. Optional
    capabilities are separate protocols a field implements by defining their methods:
    :class:`LayerAccess` (``layers()``, for layer-wise inits), :class:`GridRendering`
    (``render_grid()``), :class:`MacCounting` (``inference_macs_per_sample()``) and
    :class:`Streamable` (parts and training stages). The engine asks for them through
    :func:`field_layers_or_none`, :func:`field_render_grid`, :func:`field_macs_per_sample`,
    :func:`field_n_parts`, :func:`decoding` (a streamable field's first k parts),
    :func:`field_parameter_parts` and :func:`field_training_stages`.

    For every task: ``loss_terms(step)`` adds regularisers to the training loss (default: none).
    """

    Config: ClassVar[type] = EmptyConfig
    description: ClassVar[str] = ""
    api_version: ClassVar[Optional[int]] = None
    """The :data:`API_VERSION` the plugin was written for (None: not declared); the same on every
    plugin kind."""
    tasks: ClassVar[Tuple[str, ...]] = ("scene",)
    default_lr: ClassVar[float] = 1e-2
    """Adam learning rate used when the user gives no ``--optim.lr`` (hash grids like 1e-2,
    sine networks 1e-4)."""

    def __init__(self, config: Any, context: FieldContext) -> None:
        super().__init__()
        name = type(self).__name__
        if context.task not in self.tasks:
            raise NfplugError(f"--field: {name} does not support the {context.task} task (it supports: {', '.join(self.tasks)})")
        dim = 3 if context.task == "scene" else 2
        aabb = torch.tensor(context.aabb, dtype=torch.float32)
        if aabb.numel() != 2 * dim or bool((aabb[dim:] <= aabb[:dim]).any()):
            raise NfplugError(f"{name}: aabb must be {2 * dim} numbers with min < max, got {context.aabb}")
        self.register_buffer("aabb", aabb, persistent=False)
        validate_options(config, "--field.")  # also when built directly, not from the CLI
        self.config = config
        self.context = context

    def unit_coords(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """Positions ``[N, D]`` -> ``(u [N, D], inside [N] bool)``: ``u`` in ``[0, 1]`` across the
        aabb (not clamped), ``inside`` whether the point lies in the aabb."""
        dim = x.shape[-1]
        lo, hi = self.aabb[:dim], self.aabb[dim:]
        u = (x - lo) / (hi - lo)
        return u, ((u >= 0) & (u <= 1)).all(-1)

    @property
    def uses_appearance(self) -> bool:
        """Scene task: whether ``forward`` takes ``image_index`` (per-image appearance): by default,
        whether the field has an ``appearance`` module (:class:`~nfplug.encoding.appearance.AppearanceEmbedding`)."""
        return getattr(self, "appearance", None) is not None

    def density(self, x: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} does not implement density()")

    def density_for_marching(self, x: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
        """Scene task, called without gradients: ``(density(x), reuse)``; see :class:`SceneField`."""
        return self.density(x), None

    def loss_terms(self, step: int) -> Dict[str, Tensor]:
        """Regularisers the field adds to the training loss, computed after the step's forward pass:
        name -> scalar tensor, already weighted (e.g. ``{"l2": 1e-6 * w.square().sum()}``). The
        engine adds them to the loss (they are not per ray, so no sampler weighs them) and logs
        them to TensorBoard as ``loss/<name>``. Default: none."""
        return {}


@dataclass(frozen=True)
class TrainingStage:
    """A span of training, from step ``start`` to the next stage's start (or the end).

    Attributes:
        start: first step of the stage.
        parts: every step sums the losses of the field decoded with its first k parts, for
            each k here (one optimizer step); ``()`` decodes the whole field once.
        frozen: parts whose parameters must not change in this stage: the engine keeps them
            out of a fresh optimizer built when the stage begins, so they stay bit-identical.
    """

    start: int
    parts: Tuple[int, ...] = ()
    frozen: Tuple[int, ...] = ()


class SceneField(Field):
    """A field for the scene task (NeRF). Implement:

    - ``density(x)``: ``x [N, 3]`` world positions -> ``sigma [N]``, non-negative (after the
      activation), zero outside ``context.aabb``;
    - ``forward(x, d)``: positions ``[N, 3]`` and unit view directions ``[N, 3]`` -> ``(rgb [N, 3]
      in [0, 1], sigma [N])``, with ``sigma`` equal to ``density(x)``.

    Optional: ``density_for_marching(x) -> (sigma, reuse)``, the marcher's density test without
    gradients; a ``reuse`` tensor ``[N, ...]`` (not None) makes the renderer call ``forward(x_kept,
    d, reuse=reuse[kept])`` on the samples it keeps, so the field need not redo that work (``ngp``
    passes its hash features). Per-image appearance: a field with an ``appearance`` module
    (:class:`~nfplug.encoding.appearance.AppearanceEmbedding`) is called ``forward(x, d,
    image_index=...)`` with each sample's training image ``[N]`` (long), or ``None`` for other views.
    """

    tasks: ClassVar[Tuple[str, ...]] = ("scene",)


class ImageField(Field):
    """A field for the image task (a 2D neural field). Implement:

    - ``forward(coords)``: ``coords [N, 2]`` in ``[-1, 1]`` -> colour ``[N, context.out_channels]``
      (raw values are fine, SIREN's protocol: renders are clamped to [0, 1]).
    """

    tasks: ClassVar[Tuple[str, ...]] = ("image",)


@runtime_checkable
class LayerAccess(Protocol):
    """A field whose layers layer-wise inits (``siren``, ``weight-scaling``) act on."""

    def layers(self) -> List[nn.Linear]:
        """The field's ``nn.Linear`` layers in order from input to output."""
        ...


@runtime_checkable
class GridRendering(Protocol):
    """An image field with a faster whole-image path than per-coordinate evaluation."""

    def render_grid(self) -> Optional[Tensor]:
        """The whole image ``[H, W, C]`` at the training resolution (e.g. with shared
        activations), or ``None`` when it cannot (then the engine evaluates coordinates)."""
        ...


@runtime_checkable
class MacCounting(Protocol):
    """A field that counts its inference cost (``nfplug eval`` prints it)."""

    def inference_macs_per_sample(self) -> Optional[float]:
        """Multiply-accumulates per output sample at inference, or ``None``."""
        ...


@runtime_checkable
class Streamable(Protocol):
    """A field decoded from its first ``k`` parts, coarse to fine (Cho et al., ECCV 2022); an
    ordinary field is one part trained in one stage. Its ``forward(..., parts=k)`` and
    ``density(x, parts=k)`` take the number of parts to decode (``None``: all of them); the engine
    passes it through :func:`decoding`, never by switching the field into a mode."""

    def n_parts(self) -> int:
        """Parts the field decodes in order; the first k alone give a coarser result."""
        ...

    def parameter_parts(self) -> Dict[str, int]:
        """State-dict key -> the part (1-based) it belongs to, for every parameter; entries not
        listed (buffers) go with part 1 in a streaming export."""
        ...

    def training_stages(self, max_steps: int) -> List[TrainingStage]:
        """How the engine trains the field: stages in order of their first step."""
        ...


class PartsView:
    """A streamable field decoding its first ``parts`` parts: what the engine hands to a task or a
    renderer in place of the field (:func:`decoding`). Calls pass ``parts=`` explicitly; every
    other attribute is the field's."""

    def __init__(self, field: Field, parts: int) -> None:
        self.field = field
        self.parts = parts

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.field(*args, parts=self.parts, **kwargs)

    def density(self, x: Tensor) -> Tensor:
        return self.field.density(x, parts=self.parts)

    def density_for_marching(self, x: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
        return self.density(x), None

    def render_grid(self) -> Optional[Tensor]:
        return None  # a field's fast whole-image path decodes all its parts

    def __getattr__(self, name: str) -> Any:
        return getattr(self.field, name)


def field_layers_or_none(field: Field) -> Optional[List[nn.Linear]]:
    """``field.layers()`` for a :class:`LayerAccess` field, else None."""
    return list(field.layers()) if isinstance(field, LayerAccess) else None


def field_render_grid(field: Field) -> Optional[Tensor]:
    return field.render_grid() if isinstance(field, GridRendering) else None


def field_macs_per_sample(field: Field) -> Optional[float]:
    return field.inference_macs_per_sample() if isinstance(field, MacCounting) else None


def field_n_parts(field: Field) -> int:
    return field.n_parts() if isinstance(field, Streamable) else 1


def decoding(field: Field, k: Optional[int]) -> Any:
    """``field`` decoding its first ``k`` parts (None: all of them): the field itself, or a
    :class:`PartsView`; a one-line error for a ``k`` the field does not have."""
    if k is None:  # the common case, and every step of an ordinary field: no capability check
        return field
    n = field_n_parts(field)
    if k == n:
        return field
    if not isinstance(field, Streamable):
        raise NfplugError(f"--parts: the {type(field).__name__} field is not streamable (it has 1 part)")
    if not (isinstance(k, int) and 1 <= k <= n):
        raise NfplugError(f"--parts: must be between 1 and {n} (this streamable field's parts), got {k}")
    return PartsView(field, k)


def field_parameter_parts(field: Field) -> Dict[str, int]:
    if isinstance(field, Streamable):
        return field.parameter_parts()
    return {name: 1 for name, _ in field.named_parameters()}


def field_training_stages(field: Field, max_steps: int) -> List[TrainingStage]:
    return field.training_stages(max_steps) if isinstance(field, Streamable) else [TrainingStage(start=0)]


# ---------------------------------------------------------------------------- inits


class Init:
    """Initializes a built field in place.

    ``apply(field)`` raises :class:`nfplug.errors.NfplugError` (one line) when it
    cannot act on that field, e.g. a layer-wise init on a field without ``layers()``.
    """

    Config: ClassVar[type] = EmptyConfig
    description: ClassVar[str] = ""
    api_version: ClassVar[Optional[int]] = None

    def __init__(self, config: Any) -> None:
        validate_options(config, "--init.")
        self.config = config

    def apply(self, field: Field, generator: torch.Generator) -> None:
        raise NotImplementedError


# ------------------------------------------------------------------------- samplers


@dataclass(frozen=True)
class SamplerContext:
    """What the engine tells a sampler about the training set.

    Attributes:
        n_images: number of training images (1 for the image task).
        height, width: image size in pixels (all training images share it).
        batch_size: rays (pixels) per training step; equal to the number of trainable
            pixels for full-batch training (``--batch-size 0``).
        max_steps: planned number of training steps (for schedules).
        task: ``"scene"`` or ``"image"``.
        device: where the returned tensors must live.
        images: ``[n_images, H, W, C]`` training images in ``[0, 1]`` (read-only), for
            samplers that look at the data (e.g. edge maps).
        predict_errors: ``fn(image_index [M] long, pixel_xy [M, 2]) -> [M]`` the current
            per-pixel L1 error (summed over channels) of the field, computed without
            gradients in chunks by the engine. Expensive for scenes: a forward pass
            per pixel.
        pixel_mask: ``[n_images, H, W]`` bool, the pixels a sampler may train on, or
            ``None`` for all (e.g. a checkerboard hold-out keeps half of them back).
        rank, world_size: this process's rank and the number of processes of a distributed run
            (``torchrun``; 0 and 1 otherwise). See :attr:`Sampler.distributed` for what changes.
    """

    n_images: int
    height: int
    width: int
    batch_size: int
    max_steps: int
    task: str
    device: torch.device
    images: Tensor
    predict_errors: Callable[[Tensor, Tensor], Tensor]
    pixel_mask: Optional[Tensor] = None
    rank: int = 0
    world_size: int = 1

    def trainable_pixels(self) -> Tuple[Tensor, Tensor]:
        """-> image_index ``[P]`` long, pixel centres ``[P, 2]`` of every trainable pixel, in order."""
        if self.pixel_mask is None:
            mask = torch.ones(self.n_images, self.height, self.width, dtype=torch.bool)
        else:
            mask = self.pixel_mask.cpu()
        index, rows, cols = mask.nonzero(as_tuple=True)
        return index, torch.stack([cols, rows], dim=-1).float() + 0.5

@dataclass
class RayBatch:
    """The training rays of one step.

    Attributes:
        image_index: ``[B]`` long, which training image each ray comes from.
        pixel_xy: ``[B, 2]`` float, continuous pixel coordinates (see module doc).
        weight: ``[B]`` float, positive loss weight of each ray (detached).
    """

    image_index: Tensor
    pixel_xy: Tensor
    weight: Tensor


@dataclass
class StepFeedback:
    """What the engine hands back to the sampler after a training step.

    Attributes:
        step: the step that was just taken.
        batch: the batch the sampler returned for that step, its ``weight`` replaced by
            the one :meth:`Sampler.loss_weight` returned (the weights actually used).
        loss: ``[B]`` per-ray loss (mean squared error over channels), unweighted, detached.
        error: ``[B]`` per-ray L1 error summed over channels, detached.
        position_grad: ``[B, 2]`` gradient of each ray's (unweighted) loss with
            respect to its ``pixel_xy``, or ``None`` unless the sampler sets
            ``needs_position_grad``.
    """

    step: int
    batch: RayBatch
    loss: Tensor
    error: Tensor
    position_grad: Optional[Tensor] = None


class Sampler:
    """Chooses the training rays of each step and learns from their losses.

    The engine calls, every step: ``batch = sample(step)``, runs the forward pass,
    ``batch.weight = loss_weight(step, batch, loss, error)``, trains on it, then
    ``update(feedback)``. State that must survive ``--resume`` goes through
    ``state_dict`` / ``load_state_dict`` (tensors and plain Python values only).

    **Distributed training** (``torchrun``, :mod:`nfplug.distributed`): a sampler declares in
    :attr:`distributed` how its state is kept consistent over the processes.

    * ``"replicated"`` (the default; every built-in): each process builds the same sampler with
      the same seed, and ``sample`` returns the whole global batch (``context.batch_size`` rays,
      the same on every process). The engine trains each process on its share of the rays and
      gathers their losses, errors and position gradients, so ``loss_weight`` and ``update`` see
      the whole batch on every process: the state is reduced by gathering the feedback, stays
      identical everywhere, and a run takes the same steps with any number of processes.
      ``context.predict_errors`` is split over the processes (each computes its share of the
      pixels, the results are gathered), so every process must call it at the same point with
      the same pixels, which a sampler that draws only from the ``generator`` it is handed does.
      Checkpoints hold rank 0's state; ``--resume`` works with any number of processes.
    * ``"sharded"``: each process keeps its own state over a disjoint share of the training
      pixels: ``context.pixel_mask`` holds only this process's share (whole images, ``i %
      world_size == rank``, when there are at least as many images as processes, else rows of
      pixels), ``context.batch_size`` is this process's share of the global batch, and
      ``sample``, ``loss_weight``, ``update`` and ``predict_errors`` see only this process's rays
      (each process's ``generator`` is seeded differently). Checkpoints hold every process's
      state; ``--resume`` with a different number of processes starts the sampler afresh (one
      line says so).
    """

    Config: ClassVar[type] = EmptyConfig
    description: ClassVar[str] = ""
    api_version: ClassVar[Optional[int]] = None
    needs_position_grad: ClassVar[bool] = False
    distributed: ClassVar[str] = "replicated"
    """How a distributed run keeps this sampler's state consistent: ``"replicated"`` or ``"sharded"`` (class doc)."""

    def __init__(self, config: Any, context: SamplerContext) -> None:
        validate_options(config, "--sampler.")
        self.config = config
        self.context = context

    def sample(self, step: int, generator: torch.Generator) -> RayBatch:
        raise NotImplementedError

    def loss_weight(self, step: int, batch: RayBatch, loss: Tensor, error: Tensor) -> Tensor:
        """Per-ray loss weights ``[B]`` that depend on this step's own prediction.

        Called by the engine after the forward pass and before the loss, with this
        step's detached per-ray ``loss [B]`` (MSE over channels) and ``error [B]`` (L1
        summed over channels). The result must be positive and finite; the engine
        detaches it, uses it in ``mean(weight * loss)`` and stores it in
        ``batch.weight`` (so :meth:`update` sees the weights actually used).
        Default: ``batch.weight`` as returned by :meth:`sample`.
        """
        return batch.weight

    def update(self, feedback: StepFeedback) -> None:
        """Receive the per-ray losses of the last step (default: ignore them)."""

    def scalars(self) -> Dict[str, float]:
        """Numbers worth plotting about the sampler's last step (the engine logs them to
        TensorBoard as ``sampler/<name>`` every 10 steps); default: none."""
        return {}

    def state_dict(self) -> Dict[str, Any]:
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore from :meth:`state_dict` (default: nothing to restore)."""


# ------------------------------------------------------------------------- datasets


@dataclass(frozen=True)
class DatasetContext:
    """What the engine tells a dataset when opening a scene folder.

    Attributes:
        root: the scene folder (``--data``).
        downscale: integer factor; images are ``(W // N, H // N)`` and intrinsics scaled to
            match (``--data.downscale``). A dataset may read pre-shrunk copies (``images_N/``).
        holdout_every: for captures without their own split, every N-th image (0, N, 2N, ...)
            is held out as ``test`` (the LLFF convention; ``--data.holdout-every``).
        background: RGB in ``[0, 1]`` that transparent pixels are composited on.
    """

    root: Path
    downscale: int = 1
    holdout_every: int = 8
    background: Tuple[float, float, float] = (1.0, 1.0, 1.0)


@dataclass
class DatasetSplit:
    """The images and cameras of one split, as a dataset read them.

    Attributes:
        images: ``[N, H, W, 3]`` float32 in ``[0, 1]``, composited on the context's background.
        alphas: ``[N, H, W, 1]`` opacity (ones for photos without alpha).
        cameras: :class:`~nfplug.data.cameras.Cameras` in the dataset's own world frame, OpenCV
            convention, per-image intrinsics for these images and optional ``dist`` (OpenCV
            ``k1, k2, p1, p2``).
        paths: the ``N`` image files, in order.
    """

    images: Tensor
    alphas: Tensor
    cameras: Any
    paths: List[str]


@dataclass
class SceneHints:
    """What a dataset knows about the scene; the engine, not the loader, turns it into the
    render setup (pose normalisation, scene box, near and far).

    Attributes:
        layout: ``"object"`` (bounded, already in a known box: Blender), ``"360"`` (cameras all
            around), ``"forward-facing"`` (LLFF) or ``"unknown"``.
        normalize: whether the engine should orient, centre and scale the poses (captures);
            ``False`` keeps the dataset's world frame (Blender scenes are already canonical).
        aabb: ``(xmin, ymin, zmin, xmax, ymax, zmax)``, a box known to hold the scene, in the
            dataset's world frame, or ``None``.
        points: ``[P, 3]`` sparse 3D points (structure from motion) in that frame, or ``None``.
        near, far: ray bounds in the dataset's world units, if known.
        aabb_scale: instant-ngp's ``aabb_scale`` (how far the scene extends beyond the cameras'
            unit box), if given; kept in the run's ``scene.json`` (the bounded renderer does not
            use it yet).
    """

    layout: str = "unknown"
    normalize: bool = True
    aabb: Optional[Tuple[float, ...]] = None
    points: Optional[Tensor] = None
    near: Optional[float] = None
    far: Optional[float] = None
    aabb_scale: Optional[float] = None


class Dataset:
    """Reads one scene format (the ``--data`` folder) into splits of posed images.

    ``detect(root)`` says whether a folder is in this format without reading the images; when
    several formats match, the highest ``priority`` wins (``--data.format NAME`` forces one).
    ``splits()`` names the splits (one must be ``train``, the one trained on; captures without their
    own split hold out every ``holdout_every``-th image as ``test``), ``load(split)``
    reads one, ``hints()`` describes the scene. Every problem with the input raises
    :class:`~nfplug.errors.NfplugError` with one line naming the file.
    """

    Config: ClassVar[type] = EmptyConfig
    description: ClassVar[str] = ""
    api_version: ClassVar[Optional[int]] = None
    priority: ClassVar[int] = 0

    def __init__(self, config: Any, context: DatasetContext) -> None:
        validate_options(config, "--data.")
        self.config = config
        self.context = context

    @classmethod
    def detect(cls, root: Path) -> bool:
        raise NotImplementedError

    def splits(self) -> List[str]:
        raise NotImplementedError

    def load(self, split: str) -> DatasetSplit:
        raise NotImplementedError

    def hints(self) -> SceneHints:
        return SceneHints()


PLUGIN_BASES = {"fields": Field, "inits": Init, "samplers": Sampler, "datasets": Dataset}

