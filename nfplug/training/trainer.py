"""The training loop: sampler -> rays -> field -> per-ray loss -> Adam, read top to bottom.

One step::

    batch = sampler.sample(step)              # image index, pixel_xy, loss weight per ray
    pred, gt = task.train_forward(field, batch)  # (once per decoded width for slimmable fields)
    per_ray = mean_c (pred - gt)^2            # handed back to the sampler
    batch.weight = sampler.loss_weight(...)   # may depend on this step's errors
    loss = mean(batch.weight * per_ray) + regularisers   # the task's and Field.loss_terms (objective.py)
    loss.backward(); adam.step()
    d per_ray / d pixel_xy                    # only if the sampler asks for it (same backward)
    sampler.update(feedback)

A field may train in stages (``training_stages`` of a :class:`~nfplug.api.Streamable` field, its parts one
after another): each stage starts a fresh Adam over the parameters it does not freeze, and its
own learning-rate schedule.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from nfplug.api import Field, RayBatch, Sampler, SamplerContext, StepFeedback, TrainingStage, decoding, field_n_parts, field_training_stages
from nfplug.distributed import DataParallelStep, Group, describe as describe_group, init_from_env, is_lost_peer, lost_peer_message, outlive_launcher_stop, rank_digests, shard_mask
from nfplug.errors import NfplugError
from nfplug.metrics import psnr_from_mse
from nfplug.profiling import StepProfile, profiling, section
from nfplug.rendering.backend import describe as describe_rendering
from nfplug.runtime import retain_freed_memory
from nfplug.training.checkpoint import load_run_checkpoint, restoring, save_checkpoint, set_aside_later
from nfplug.training.rundir import open_run_dir
from nfplug.training.evaluation import evaluate_parts, evaluate_views, write_metrics
from nfplug.training.history import History
from nfplug.training.objective import build_optimizer, field_regularizers, per_ray_loss, ray_errors, step_loss
from nfplug.training.run import build_field, plugin_classes, save_run_config, select_device, write_json_atomic
from nfplug.training.tasks import Task, build_task

@dataclass
class TrainResult:
    run_dir: Path
    step: int
    metrics: Optional[Dict[str, Any]]
    interrupted: bool


def _alpha_hint(config) -> str:
    """Why no sample may reach a new field: its opacities lie below a nonzero --render.alpha-thre."""
    alpha = config.render.alpha_thre
    if not alpha:
        return ""
    return (
        f"; --render.alpha-thre {alpha:g} drops every sample less opaque than that (from step "
        f"--render.grid-warmup-steps on), and a field that has not learned the scene yet has only "
        f"nearly transparent samples (about 0.007 each on lego): try a lower value, or 0"
    )


def learning_rate(config: Any, peak_lr: float, step: int, progress: float) -> float:
    """Linear warm-up to ``peak_lr``, then the schedule at ``progress`` (the fraction of training done):
    step decay at fractions ``decay_milestones``, or cosine annealing to ``min_lr`` at progress 1."""
    o = config.optim
    warm = min(1.0, (step + 1) / max(1, o.warmup_steps))
    if o.schedule == "cosine":
        low = min(o.min_lr, peak_lr)
        return warm * (low + (peak_lr - low) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))))
    if o.schedule != "step":
        raise ValueError(f"--optim.schedule: unknown schedule {o.schedule!r} (step, cosine)")
    n_decays = sum(progress >= m for m in o.decay_milestones)
    return peak_lr * warm * (o.decay_gamma**n_decays)


MAX_MISSED_STEPS = 20
"""Steps in a row without a single ray reaching the field before training stops with an error
(one such batch can happen by chance with few rays on a mostly empty scene)."""


def default_run_dir(config: Any, names: Dict[str, str], scene_name: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{scene_name}-{names['field']}-{names['sampler']}-{stamp}"


def train(
    config: Any, names: Dict[str, str], *, resume_dir: Optional[Path] = None, checkpoint: Optional[Path] = None, viewer: Any = None
) -> TrainResult:
    """Train a field as ``config`` says; resume from ``resume_dir``'s last checkpoint (or from
    ``checkpoint``) if given. The run folder stays locked against other trainers throughout.
    ``viewer``: :class:`nfplug.cli.ViewerOptions` to watch it live in the browser (:mod:`nfplug.viewer`)."""
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    retain_freed_memory()
    group = init_from_env(config.device, config.dist_timeout)  # torchrun: join the other processes
    try:
        if group is not None and viewer is not None:
            raise NfplugError("--viewer: not with torchrun (the viewer watches one process; train with it alone, or open the run later with nfplug view RUN)")
        result = _train(config, names, group, resume_dir=resume_dir, checkpoint=checkpoint, viewer=viewer)
    except BaseException as e:
        if group is not None:
            outlive_launcher_stop()
            group.close()
        if group is not None and isinstance(e, Exception) and not isinstance(e, NfplugError) and is_lost_peer(e):
            raise NfplugError(lost_peer_message(group, e)) from None  # before training started
        raise
    if group is not None:
        try:
            group.close(wait=True)  # rank 0 may still be evaluating
        except Exception as e:  # rank 0 failed after training (its own error says why)
            if not is_lost_peer(e):
                raise
            raise NfplugError(lost_peer_message(group, e)) from None
    return result


def _train(
    config: Any, names: Dict[str, str], group: Optional[Group], *, resume_dir: Optional[Path], checkpoint: Optional[Path], viewer: Any
) -> TrainResult:
    device = group.device if group is not None else select_device(config.device)
    _seed_everything(config.seed)
    generator = torch.Generator().manual_seed(config.seed)

    task = build_task(config, device, run_dir=resume_dir)
    if task.name == "scene":
        tqdm.write(f"nfplug: data: {task.describe()}")
        tqdm.write(f"nfplug: {describe_rendering(device)}")
    if group is not None:
        tqdm.write(f"nfplug: {describe_group(group)}")
    classes = plugin_classes(names)
    field = build_field(config, names, classes, task.field_context(), device, generator)
    detail = field.extra_repr()
    tqdm.write(f"nfplug: field: {names['field']}, {sum(p.numel() for p in field.parameters()):,} parameters{'; ' + detail if detail else ''}")

    run_dir = Path(resume_dir or config.output or default_run_dir(config, names, task.scene_name))
    if group is not None:
        run_dir = Path(group.broadcast(str(run_dir)))  # rank 0's (a default name holds the time)
    main = group is None or group.is_main
    # Only rank 0 opens (and writes) the run folder: writable, locked, not a finished run.
    with open_run_dir(run_dir, resume=resume_dir is not None) if main else contextlib.nullcontext():
        live = None
        if viewer is not None:
            from nfplug.viewer import Viewer

            live = Viewer(task, field, host=viewer.host, port=viewer.port, training=True, share=viewer.share,
                          n_parts=field_n_parts(field), title=f"nfplug train: {run_dir.name}")
            tqdm.write(f"nfplug: {live.describe()}")
        try:
            return _train_in(
                run_dir, config, names, classes, task, field, device, generator, resume=resume_dir is not None, checkpoint_path=checkpoint, viewer=live,
                group=group,
            )
        finally:
            if live is not None:
                live.close()
                tqdm.write(f"nfplug: viewer closed ({live.summary()}); open the trained run with: nfplug view {run_dir}")


def _train_in(
    run_dir: Path,
    config: Any,
    names: Dict[str, str],
    classes: Dict[str, type],
    task: Task,
    field: Field,
    device: torch.device,
    generator: torch.Generator,
    *,
    resume: bool,
    checkpoint_path: Optional[Path],
    viewer: Any = None,
    group: Optional[Group] = None,
) -> TrainResult:
    """The training loop of :func:`train`, in a locked run folder (``viewer``: a live
    :class:`~nfplug.viewer.Viewer`, whose lock each step holds; ``group``: the processes of a
    torchrun job, :mod:`nfplug.distributed`; only rank 0 writes)."""

    main = group is None or group.is_main
    world = 1 if group is None else group.world_size
    n_trainable = int(task.train_mask.sum()) if task.train_mask is not None else task.images.shape[:3].numel()
    batch_size = n_trainable if config.batch_size == 0 else config.batch_size  # the global batch
    start, count = (0, batch_size) if group is None else group.share(batch_size)  # this process's rays
    peak_lr = config.optim.lr if config.optim.lr is not None else field.default_lr
    schedule_steps = config.max_steps  # the learning-rate schedule's length, kept across --resume
    stages = field_training_stages(field, config.max_steps)
    stage_index = _stage_index(stages, 0)
    optimizer = build_optimizer(config, field, stages[stage_index], peak_lr, task)
    decoded_field: List[Any] = [field]  # the field as this step decodes it (a streamable field's first k parts)
    sampler_class = classes["sampler"]
    sharded = group is not None and getattr(sampler_class, "distributed", "replicated") == "sharded"
    if getattr(sampler_class, "distributed", "replicated") not in ("replicated", "sharded"):
        raise NfplugError(f"--sampler: {sampler_class.__name__}.distributed must be 'replicated' or 'sharded', got {sampler_class.distributed!r}")

    def predict_errors(idx: Tensor, xy: Tensor) -> Tensor:
        if group is None or sharded:
            return task.predict_errors(decoded_field[0], idx, xy)
        # Replicated samplers call this on every process with the same pixels: each does its share.
        return group.split_map(lambda i, p: task.predict_errors(decoded_field[0], i, p), idx, xy)

    sampler_generator = generator
    pixel_mask = task.train_mask
    if sharded:
        assert group is not None
        sampler_generator = torch.Generator().manual_seed((config.seed + 7919 * group.rank) % 2**63)
        pixel_mask = shard_mask(task.images.shape[0], task.images.shape[1], task.images.shape[2], task.train_mask, group.rank, world)
    sampler = sampler_class(
        config.sampler,
        SamplerContext(
            n_images=task.images.shape[0],
            height=task.images.shape[1],
            width=task.images.shape[2],
            batch_size=count if sharded else batch_size,
            max_steps=config.max_steps,
            task=task.name,
            device=device,
            images=task.images,
            predict_errors=predict_errors,
            pixel_mask=pixel_mask,
            rank=0 if group is None else group.rank,
            world_size=world,
        ),
    )

    step, elapsed = 0, 0.0
    if resume:
        # Rank 0 reads the checkpoint and hands it to the others (no shared folder needed for it).
        path, ckpt = load_run_checkpoint(run_dir, device, checkpoint_path) if main else (None, None)  # --checkpoint, else the latest usable one
        if group is not None:
            path, ckpt = group.broadcast((path, ckpt))
        with restoring(path):
            field.load_state_dict(ckpt["field"])
            step = int(ckpt["step"])
            if "stages" in ckpt:  # the plan the run started with, even if --max-steps changed
                stages = [TrainingStage(int(s["start"]), tuple(s["parts"]), tuple(s["frozen"])) for s in ckpt["stages"]]
            schedule_steps = int(ckpt.get("schedule_steps", schedule_steps))
            stage_index = _stage_index(stages, step)
            optimizer = build_optimizer(config, field, stages[stage_index], peak_lr, task)
            if int(ckpt.get("stage", 0)) == stage_index:  # else the checkpoint ends the previous stage
                optimizer.load_state_dict(ckpt["optimizer"])
            task.load_state_dict(ckpt["task"])
            _load_sampler_state(sampler, ckpt, group, sharded, sampler_generator)
            generator.set_state(ckpt["rng"]["generator"])
            torch.set_rng_state(ckpt["rng"]["torch"])
            elapsed = float(ckpt["elapsed"])
            if device.type == "cuda" and "cuda" in ckpt["rng"]:
                torch.cuda.set_rng_state(ckpt["rng"]["cuda"].cpu(), device)
        del ckpt
        if main:
            set_aside_later(run_dir, path, step)
    elif group is not None:  # every process starts from rank 0's initial field (whatever the init drew)
        group.broadcast_module_(list(field.parameters()) + list(field.buffers()) + task.parameters())
    if main:
        save_run_config(run_dir, config, names)  # only now: a failed --resume leaves the run's config as it was
        if hasattr(task, "save_setup"):
            task.save_setup(run_dir)
    history = History.load(run_dir) if main else History()
    history.truncate(step)
    pending_marks = sorted(t for t in config.eval_at_seconds if t > elapsed)
    renderer = getattr(task, "renderer", None)
    if group is not None and renderer is not None:
        cells = renderer.evaluate_cells  # each process evaluates its share of a grid update's cells
        renderer.evaluate_cells = lambda x, fn: group.split_map(lambda part: cells(part, fn), x)
        renderer.reduce_occupancy = group.max_  # explicit, after every grid update: the same grid everywhere
    last_saved: List[Optional[int]] = [step if resume else None]

    def checkpoint() -> Optional[Path]:
        """Every process calls it at the same step (a sharded sampler's states are gathered); rank 0 writes."""
        sampler_state: Any = sampler.state_dict()
        if sharded:
            assert group is not None
            sampler_state = {"per_rank": group.gather({"state": sampler_state, "generator": sampler_generator.get_state()}), "world_size": world}
        last_saved[0] = step
        if not main:
            return None
        return save_checkpoint(
            run_dir,
            {
                "field": field.state_dict(),
                "optimizer": optimizer.state_dict(),
                "stage": stage_index,
                "stages": [dataclasses.asdict(stage) for stage in stages],
                "schedule_steps": schedule_steps,
                "task": task.state_dict(),
                "sampler": sampler_state,
                "rng": _rng_state(generator, device),
                "elapsed": elapsed,
                "world_size": world,
            },
            step,
        )

    writer = SummaryWriter(log_dir=str(run_dir / "tensorboard")) if main else None
    bar = tqdm(total=config.max_steps, initial=step, disable=not (config.progress and main), dynamic_ncols=True, desc="train")
    eval_split = task.eval_split_name
    interrupted = False
    field.train()
    stop = _StopRequest(distributed=group is not None)
    stop_all = False  # distributed: any process asked to stop (agreed at the end of each step)
    missed = 0  # steps in a row whose rays all missed the occupied volume
    missed_limit = max(1, min(MAX_MISSED_STEPS, config.max_steps - step))  # a short run that never hit fails too
    profile = StepProfile() if config.profile else None
    late = [s for s in stages if s.start >= config.max_steps]
    if late:
        tqdm.write(f"nfplug: warning: {len(late)} of the field's {len(stages)} training stages start after --max-steps {config.max_steps}")
    def data_parallel() -> Optional[DataParallelStep]:
        """DDP over the tensors the optimizer trains (--dist-gradients ddp), else None."""
        if group is None or config.dist_gradients != "ddp":
            return None
        return group.data_parallel(field, task.parameters())

    ddp = data_parallel()
    step_lock = viewer.lock if viewer is not None else contextlib.nullcontext()  # the viewer renders between steps
    share = None if group is None else (start, batch_size)  # this process's rows of the global batch
    try:
        while step < config.max_steps and (config.max_time is None or elapsed < config.max_time):
            if viewer is not None:
                viewer.wait_while_paused(lambda: stop.requested)
            if stop_all if group is not None else stop.requested:
                interrupted = True
                break
            t0 = time.perf_counter()
            with step_lock, profiling(profile):  # --profile: time per stage (nfplug.profiling)
                if _stage_index(stages, step) != stage_index:
                    stage_index = _stage_index(stages, step)
                    optimizer = build_optimizer(config, field, stages[stage_index], peak_lr, task)
                    if ddp is not None:
                        ddp.release()  # the old DDP unhooks the parameters before the new one hooks them
                    ddp = data_parallel()  # DDP fixes the set of trained tensors when it is built
                    tqdm.write(f"step {step}: training stage {stage_index + 1} of {len(stages)} ({_describe(stages[stage_index])})")
                stage = stages[stage_index]
                stage_end = stages[stage_index + 1].start if stage_index + 1 < len(stages) else schedule_steps
                stage_progress = (step - stage.start) / max(1, stage_end - stage.start)
                progress = max(stage_progress, elapsed / config.max_time if config.max_time else 0.0)
                lr = learning_rate(config, peak_lr, step - stage.start, progress)
                for group_ in optimizer.param_groups:
                    group_["lr"] = lr

                decoded = stage.parts or (None,)  # the widest last: the sampler learns from it
                decoded_field[0] = view = decoding(field, decoded[-1])
                with section("grid update", whole=True):
                    warning = task.before_step(step, view)
                if warning:
                    tqdm.write(f"nfplug: warning: {warning}")
                with section("sampler: sample"):
                    whole = sampler.sample(step, sampler_generator)  # replicated: the global batch; sharded: this process's
                if group is not None and not sharded:  # this process's rows of the global batch
                    batch_size = whole.image_index.shape[0]
                    start, count = group.share(batch_size)
                    share = (start, batch_size)
                    batch = _rows(whole, start, count)
                else:
                    batch = whole
                    if group is None:
                        batch_size = count = batch.image_index.shape[0]
                    elif batch.image_index.shape[0] != count:
                        raise NfplugError(f"--sampler: a sharded sampler must return context.batch_size ({count}) rays a step, got {batch.image_index.shape[0]}")
                split_batch = {} if share is None else {"share": share}  # one process: the call as ever
                out: Dict[str, Any] = {}  # what the forward pass leaves for the rest of the step

                def forward_and_loss() -> Tensor:
                    """The step's forward passes and this process's share of the loss (under DDP: inside
                    DDP's forward, which must see every use of the parameters)."""
                    narrower = []
                    for parts in decoded[:-1]:
                        narrow = decoding(field, parts)
                        pred, gt, _ = task.train_forward(narrow, dataclasses.replace(batch, pixel_xy=batch.pixel_xy.detach()), generator, **split_batch)
                        narrower.append(per_ray_loss(pred, gt))
                    if sampler.needs_position_grad:
                        batch.pixel_xy = batch.pixel_xy.detach().requires_grad_(True)
                    pred, gt, stats = task.train_forward(view, batch, generator, **split_batch)
                    out["stats"] = stats
                    with section("loss"):
                        out["per_ray"] = per_ray = per_ray_loss(pred, gt)
                        out["error"] = error = ray_errors(pred, gt)
                        if group is not None:  # every process sees the whole batch's losses and errors
                            gathered = group.gather_rows(torch.stack([per_ray.detach(), error], dim=1), start, batch_size)
                            out["all_loss"], out["all_error"] = gathered[:, 0], gathered[:, 1]
                        else:
                            out["all_loss"], out["all_error"] = per_ray.detach(), error
                        if sharded or group is None:
                            batch.weight = sampler.loss_weight(step, batch, per_ray.detach(), error).detach()
                        else:
                            whole.weight = sampler.loss_weight(step, whole, out["all_loss"], out["all_error"]).detach()
                            batch.weight = whole.weight[start : start + count]
                        # Terms that are not per ray, so no sampler weighs them: the task's (the distortion
                        # loss) and the field's own (Field.loss_terms).
                        out["regularizers"] = regularizers = {"distortion": stats.pop("regularizer")} if "regularizer" in stats else {}
                        if "distortion" in regularizers and group is not None:  # a mean over this process's rays
                            regularizers["distortion"] = regularizers["distortion"] * (count * world / batch_size)
                        regularizers.update(field_regularizers(field, step))
                        # This process's share of the global loss: summed over the processes it is the loss of
                        # the whole batch in one process (per-ray terms / global batch, the others / processes).
                        loss = step_loss(batch.weight, per_ray, narrower, regularizers, total_rays=None if group is None else batch_size, processes=world)
                    out["hit"] = loss.requires_grad
                    return loss

                loss = forward_and_loss() if ddp is None else ddp(forward_and_loss)
                stats, per_ray, error, all_loss, all_error, regularizers = (
                    out["stats"], out["per_ray"], out["error"], out["all_loss"], out["all_error"], out["regularizers"]
                )
                optimizer.zero_grad(set_to_none=True)
                hit = out["hit"]
                if loss.requires_grad:  # DDP: always (a process without a hit joins with zeros)
                    with section("backward: MLPs, rendering" + (", DDP all-reduce" if ddp is not None else "")):
                        if ddp is not None:
                            ddp.backward(loss)
                        else:
                            loss.backward()
                n_samples = stats["samples_per_ray"] * per_ray.shape[0]
                if group is not None:
                    flags = torch.tensor([float(hit), n_samples], device=device)
                    if ddp is not None:  # the gradients were averaged during the backward pass
                        summed = group.sum_(flags)
                    else:
                        with section("all-reduce: gradients"):
                            summed = group.sum_gradients_(_trained(optimizer), flags)
                    hit, n_samples = bool(summed[0].item() > 0), float(summed[1].item())
                if hit:
                    missed = 0
                    with section("optimizer"):
                        optimizer.step()
                else:  # no sample reached the field: nothing to learn from this batch
                    missed += 1
                    if missed == missed_limit:
                        raise NfplugError(
                            f"steps {step + 1 - missed}-{step}: no training ray hit the scene's occupied volume (no sample reached "
                            f"the field); check that the cameras (poses in transforms_*.json) look at the scene box, "
                            f"--render.samples-per-cell, and that the box lies between the near and far bounds" + _alpha_hint(config)
                        )
                position_grad = None
                if sampler.needs_position_grad:
                    # One backward pass serves both: d loss / d xy_i = weight_i / B * d per_ray_i / d xy_i.
                    grad = batch.pixel_xy.grad
                    if grad is None:  # no ray reached the field, the loss does not depend on position
                        grad = torch.zeros_like(batch.pixel_xy)
                    position_grad = grad * (batch_size / batch.weight / (1.0 if ddp is None else ddp.scale()))[:, None]
                    batch.pixel_xy = batch.pixel_xy.detach()
                with section("sampler: update"):
                    if group is None or sharded:
                        sampler.update(StepFeedback(step=step, batch=batch, loss=per_ray.detach(), error=error, position_grad=position_grad))
                    else:
                        if position_grad is not None:
                            position_grad = group.gather_rows(position_grad, start, batch_size)
                        sampler.update(StepFeedback(step=step, batch=whole, loss=all_loss, error=all_error, position_grad=position_grad))
            step += 1
            dt = time.perf_counter() - t0
            elapsed += dt
            if group is not None:  # the same stop decision and clock on every process
                stop_all, elapsed = group.agree(stop.requested, elapsed)

            mse = all_loss.mean().item()
            if not math.isfinite(mse):
                raise NfplugError(f"step {step}: the loss became {mse}; lower --optim.lr")
            rays_per_s = batch_size / dt  # the global batch
            samples_per_ray = n_samples / max(1, batch_size)
            bar.update(1)
            postfix = {"loss": f"{mse:.4f}", "psnr": f"{psnr_from_mse(mse):.2f}", "rays_s": f"{rays_per_s:.0f}", "spr": f"{samples_per_ray:.1f}"}
            if config.max_time:
                postfix["time_left"] = f"{max(0.0, config.max_time - elapsed):.0f}s"
            bar.set_postfix(postfix, refresh=False)
            if viewer is not None:
                viewer.report(step, config.max_steps, mse, psnr_from_mse(mse), rays_per_s, elapsed)
            if writer is not None and (step % 10 == 0 or step == 1):
                history.train.append(
                    {"step": step, "time": round(elapsed, 3), "psnr": psnr_from_mse(mse), "rays_per_s": rays_per_s,
                     "samples_per_s": rays_per_s * samples_per_ray}
                )
                stats["samples_per_ray"] = samples_per_ray
                writer.add_scalar("train/loss", mse, step)
                writer.add_scalar("train/psnr", psnr_from_mse(mse), step)
                writer.add_scalar("train/lr", lr, step)
                writer.add_scalar("train/rays_per_second", rays_per_s, step)
                for key, value in stats.items():
                    writer.add_scalar(f"train/{key}", value, step)
                for key, value in regularizers.items():
                    writer.add_scalar(f"loss/{key}", float(value.detach()), step)
                for key, value in sampler.scalars().items():
                    writer.add_scalar(f"sampler/{key}", value, step)
                if renderer is not None:
                    writer.add_scalar("train/grid_occupancy", renderer.occupancy(), step)
            passed_mark = bool(pending_marks) and elapsed >= pending_marks[0]
            if passed_mark or (config.eval_every and step % config.eval_every == 0 and step < config.max_steps):
                pending_marks = [t for t in pending_marks if t > elapsed]
                if writer is not None:  # rank 0 evaluates; the others wait for it at the next step
                    history.eval.append(_periodic_eval(task, decoded_field[0], eval_split, config.eval_views, writer, step, elapsed))
                    history.save(run_dir)
                    field.train()
            if config.checkpoint_every and step % config.checkpoint_every == 0:
                checkpoint()
    except Exception as e:
        if group is not None and not isinstance(e, NfplugError) and is_lost_peer(e):
            raise NfplugError(lost_peer_message(group, e, step, last_saved[0], run_dir)) from None
        raise
    finally:
        bar.close()
        stop.restore()
        if viewer is not None:
            viewer.finish()

    if group is not None:  # every process's field, grid and sampler state, hashed: they must agree
        report = rank_digests(group, field, task, sampler, step, sharded)
        if main:
            write_json_atomic(run_dir / "distributed.json", report)
            if not report["consistent"]:
                tqdm.write(f"nfplug: warning: the processes' states differ at step {step} (see {run_dir / 'distributed.json'})")
    checkpoint()
    if not main:  # rank 0 evaluates and reports
        return TrainResult(run_dir, step, None, interrupted)
    assert writer is not None
    history.save(run_dir)
    if profile is not None:
        _report_profile(profile, run_dir)
    if interrupted:
        writer.close()
        launcher = "nfplug train" if group is None else group.launcher
        print(f"nfplug: interrupted at step {step}; checkpoint saved. Continue with: {launcher} --resume {run_dir}")
        return TrainResult(run_dir, step, None, True)

    field.eval()
    final_views = None if config.final_eval_views is None else _eval_indices(task, eval_split, config.final_eval_views)
    metrics = evaluate_views(task, field, eval_split, indices=final_views, writer=writer, step=step)
    if field_n_parts(field) > 1:  # on the periodic-eval views: K full evaluations of a scene take long
        metrics["parts"] = evaluate_parts(task, field, eval_split, indices=_eval_indices(task, eval_split, config.eval_views), with_ssim=False)
    metrics.update({"step": step, "train_seconds": round(elapsed, 2), "peak_memory_mb": round(peak_memory_mb(device), 1)})
    write_metrics(run_dir, metrics)
    writer.add_scalar(f"{eval_split}/psnr", metrics["mean"]["psnr"], step)
    writer.close()
    history.eval.append({"step": step, "time": round(elapsed, 3), "psnr": metrics["mean"]["psnr"], "views": len(metrics["views"])})
    history.save(run_dir)
    print(
        f"nfplug: trained {step} steps in {elapsed:.0f} s; {eval_split} PSNR {metrics['mean']['psnr']:.2f} dB, "
        f"SSIM {metrics['mean']['ssim']:.4f} over {len(metrics['views'])} views -> {run_dir}"
    )
    for row in metrics.get("parts", []):
        print(f"  first {row['parts']} part(s): {row['params']:>9,} parameters, {eval_split} PSNR {row['psnr']:.2f} dB")
    return TrainResult(run_dir, step, metrics, False)


def _rows(batch: RayBatch, start: int, count: int) -> RayBatch:
    """Rays ``start:start+count`` of ``batch`` (this process's share of a distributed step)."""
    end = start + count
    return RayBatch(image_index=batch.image_index[start:end], pixel_xy=batch.pixel_xy[start:end], weight=batch.weight[start:end])


def _trained(optimizer: torch.optim.Optimizer) -> List[Tensor]:
    """The tensors ``optimizer`` steps, in a fixed order (the same on every process)."""
    return [p for g in optimizer.param_groups for p in g["params"]]


def _load_sampler_state(sampler: Sampler, ckpt: Dict[str, Any], group: Optional[Group], sharded: bool, generator: torch.Generator) -> None:
    """Restore the sampler: a replicated sampler from rank 0's state (any number of processes); a
    sharded one from its own rank's, if the run had as many processes, else it starts afresh."""
    state = ckpt["sampler"]
    per_rank = isinstance(state, dict) and "per_rank" in state and "world_size" in state
    if not sharded and not per_rank:
        sampler.load_state_dict(state)
        return
    world = 1 if group is None else group.world_size
    rank = 0 if group is None else group.rank
    if per_rank and int(state["world_size"]) == world and sharded:
        mine = state["per_rank"][rank]
        sampler.load_state_dict(mine["state"])
        generator.set_state(mine["generator"])
        return
    was = int(state["world_size"]) if per_rank else int(ckpt.get("world_size", 1))
    tqdm.write(f"nfplug: the sampler keeps one state per process and the run had {was} process(es), now {world}: it starts afresh")


def _report_profile(profile: StepProfile, run_dir: Path) -> None:
    """Print the per-stage table and write it to ``profile.json``."""
    print(f"nfplug: time per training step by stage (--profile):\n{profile.table()}")
    write_json_atomic(run_dir / "profile.json", profile.to_json())


def _eval_indices(task: Any, split: str, n_views: int) -> List[int]:
    """``n_views`` view indices spread evenly over ``split``."""
    n = task.n_views(split)
    k = max(1, min(n, n_views))
    return sorted({round(i * (n - 1) / max(1, k - 1)) for i in range(k)})


def _stage_index(stages: List[TrainingStage], step: int) -> int:
    return max(i for i, stage in enumerate(stages) if stage.start <= step or i == 0)


def _describe(stage: TrainingStage) -> str:
    frozen = f", parts {', '.join(map(str, stage.frozen))} frozen" if stage.frozen else ""
    return f"decoding {', '.join(map(str, stage.parts)) or 'all'} parts{frozen}"


def _periodic_eval(task: Any, field: Any, split: str, n_views: int, writer: SummaryWriter, step: int, elapsed: float) -> Dict[str, Any]:
    """PSNR on ``n_views`` held-out views spread over the split; -> a history row."""
    field.eval()
    indices = _eval_indices(task, split, n_views)
    metrics = evaluate_views(task, field, split, indices=indices, writer=writer, step=step, with_ssim=False)
    psnr = metrics["mean"]["psnr"]
    writer.add_scalar(f"{split}/psnr_subset", psnr, step)
    tqdm.write(f"step {step} ({elapsed:.0f} s): {split} PSNR {psnr:.2f} dB ({len(indices)} views)")
    return {"step": step, "time": round(elapsed, 3), "psnr": psnr, "views": len(indices)}


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated by torch, or the process's peak resident memory on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class _StopRequest:
    """Ctrl-C (SIGINT) and SIGTERM ask training to stop at the next step boundary, so the
    checkpoint written then holds one whole step (parameters, optimizer, sampler, RNGs).

    A second signal raises KeyboardInterrupt at once: the run stops without a checkpoint
    and the last one written stays. SIGINT is handled explicitly because a shell starts
    background jobs with it ignored.
    """

    def __init__(self, distributed: bool = False) -> None:
        import signal
        import threading

        self.requested = False
        self.distributed = distributed
        self.received: set = set()
        self.previous: Dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            self.previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}

    def _handle(self, signum: int, frame: Any) -> None:
        # Under torchrun, Ctrl-C reaches every process and torchrun then sends each a SIGTERM: that
        # second signal of another kind is the same request, not a demand to stop at once.
        again = signum in self.received if self.distributed else self.requested
        self.received.add(signum)
        if again:
            raise KeyboardInterrupt
        if self.requested:
            return
        self.requested = True
        tqdm.write("nfplug: stopping after this step to write a checkpoint (signal again to stop at once, without one)")

    def restore(self) -> None:
        import signal

        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def _rng_state(generator: torch.Generator, device: torch.device) -> Dict[str, Any]:
    """Every random state a step draws from: the sampler's generator, torch's CPU RNG and,
    on a GPU, the device's RNG (stratified marching and random backgrounds draw there)."""
    state = {"generator": generator.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
