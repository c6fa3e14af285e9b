"""Conformance checks for plugins: the contracts of :mod:`nfplug.api` that the engine relies on.

A plugin author runs them from their own tests, before shipping::

    from nfplug.testing import check_sampler
    from my_package.sampler import MySampler

    def test_my_sampler_follows_the_contract():
        check_sampler(MySampler)

:func:`check_field`, :func:`check_sampler`, :func:`check_init` and :func:`check_dataset` each build
the plugin on small inputs and check what the engine assumes of it: shapes, dtypes and devices,
value ranges (non-negative density, colours in [0, 1], positive finite weights), that gradients
reach its parameters, that its state goes through ``torch.load(weights_only=True)`` and gives the
same results, determinism for a seed, masks respected, and (``train=True``) a few real training
steps on the built-in demo scene and on a small image, stopped at a checkpoint and resumed
identically. A broken rule raises :class:`ContractError`, an ``AssertionError`` (so pytest reports a
failure) whose one-line message names the plugin, the rule, what was found and how to fix it.

nfplug's own test suite runs these checks over every installed plugin (``tests/test_conformance.py``),
built-in or not; :func:`installed` lists them for ``pytest.mark.parametrize``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from nfplug import registry
from nfplug.api import (
    Dataset,
    DatasetContext,
    DatasetSplit,
    Field,
    FieldContext,
    Streamable,
    decoding,
    Init,
    RayBatch,
    Sampler,
    SamplerContext,
    SceneHints,
    StepFeedback,
)
from nfplug.errors import NfplugError

__all__ = ["ContractError", "check_field", "check_sampler", "check_init", "check_dataset", "installed", "smooth_image", "write_png"]

SCENE_AABB = (-1.5, -1.5, -1.5, 1.5, 1.5, 1.5)
IMAGE_AABB = (-1.0, -1.0, 1.0, 1.0)
N_POINTS = 300
LAYOUTS = ("object", "360", "forward-facing", "unknown")
TRAIN_STEPS = 6  # the tiny runs: a checkpoint at step 3, resumed to step 6
TINY_SCENE = ["--batch-size", "256", "--render.grid-resolution", "32", "--eval-views", "1"]
TINY_COMMON = ["--eval-every", "0", "--final-eval-views", "1", "--no-progress", "--threads", "1", "--max-steps", str(TRAIN_STEPS), "--checkpoint-every", "3"]


class ContractError(AssertionError):
    """A plugin broke a rule of its contract; the message says which, and how to fix it."""


def _fail(plugin: str, rule: str, found: str, fix: str) -> None:
    raise ContractError(f"{plugin}: {rule}: {found}. Fix: {fix}")


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def installed(kind: str) -> List[str]:
    """The names of the installed plugins of ``kind`` (``fields``, ``inits``, ``samplers``,
    ``datasets``), for ``pytest.mark.parametrize``."""
    return registry.names(kind)


# ------------------------------------------------------------------------------ shared checks


def _check_tensor(plugin: str, rule: str, what: str, value: Any, shape: Tuple[int, ...], dtype: torch.dtype, device: torch.device, fix: str) -> Tensor:
    if not isinstance(value, Tensor):
        _fail(plugin, rule, f"{what} is a {type(value).__name__}, not a tensor", fix)
    if tuple(value.shape) != shape:
        _fail(plugin, rule, f"{what} has shape {list(value.shape)}, expected {list(shape)}", fix)
    if value.dtype != dtype:
        _fail(plugin, rule, f"{what} has dtype {value.dtype}, expected {dtype}", fix)
    if value.device.type != device.type:
        _fail(plugin, rule, f"{what} is on {value.device}, expected {device} (the inputs' device)", fix)
    if value.is_floating_point() and not bool(torch.isfinite(value).all()):
        _fail(plugin, rule, f"{what} holds NaN or infinite values", fix)
    return value


def _round_trip(plugin: str, state: Any, what: str) -> Any:
    """``state`` through ``torch.save`` and ``torch.load(weights_only=True)``, as checkpoints go."""
    buffer = io.BytesIO()
    try:
        torch.save(state, buffer)
        buffer.seek(0)
        return torch.load(buffer, weights_only=True)
    except Exception as e:  # noqa: BLE001 - whatever pickling raises, the rule is the same
        _fail(
            plugin, "state round-trips through torch.load(weights_only=True)",
            f"{what} could not be saved and loaded back ({type(e).__name__}: {str(e).splitlines()[0][:160]})",
            "keep only tensors and plain Python values (numbers, strings, lists, dicts) in the state",
        )


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return isinstance(a, Tensor) and isinstance(b, Tensor) and a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, (tuple, list)):
        return isinstance(b, (tuple, list)) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        return type(a) is type(b) and all(_same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    return a == b


def _config(cls: type, config: Any) -> Any:
    return cls.Config() if config is None else config


# ------------------------------------------------------------------------------------- fields


def field_context(task: str, out_channels: int = 3) -> FieldContext:
    """The small context the checks build fields with (a scene box of side 3, or a 16x16 image)."""
    if task == "scene":
        return FieldContext(task="scene", aabb=SCENE_AABB, n_images=3, pixel_size=1.0 / 64)
    return FieldContext(task="image", aabb=IMAGE_AABB, out_channels=out_channels, resolution=(16, 16))


def _build_field(cls: type, config: Any, context: FieldContext, seed: int) -> Field:
    plugin = _name(cls)
    torch.manual_seed(seed)
    try:
        field = cls(config, context)
    except NfplugError:
        raise
    except Exception as e:  # noqa: BLE001
        _fail(plugin, "builds from (config, context)", f"{type(e).__name__}: {e}", f"make {cls.__name__}(config, context) work for the {context.task} task it lists in tasks")
    if not isinstance(field, Field):
        _fail(plugin, "is a Field", f"{type(field).__name__} is not an nfplug.api.Field", "subclass nfplug.api.Field")
    return field


def _scene_inputs(n: int = N_POINTS) -> Tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(7)
    lo, hi = torch.tensor(SCENE_AABB[:3]), torch.tensor(SCENE_AABB[3:])
    x = lo + (hi - lo) * torch.rand(n, 3, generator=g)
    x[:4] = torch.tensor([[2.0, 0.0, 0.0], [0.0, -2.5, 0.0], [0.0, 0.0, 1.6], [3.0, 3.0, 3.0]])  # outside the box
    d = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    image_index = torch.randint(0, 3, (n,), generator=g)
    return x, d, image_index


def _image_inputs(n: int = N_POINTS) -> Tensor:
    g = torch.Generator().manual_seed(7)
    return torch.rand(n, 2, generator=g) * 2 - 1


def _scene_forward(field: Field, x: Tensor, d: Tensor, image_index: Optional[Tensor], **kwargs: Any) -> Any:
    if field.uses_appearance:
        kwargs["image_index"] = image_index
    return field(x, d, **kwargs)


def _check_scene_outputs(plugin: str, field: Field, x: Tensor, d: Tensor, image_index: Tensor) -> Tuple[Tensor, Tensor]:
    n = x.shape[0]
    cpu = x.device
    with torch.no_grad():
        sigma = field.density(x)
    _check_tensor(plugin, "density(x) shape, dtype, device", "density(x) for x [N, 3]", sigma, (n,), torch.float32, cpu, "return one float32 density per point, shape [N]")
    if bool((sigma < 0).any()):
        _fail(plugin, "non-negative density", f"density(x) has {int((sigma < 0).sum())} negative values (min {float(sigma.min()):.3g})", "end the density with a non-negative activation (trunc_exp, softplus, relu)")
    out = _scene_forward(field, x, d, image_index)
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        _fail(plugin, "forward(x, d) returns (rgb, sigma)", f"it returned {type(out).__name__}", "return a tuple (rgb [N, 3], sigma [N])")
    rgb, sigma_f = out
    _check_tensor(plugin, "forward(x, d) shape, dtype, device", "rgb", rgb, (n, 3), torch.float32, cpu, "return rgb [N, 3] float32 on the inputs' device")
    _check_tensor(plugin, "forward(x, d) shape, dtype, device", "sigma", sigma_f, (n,), torch.float32, cpu, "return sigma [N] float32 on the inputs' device")
    if bool((rgb < 0).any() or (rgb > 1).any()):
        _fail(plugin, "colours in [0, 1]", f"rgb spans [{float(rgb.detach().min()):.3g}, {float(rgb.detach().max()):.3g}]", "end the colour with a sigmoid (or clamp it)")
    if bool((sigma_f < 0).any()):
        _fail(plugin, "non-negative density", f"forward's sigma has negative values (min {float(sigma_f.detach().min()):.3g})", "end the density with a non-negative activation")
    if not torch.allclose(sigma_f.detach(), sigma, rtol=1e-3, atol=1e-4):
        worst = float((sigma_f.detach() - sigma).abs().max())
        _fail(plugin, "forward's sigma equals density(x)", f"they differ by up to {worst:.3g}", "compute both from the same code: the marcher prunes with density() and renders with forward()")
    with torch.no_grad():
        marched = field.density_for_marching(x)
    if not (isinstance(marched, (tuple, list)) and len(marched) == 2):
        _fail(plugin, "density_for_marching(x) returns (sigma, reuse)", f"it returned {type(marched).__name__}", "return (density(x), None), or (sigma, reuse [N, ...])")
    sigma_m, reuse = marched
    _check_tensor(plugin, "density_for_marching(x) shape, dtype, device", "its sigma", sigma_m, (n,), torch.float32, cpu, "return sigma [N] as density(x) does")
    if not torch.allclose(sigma_m, sigma, rtol=1e-3, atol=1e-4):
        _fail(plugin, "density_for_marching(x) gives density(x)", f"they differ by up to {float((sigma_m - sigma).abs().max()):.3g}", "return density(x) (or the same values computed faster)")
    if reuse is not None:
        if not isinstance(reuse, Tensor) or reuse.shape[0] != n:
            _fail(plugin, "density_for_marching's reuse has a row per point", f"got {getattr(reuse, 'shape', type(reuse).__name__)}", "return a tensor [N, ...] or None")
        keep = torch.arange(0, n, 3)
        with torch.no_grad():
            a = _scene_forward(field, x[keep], d[keep], image_index[keep], reuse=reuse[keep])
            b = _scene_forward(field, x[keep], d[keep], image_index[keep])
        if not all(torch.allclose(u, v, rtol=1e-4, atol=1e-5) for u, v in zip(a, b)):
            _fail(plugin, "forward with reuse equals forward without", "the renderer's reused work changed the colours or densities", "reuse only what forward(x, d) would compute itself for those points")
    try:
        with torch.no_grad():
            empty = field.density(x[:0])
            rgb0, sigma0 = _scene_forward(field, x[:0], d[:0], image_index[:0])
    except Exception as e:  # noqa: BLE001
        _fail(plugin, "no points in, no points out", f"density or forward of 0 points raised {type(e).__name__}: {str(e).splitlines()[0][:160]}",
              "handle N = 0 (a ray batch can miss every occupied cell): avoid reshape(N, -1) and similar")
    if tuple(empty.shape) != (0,) or tuple(rgb0.shape) != (0, 3) or tuple(sigma0.shape) != (0,):
        _fail(plugin, "no points in, no points out", f"density gave {list(empty.shape)}, forward {list(rgb0.shape)} and {list(sigma0.shape)}", "handle N = 0 (a ray batch can miss every occupied cell)")
    if field.uses_appearance:
        with torch.no_grad():
            rgb_none, _ = field(x, d, image_index=None)
        _check_tensor(plugin, "forward(x, d, image_index=None) for views that are not training images", "rgb", rgb_none, (n, 3), torch.float32, cpu, "use a mean or default appearance when image_index is None")
    return rgb, sigma_f


def _check_image_outputs(plugin: str, field: Field, coords: Tensor, channels: int) -> Tensor:
    out = field(coords)
    # No range rule: image fields may give raw linear values (SIREN's protocol); renders are clamped.
    _check_tensor(plugin, "forward(coords) shape, dtype, device", "the image task's forward(coords [N, 2])", out, (coords.shape[0], channels), torch.float32, coords.device,
                  f"return [N, context.out_channels] ({channels} here) float32")
    return out


def _field_outputs(plugin: str, field: Field, task: str, channels: int = 3) -> List[Tensor]:
    if task == "scene":
        x, d, index = _scene_inputs()
        return list(_check_scene_outputs(plugin, field, x, d, index))
    return [_check_image_outputs(plugin, field, _image_inputs(), channels)]


def _check_gradients(plugin: str, field: Field, outputs: List[Tensor]) -> None:
    field.zero_grad(set_to_none=True)
    loss = sum(o.float().square().mean() + o.float().mean() for o in outputs)
    if not isinstance(loss, Tensor) or not loss.requires_grad:
        _fail(plugin, "gradients flow", "the outputs do not require gradients", "do not detach the outputs or run forward under torch.no_grad()")
    loss.backward()
    grads = {name: p.grad for name, p in field.named_parameters() if p.requires_grad}
    if not grads:
        _fail(plugin, "gradients flow", "the field has no trainable parameters", "register parameters (nn.Parameter, nn.Linear, ...) so the optimizer can train them")
    for name, g in grads.items():
        if g is not None and not bool(torch.isfinite(g).all()):
            _fail(plugin, "gradients flow", f"the gradient of {name} holds NaN or infinite values", "guard divisions, logs and exps (e.g. trunc_exp for densities)")
    if not any(g is not None and bool((g != 0).any()) for g in grads.values()):
        _fail(plugin, "gradients flow", "no parameter received a non-zero gradient from the outputs", "compute the outputs from the parameters with differentiable operations")
    field.zero_grad(set_to_none=True)


def _check_streamable(plugin: str, field: Field, task: str, channels: int) -> None:
    if not isinstance(field, Streamable):
        return
    n = field.n_parts()
    if not isinstance(n, int) or n < 1:
        _fail(plugin, "n_parts() is a positive int", f"got {n!r}", "return the number of parts (1 for an ordinary field)")
    params = {name for name, _ in field.named_parameters()}
    parts = field.parameter_parts()
    if set(parts) != params or any(not (isinstance(k, int) and 1 <= k <= n) for k in parts.values()):
        _fail(plugin, "parameter_parts() maps every parameter to a part in 1..n_parts()",
              f"missing {sorted(params - set(parts))[:3]}, unknown {sorted(set(parts) - params)[:3]}, parts {sorted(set(parts.values()))}",
              "list each named parameter once with its 1-based part")
    if n > 1:
        with torch.no_grad():
            for k in range(1, n + 1):  # forward(..., parts=k) and density(x, parts=k), through the engine's view
                _field_outputs(plugin, decoding(field, k), task, channels)
    stages = field.training_stages(100)
    if not stages or stages[0].start != 0 or any(b.start <= a.start for a, b in zip(stages, stages[1:])):
        _fail(plugin, "training_stages(max_steps) starts at step 0, in order", f"got starts {[s.start for s in stages]}", "return stages sorted by start, the first at 0")


def check_field(cls: type, config: Any = None, *, tasks: Optional[Sequence[str]] = None, train: bool = True, name: Optional[str] = None) -> None:
    """Check a field class against the ``Field`` contract for each task it supports (or ``tasks``).

    Rules: it builds from ``(config, context)``; ``density`` and ``forward`` give the documented
    shapes, float32, on the inputs' device, finite; density non-negative and equal to forward's
    sigma (also through ``density_for_marching`` and its ``reuse``); colours in [0, 1]; zero points
    give zero rows; gradients reach the parameters and are finite; two fields built with the same
    seed give identical outputs (image fields may give raw values outside [0, 1]: the engine clamps
    renders); the state_dict goes through ``torch.load(weights_only=True)`` and a
    field built with another seed that loads it gives identical outputs; streamable parts are
    consistent. ``train``: a few steps on the demo scene (scene task) and on a 16x16 image (image
    task) through the engine, checkpointed and resumed identically. ``name``: the plugin name to
    train it under (default: the class name in lower case).
    """
    plugin = _name(cls)
    if not (isinstance(cls, type) and issubclass(cls, Field)):
        _fail(plugin, "is a Field", f"{cls!r} is not a subclass of nfplug.api.Field", "subclass nfplug.api.Field")
    config = _config(cls, config)
    supported = tuple(getattr(cls, "tasks", ()))
    if not supported or any(t not in ("scene", "image") for t in supported):
        _fail(plugin, "tasks lists 'scene' and/or 'image'", f"tasks = {supported!r}", "set tasks = ('scene',), ('image',) or both")
    for task in [t for t in supported if tasks is None or t in tasks]:
        channel_options = (3,) if task == "scene" else (3, 1)
        for channels in channel_options:
            context = field_context(task, channels)
            field = _build_field(cls, config, context, seed=0)
            outputs = _field_outputs(plugin, field, task, channels)
            _check_gradients(plugin, field, outputs)
            with torch.no_grad():
                reference = [o.detach() for o in _field_outputs(plugin, field, task, channels)]
                again = [o.detach() for o in _field_outputs(plugin, _build_field(cls, config, context, seed=0), task, channels)]
            if not _same(reference, again):
                _fail(plugin, "determinism for a seed", "two fields built after torch.manual_seed(0) give different outputs",
                      "draw initial values from torch's random generator only (no numpy or Python random, no time)")
            state = _round_trip(plugin, field.state_dict(), "state_dict()")
            other = _build_field(cls, config, context, seed=1)
            try:
                other.load_state_dict(state)
            except Exception as e:  # noqa: BLE001
                _fail(plugin, "state round-trips through torch.load(weights_only=True)", f"load_state_dict failed: {str(e).splitlines()[0][:200]}",
                      "make state_dict() and load_state_dict() agree (the same keys and shapes for the same config and context)")
            with torch.no_grad():
                restored = [o.detach() for o in _field_outputs(plugin, other, task, channels)]
            if not _same(reference, restored):
                _fail(plugin, "state round-trips through torch.load(weights_only=True)", "a field that loaded the state gives different outputs",
                      "register everything the outputs depend on as a parameter or a persistent buffer")
            _check_streamable(plugin, field, task, channels)
    if train:
        run_name = name or cls.__name__.lower()
        with registry.registered("fields", run_name, cls):
            for task in [t for t in supported if tasks is None or t in tasks]:
                _train_and_resume(plugin, "field", run_name, config, task)


# ----------------------------------------------------------------------------------- samplers


def sampler_contexts() -> List[SamplerContext]:
    """The contexts the checks build samplers with: a scene of three 12x16 images with half the
    pixels masked out, the same without a mask, and a 16x16 image trained full-batch on a
    checkerboard of pixels."""
    g = torch.Generator().manual_seed(3)
    images = torch.rand(3, 12, 16, 3, generator=g)
    mask = torch.rand(3, 12, 16, generator=g) < 0.5

    def errors(image_index: Tensor, pixel_xy: Tensor) -> Tensor:  # deterministic, varies over pixels
        return 0.1 + (torch.sin(pixel_xy[:, 0] * 1.3 + pixel_xy[:, 1] * 0.7 + image_index.float()) + 1).to(torch.float32)

    cpu = torch.device("cpu")
    scene = dict(n_images=3, height=12, width=16, batch_size=64, max_steps=40, task="scene", device=cpu, images=images, predict_errors=errors)
    rows, cols = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    checker = ((rows + cols) % 2 == 0)[None]
    image = dict(n_images=1, height=16, width=16, batch_size=int(checker.sum()), max_steps=40, task="image", device=cpu,
                 images=torch.rand(1, 16, 16, 3, generator=g), predict_errors=errors, pixel_mask=checker)
    return [SamplerContext(**scene, pixel_mask=mask), SamplerContext(**scene), SamplerContext(**image)]


def _feedback_values(batch: RayBatch) -> Tuple[Tensor, Tensor]:
    """A per-ray loss and error that depend only on the batch, so two runs see the same."""
    xy = batch.pixel_xy.detach().float()
    loss = 0.05 + 0.5 * (torch.sin(xy[:, 0] * 0.9 + xy[:, 1] * 1.7) + 1)
    return loss, 2 * loss.sqrt()


def _check_batch(plugin: str, batch: Any, ctx: SamplerContext, step: int) -> RayBatch:
    fix_shape = "return RayBatch(image_index [B] long, pixel_xy [B, 2] float32, weight [B] float32)"
    if not isinstance(batch, RayBatch):
        _fail(plugin, "sample() returns a RayBatch", f"step {step} returned {type(batch).__name__}", fix_shape)
    b = batch.image_index.shape[0] if isinstance(batch.image_index, Tensor) and batch.image_index.dim() == 1 else -1
    if b < 1:
        _fail(plugin, "sample() returns at least one ray", f"step {step}: image_index has shape {list(getattr(batch.image_index, 'shape', []))}", fix_shape)
    rule = "RayBatch shapes, dtypes and device"
    _check_tensor(plugin, rule, "image_index", batch.image_index, (b,), torch.long, ctx.device, fix_shape)
    _check_tensor(plugin, rule, "pixel_xy", batch.pixel_xy, (b, 2), torch.float32, ctx.device, fix_shape)
    _check_tensor(plugin, rule, "weight", batch.weight, (b,), torch.float32, ctx.device, fix_shape)
    if bool((batch.image_index < 0).any() or (batch.image_index >= ctx.n_images).any()):
        _fail(plugin, "image_index within the training images", f"step {step}: values outside [0, {ctx.n_images})", "draw image indices in range(context.n_images)")
    xy = batch.pixel_xy
    if bool((xy < 0).any() or (xy[:, 0] > ctx.width).any() or (xy[:, 1] > ctx.height).any()):
        _fail(plugin, "pixel_xy inside the image", f"step {step}: coordinates outside [0, {ctx.width}] x [0, {ctx.height}]",
              "return continuous pixel coordinates, x (column) first, pixel centres at +0.5")
    if ctx.pixel_mask is not None:
        col = xy[:, 0].floor().long().clamp(0, ctx.width - 1)
        row = xy[:, 1].floor().long().clamp(0, ctx.height - 1)
        outside = ~ctx.pixel_mask[batch.image_index.cpu(), row.cpu(), col.cpu()]
        if bool(outside.any()):
            _fail(plugin, "masks respected", f"step {step}: {int(outside.sum())} of {b} rays fall on pixels context.pixel_mask excludes",
                  "draw only pixels where context.pixel_mask is True (context.trainable_pixels() lists them)")
    _check_weights(plugin, batch.weight, b, step, "sample()'s weight")
    return batch


def _check_weights(plugin: str, weight: Any, b: int, step: int, what: str) -> None:
    if not isinstance(weight, Tensor) or tuple(weight.shape) != (b,):
        _fail(plugin, "weights positive and finite", f"step {step}: {what} has shape {list(getattr(weight, 'shape', []))}, expected [{b}]", "return one weight per ray")
    if not bool(torch.isfinite(weight).all()) or bool((weight <= 0).any()):
        _fail(plugin, "weights positive and finite", f"step {step}: {what} spans [{float(weight.min()):.3g}, {float(weight.max()):.3g}] or holds NaN/inf",
              "keep every weight > 0 and finite (clamp importance weights from below)")


def _sampler_steps(plugin: str, sampler: Sampler, ctx: SamplerContext, generator: torch.Generator, steps: range) -> List[RayBatch]:
    batches = []
    for step in steps:
        batch = _check_batch(plugin, sampler.sample(step, generator), ctx, step)
        loss, error = _feedback_values(batch)
        weight = sampler.loss_weight(step, batch, loss, error)
        _check_weights(plugin, weight, batch.weight.shape[0], step, "loss_weight()")
        batch.weight = weight.detach()
        grad = torch.sin(batch.pixel_xy * 3.1) if type(sampler).needs_position_grad else None
        sampler.update(StepFeedback(step=step, batch=batch, loss=loss, error=error, position_grad=grad))
        scalars = sampler.scalars()
        if not isinstance(scalars, dict) or any(not isinstance(v, (int, float)) or not math.isfinite(v) for v in scalars.values()):
            _fail(plugin, "scalars() gives finite numbers", f"got {scalars!r}", "return a dict of name -> finite float")
        batches.append(RayBatch(batch.image_index.clone(), batch.pixel_xy.clone(), batch.weight.clone()))
    return batches


def check_sampler(cls: type, config: Any = None, *, train: bool = True, name: Optional[str] = None) -> None:
    """Check a sampler class against the ``Sampler`` contract.

    Rules, over 12 steps on a masked scene, an unmasked scene and a full-batch masked image
    (:func:`sampler_contexts`; a sampler may refuse some of them with a one-line
    :class:`~nfplug.errors.NfplugError` from its constructor, not all): ``sample`` returns a :class:`~nfplug.api.RayBatch` with the
    documented shapes, dtypes and device, image indices and pixels in range; masks respected;
    ``loss_weight`` and the batch's weights positive and finite; ``scalars`` finite; two samplers
    with the same seed draw the same batches; the state after 6 steps goes through
    ``torch.load(weights_only=True)`` and a fresh sampler that loads it draws the same next 6
    batches; ``distributed`` is ``"replicated"`` or ``"sharded"``. ``train``: a few steps of the demo scene and of a small image through the engine,
    checkpointed and resumed identically.
    """
    plugin = _name(cls)
    if not (isinstance(cls, type) and issubclass(cls, Sampler)):
        _fail(plugin, "is a Sampler", f"{cls!r} is not a subclass of nfplug.api.Sampler", "subclass nfplug.api.Sampler")
    mode = getattr(cls, "distributed", "replicated")
    if mode not in ("replicated", "sharded"):
        _fail(plugin, "a distributed mode", f"distributed = {mode!r}", "set the class attribute distributed to 'replicated' (the default) or 'sharded' (nfplug.api.Sampler)")
    config = _config(cls, config)
    refused = []
    for ctx in sampler_contexts():
        where = f"{ctx.task} task{', masked' if ctx.pixel_mask is not None else ''}"
        build = lambda: cls(config, ctx)  # noqa: E731
        try:
            a = build()
        except NfplugError as e:  # a sampler may refuse a context it cannot serve, in one line
            refused.append(f"{where}: {e}")
            continue
        b = build()
        first = _sampler_steps(f"{plugin} ({where})", a, ctx, torch.Generator().manual_seed(0), range(6))
        if not _same(first, _sampler_steps(plugin, b, ctx, torch.Generator().manual_seed(0), range(6))):
            _fail(plugin, "determinism for a seed", f"{where}: two samplers with the same generator drew different batches",
                  "draw every random number from the generator passed to sample() (not torch's global one, numpy or random)")
        state = _round_trip(plugin, a.state_dict(), "state_dict()")
        generator = torch.Generator().manual_seed(1)
        resumed_generator = torch.Generator()
        resumed_generator.set_state(generator.get_state())
        fresh = build()
        fresh.load_state_dict(state)
        ahead = _sampler_steps(plugin, a, ctx, generator, range(6, 12))
        if not _same(ahead, _sampler_steps(plugin, fresh, ctx, resumed_generator, range(6, 12))):
            _fail(plugin, "an identical resume after a checkpoint", f"{where}: a sampler restored from state_dict() drew other batches than the original",
                  "put all state that later batches depend on in state_dict() and restore it in load_state_dict()")
    if len(refused) == len(sampler_contexts()):
        _fail(plugin, "works in at least one context", "its constructor raised NfplugError in every one (" + "; ".join(refused) + ")",
              "accept the unmasked scene context at least (12x16 images, 64 rays a step)")
    if train:
        run_name = name or cls.__name__.lower()
        with registry.registered("samplers", run_name, cls):
            for task in ("scene", "image"):
                _train_and_resume(plugin, "sampler", run_name, config, task)


# -------------------------------------------------------------------------------------- inits


def _installed_fields() -> List[Tuple[type, str]]:
    out = []
    for entry in registry.discover("fields").values():
        try:
            cls = entry.load()
        except NfplugError:
            continue
        out += [(cls, task) for task in cls.tasks]
    return out


def check_init(cls: type, config: Any = None, *, fields: Optional[Sequence[Tuple[type, str]]] = None, train: bool = True, name: Optional[str] = None) -> None:
    """Check an init class against the ``Init`` contract on ``fields`` (``(field class, task)``
    pairs; default: every installed field on each of its tasks).

    Rules: ``apply(field, generator)`` either raises :class:`~nfplug.errors.NfplugError` (it
    cannot act on that field) or leaves finite parameters and a field that still satisfies the
    output rules of :func:`check_field`; it acts on at least one field; the same generator seed
    gives the same parameters whatever torch's global seed (it draws only from the generator).
    ``train``: a few steps through the engine with the first field it acts on.
    """
    plugin = _name(cls)
    if not (isinstance(cls, type) and issubclass(cls, Init)):
        _fail(plugin, "is an Init", f"{cls!r} is not a subclass of nfplug.api.Init", "subclass nfplug.api.Init")
    config = _config(cls, config)
    accepted: List[Tuple[type, str]] = []
    for field_cls, task in fields if fields is not None else _installed_fields():
        context = field_context(task)
        states = []
        for global_seed in (1, 2):
            field = _build_field(field_cls, field_cls.Config(), context, seed=0)
            torch.manual_seed(global_seed)  # must not matter: the init draws from its generator
            try:
                cls(config).apply(field, torch.Generator().manual_seed(0))
            except NfplugError:
                break
            except Exception as e:  # noqa: BLE001
                _fail(plugin, "apply() raises NfplugError for a field it cannot act on",
                      f"on {field_cls.__name__} ({task}): {type(e).__name__}: {e}", "check what the field offers (e.g. layers()) and raise NfplugError with one line")
            for pname, p in field.named_parameters():
                if not bool(torch.isfinite(p).all()):
                    _fail(plugin, "parameters finite after apply()", f"{field_cls.__name__}.{pname} holds NaN or infinite values", "check the init's scales and divisions")
            states.append({k: v.clone() for k, v in field.state_dict().items()})
        else:
            if not _same(states[0], states[1]):
                _fail(plugin, "determinism for a seed", f"on {field_cls.__name__} ({task}): the same generator gave other parameters under another global seed",
                      "draw random values only from the generator passed to apply()")
            with torch.no_grad():
                _field_outputs(f"{field_cls.__name__} after {plugin}", field, task)
            accepted.append((field_cls, task))
    if not accepted:
        _fail(plugin, "acts on at least one field", "apply() raised NfplugError on every field tried", "support at least one installed field, or pass fields=[(FieldClass, task)]")
    if train:
        field_cls, task = accepted[0]
        field_name = next((n for n, e in registry.discover("fields").items() if e.obj is field_cls or _entry_class(e) is field_cls), None)
        if field_name is None:
            field_name = field_cls.__name__.lower()
        run_name = name or cls.__name__.lower()
        with registry.registered("inits", run_name, cls), registry.registered("fields", field_name, field_cls):
            _train_and_resume(plugin, "init", run_name, config, task, extra=["--field", field_name])


def _entry_class(entry: registry.PluginEntry) -> Optional[type]:
    try:
        return entry.load()
    except NfplugError:
        return None


# ----------------------------------------------------------------------------------- datasets


def check_dataset(cls: type, root: Path, config: Any = None, *, train: bool = True, name: Optional[str] = None, downscale: int = 1) -> None:
    """Check a dataset (scene format) class on a scene folder ``root`` in its format.

    Rules: ``detect(root)`` is True and ``detect`` of an empty folder is False (without raising);
    ``splits()`` includes ``train``; every split loads with images ``[N, H, W, 3]`` float32 in
    [0, 1], alphas ``[N, H, W, 1]`` in [0, 1], ``N`` cameras of the images' size and ``N`` paths;
    ``hints()`` is a :class:`~nfplug.api.SceneHints` with a known layout, ``near < far`` and a
    box with min < max when given. ``train``: a few steps on the scene through the engine (which
    builds datasets with their default ``Config``), checkpointed and resumed identically.
    """
    plugin = _name(cls)
    if not (isinstance(cls, type) and issubclass(cls, Dataset)):
        _fail(plugin, "is a Dataset", f"{cls!r} is not a subclass of nfplug.api.Dataset", "subclass nfplug.api.Dataset")
    root = Path(root)
    config = _config(cls, config)
    if cls.detect(root) is not True:
        _fail(plugin, "detect(root) recognises its format", f"detect({root}) returned {cls.detect(root)!r}", "return True for a folder in this format (a bool)")
    with tempfile.TemporaryDirectory() as empty:
        try:
            found = cls.detect(Path(empty))
        except Exception as e:  # noqa: BLE001
            _fail(plugin, "detect() of another folder is False", f"it raised {type(e).__name__}: {e}", "return False (do not read images, do not raise)")
        if found is not False:
            _fail(plugin, "detect() of another folder is False", f"detect(empty folder) returned {found!r}", "look for the format's own files")
    dataset = cls(config, DatasetContext(root=root, downscale=downscale))
    splits = dataset.splits()
    if "train" not in splits:
        _fail(plugin, "splits() includes 'train'", f"got {splits!r}", "name the split to train on 'train'")
    for split in splits:
        data = dataset.load(split)
        if not isinstance(data, DatasetSplit):
            _fail(plugin, "load(split) returns a DatasetSplit", f"{split}: got {type(data).__name__}", "return DatasetSplit(images, alphas, cameras, paths)")
        images = data.images
        if not (isinstance(images, Tensor) and images.dim() == 4 and images.shape[-1] == 3 and images.shape[0] >= 1):
            _fail(plugin, "images [N, H, W, 3]", f"{split}: shape {list(getattr(images, 'shape', []))}", "stack RGB images as [N, H, W, 3]")
        n, h, w, _ = images.shape
        _check_tensor(plugin, "images float32 and finite", f"{split} images", images, (n, h, w, 3), torch.float32, torch.device("cpu"), "convert to float32")
        if bool((images < 0).any() or (images > 1).any()):
            _fail(plugin, "images in [0, 1]", f"{split}: values span [{float(images.min()):.3g}, {float(images.max()):.3g}]", "divide 8-bit images by 255 (16-bit by 65535)")
        _check_tensor(plugin, "alphas [N, H, W, 1]", f"{split} alphas", data.alphas, (n, h, w, 1), torch.float32, torch.device("cpu"), "give one opacity per pixel (ones for photos)")
        if bool((data.alphas < 0).any() or (data.alphas > 1).any()):
            _fail(plugin, "alphas in [0, 1]", f"{split}: values outside [0, 1]", "scale alpha to [0, 1]")
        cams = data.cameras
        if len(cams) != n or (cams.width, cams.height) != (w, h):
            _fail(plugin, "one camera per image, of the images' size", f"{split}: {len(cams)} cameras of {cams.width}x{cams.height} for {n} images of {w}x{h}",
                  "build Cameras with the images' width and height, in the same order")
        if len(data.paths) != n:
            _fail(plugin, "one path per image", f"{split}: {len(data.paths)} paths for {n} images", "list the image files in order")
    hints = dataset.hints()
    if not isinstance(hints, SceneHints) or hints.layout not in LAYOUTS:
        _fail(plugin, "hints() is SceneHints with a known layout", f"got {hints!r}"[:200], f"return SceneHints(layout=one of {LAYOUTS})")
    if hints.near is not None and hints.far is not None and not 0 <= hints.near < hints.far:
        _fail(plugin, "hints: 0 <= near < far", f"near {hints.near}, far {hints.far}", "give the ray bounds in world units, or None")
    if hints.aabb is not None and (len(hints.aabb) != 6 or any(hints.aabb[i] >= hints.aabb[i + 3] for i in range(3))):
        _fail(plugin, "hints: aabb min < max", f"aabb {hints.aabb}", "give (xmin, ymin, zmin, xmax, ymax, zmax)")
    if train:
        run_name = name or cls.__name__.lower()
        with registry.registered("datasets", run_name, cls):
            args = ["--data", str(root), "--data.format", run_name, "--data.downscale", str(downscale)]
            _train_and_resume(plugin, "dataset", run_name, config, "scene", extra=args)


# -------------------------------------------------------------------------- tiny training runs


def smooth_image(height: int, width: int, freqs: Sequence[float] = (6.0, 5.0, 4.0)) -> np.ndarray:
    """A smooth synthetic RGB image in [0.1, 0.9], ``(height, width, 3)`` (for image-task tests)."""
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    fx, fy, fd = freqs
    return np.stack([0.5 + 0.4 * np.sin(fx * x), 0.5 + 0.4 * np.cos(fy * y), 0.5 + 0.3 * np.sin(fd * (x + y))], axis=-1)


def write_png(path: Path, rgb: np.ndarray) -> Path:
    """Write an RGB image in [0, 1] as an 8-bit PNG (OpenCV wants BGR)."""
    import cv2

    if not cv2.imwrite(str(path), (rgb[..., ::-1] * 255).astype(np.uint8)):
        raise OSError(f"could not write {path}")
    return path


@contextlib.contextmanager
def _quiet() -> Iterator[io.StringIO]:
    out = io.StringIO()
    threads = torch.get_num_threads()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            yield out
    finally:
        torch.set_num_threads(threads)


def _run(plugin: str, what: str, fn: Callable[[], Any], log: io.StringIO, fix: str) -> Any:
    try:
        return fn()
    except NfplugError as e:
        _fail(plugin, f"trains through the engine ({what})", f"nfplug: error: {e}", fix)
    except Exception as e:  # noqa: BLE001
        tail = " | ".join(log.getvalue().strip().splitlines()[-3:])
        _fail(plugin, f"trains through the engine ({what})", f"{type(e).__name__}: {e}" + (f" (log: {tail})" if tail else ""), fix)


def _train_and_resume(plugin: str, slot: str, name: str, config: Any, task: str, extra: Sequence[str] = ()) -> None:
    """Train ``TRAIN_STEPS`` steps with the plugin in ``slot`` on the demo scene or a 16x16 image,
    then again from the checkpoint at step 3: both must end in the same state."""
    from nfplug.cli import parse_train_args
    from nfplug.config import validate_options
    from nfplug.training.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
    from nfplug.training.trainer import train

    fix = f"run the engine yourself to see the full error: nfplug train --{slot} {name} ..." if slot != "dataset" else "run nfplug train --data ROOT to see the full error"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = ["--data", str(write_png(folder / "tiny.png", smooth_image(16, 16)))] if task == "image" else []
        args = [*([f"--{slot}", name] if slot != "dataset" else []), *extra, *data, *TINY_COMMON, *(TINY_SCENE if task == "scene" else [])]
        straight, resumed = folder / "straight", folder / "resumed"
        with _quiet() as log:
            def run_straight() -> Any:
                cfg, names, _ = parse_train_args([*args, "--output", str(straight)])
                if slot != "dataset":  # the engine builds datasets with their default Config
                    cfg = dataclasses.replace(cfg, **{slot: config})
                validate_options(cfg)
                return cfg, names, train(cfg, names)

            cfg, names, result = _run(plugin, f"{task}, {TRAIN_STEPS} steps", run_straight, log, fix)
            if result.interrupted:
                _fail(plugin, f"trains through the engine ({task})", "the run stopped early", fix)
            checkpoints = list_checkpoints(straight)
            if len(checkpoints) < 2:
                _fail(plugin, f"trains through the engine ({task})", f"expected checkpoints at steps 3 and {TRAIN_STEPS}, found {len(checkpoints)}", fix)
            shutil.copytree(straight, resumed)
            for path in list_checkpoints(resumed)[-1:]:
                path.unlink()
            _run(plugin, f"{task}, resumed at step 3", lambda: train(cfg, names, resume_dir=resumed), log, fix)
        a = load_checkpoint(latest_checkpoint(straight))
        b = load_checkpoint(latest_checkpoint(resumed))
        if int(a["step"]) != TRAIN_STEPS or int(b["step"]) != TRAIN_STEPS:
            _fail(plugin, f"trains through the engine ({task})", f"runs ended at steps {a['step']} and {b['step']}, not {TRAIN_STEPS}", fix)
        for key in ("field", "sampler", "task", "optimizer"):
            if not _same(a.get(key), b.get(key)):
                _fail(plugin, "an identical resume after a checkpoint", f"{task}: resuming at step 3 ended with another {key} state than the run straight to {TRAIN_STEPS}",
                      "keep all state in state_dict() and draw random numbers only from the generators the engine passes")
        for pname, value in a["field"].items():
            if isinstance(value, Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
                _fail(plugin, f"trains through the engine ({task})", f"after {TRAIN_STEPS} steps, the field's {pname} holds NaN or infinite values", "lower the learning rate, or guard the operations")

