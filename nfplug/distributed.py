"""Data-parallel training over processes and machines with ``torch.distributed``, launched by ``torchrun``.

``torchrun --nproc-per-node 2 -m nfplug train ...`` starts one process per rank with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in its environment;
:func:`init_from_env` joins them into one process group (gloo on the CPU, nccl on GPUs, one device
per process). What each step exchanges, and why the result equals single-process training:

* **The batch.** Every rank holds the same sampler (same seed, same state) and draws the same
  global batch of ``--batch-size`` rays; rank ``r`` trains on its contiguous share
  (:func:`split`). Random numbers a ray draws (stratified marching, random backgrounds) are drawn
  for the whole batch and sliced (:func:`share_generator`), so each ray sees the numbers it would
  see in one process.
* **The sampler's feedback.** Per-ray losses, errors and position gradients are gathered
  (:meth:`Group.gather_rows`), so ``loss_weight`` and ``update`` see the whole batch on every rank
  and the sampler's state stays identical everywhere (its ``distributed = "replicated"`` contract in
  :mod:`nfplug.api`). A ``"sharded"`` sampler instead owns a disjoint share of the pixels per rank.
* **Gradients.** Each rank's loss is its rays' share of the global mean (per-ray terms times
  ``B_r / B``, global terms times ``1 / W``), so the sum of the ranks' gradients is the
  single-process gradient of the global batch, up to the order of floating-point additions. By
  default DistributedDataParallel averages them during the backward pass
  (:class:`DataParallelStep`, which scales each loss by ``W``); ``--dist-gradients flat`` sums
  them in one explicit all-reduce after it (:meth:`Group.sum_gradients_`). Both keep a gradient
  no rank computed ``None``. Adam then takes the same step on every rank.
* **The occupancy grid.** Every rank runs the same EMA update; an explicit all-reduce of the
  occupancies (max) follows it (:meth:`Group.max_`), so the grids are the same bit for bit even
  where a device's kernels are not deterministic.
* **Stopping.** A small all-reduce at the end of each step agrees on Ctrl-C and on the elapsed time
  (the slowest rank's), so every rank stops after the same step.

Only rank 0 writes: the run folder, logs, TensorBoard, checkpoints and the evaluations. If a rank
dies, the others fail in their next collective (or after ``--dist-timeout`` seconds) and stop with
one line (:func:`lost_peer_message`); the last checkpoint is left as it was.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import hashlib
import importlib
import inspect
import os
import re
import signal
import socket
import sys
import tempfile
import threading
import weakref
from dataclasses import dataclass, field as dataclass_field
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from torch import Tensor

from nfplug.errors import NfplugError

ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def launched_by_torchrun() -> bool:
    """True in a process torchrun (or any launcher using its environment) started with WORLD_SIZE > 1."""
    raw = os.environ.get("WORLD_SIZE", "1")
    try:
        return int(raw) > 1
    except ValueError:
        raise NfplugError(f"WORLD_SIZE: expected the number of processes, got '{raw}' (torchrun sets it; unset it to train in one process)") from None


def split(total: int, rank: int, world_size: int) -> Tuple[int, int]:
    """Rank ``rank``'s contiguous share of ``total`` items: -> (start, count). The first
    ``total % world_size`` ranks take one item more; a rank may get none."""
    base, extra = divmod(total, world_size)
    count = base + (1 if rank < extra else 0)
    start = rank * base + min(rank, extra)
    return start, count


def share_generator(generator: torch.Generator, share: Optional[Tuple[int, int]], per_item: int = 1) -> torch.Generator:
    """A generator whose next draws are the rows ``start:start+count`` of ``total`` rows a single
    process would draw from ``generator`` (``per_item`` numbers a row); ``generator`` itself moves
    past all ``total`` rows, as in one process. ``share``: ``(start, total)``, or None for ``generator``.

    Exact because PyTorch fills a CPU tensor from its generator in order, one number at a time
    (``tests/test_distributed.py`` checks it).
    """
    if share is None:
        return generator
    start, total = share
    mine = torch.Generator().manual_seed(0)
    mine.set_state(generator.get_state())
    if start:
        torch.rand(start * per_item, generator=mine)
    torch.rand(total * per_item, generator=generator)
    return mine


@dataclass
class Group:
    """This process's place in a torchrun job and the collectives training uses."""

    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: torch.device
    owned: bool = True  # nfplug joined the processes (torchrun), so it leaves them; not a launcher's group (Ray Train)
    steps: "weakref.WeakSet[DataParallelStep]" = dataclass_field(default_factory=weakref.WeakSet, repr=False, compare=False)  # the DDPs to release on close

    @property
    def launcher(self) -> str:
        """The command that starts such a job, for messages (``... --resume RUN``)."""
        return "torchrun --nproc-per-node N -m nfplug train" if self.owned else "nfplug train-ray --workers N"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def share(self, total: int) -> Tuple[int, int]:
        """This rank's (start, count) of ``total`` rays."""
        return split(total, self.rank, self.world_size)

    # ------------------------------------------------------------------ collectives
    def gather_rows(self, rows: Tensor, start: int, total: int) -> Tensor:
        """Each rank's ``rows [count, ...]`` at its ``start`` in a ``[total, ...]`` tensor, on every rank.
        A sum all-reduce of zero-padded buffers: exact (x + 0 == x) and fine with unequal shares."""
        full = torch.zeros((total,) + tuple(rows.shape[1:]), dtype=rows.dtype, device=self.device)
        full[start : start + rows.shape[0]] = rows.to(self.device)
        dist.all_reduce(full, op=dist.ReduceOp.SUM)
        return full.to(rows.device)

    def split_map(self, fn: Callable[..., Tensor], *rows: Tensor) -> Tensor:
        """``fn(*rows)`` (one value a row) with each process computing its share of the rows (none
        if its share is empty), gathered on every process."""
        total = rows[0].shape[0]
        start, count = self.share(total)
        mine = fn(*(r[start : start + count] for r in rows)).reshape(-1).float() if count else torch.zeros(0, device=self.device)
        return self.gather_rows(mine, start, total)

    def sum_gradients_(self, params: Sequence[Tensor], extra: Optional[Tensor] = None) -> Optional[Tensor]:
        """Sum every parameter's gradient over the processes in place, in one flat all-reduce.

        A parameter no process computed a gradient for keeps ``grad = None``, as in one process, so
        Adam skips it; one that some process has a gradient for gets the sum (missing ones count as
        zeros). ``extra``: a small float tensor summed in the same message, returned summed.
        (One message against one per tensor, and against DDP: tools/bench_distributed.py.)
        """
        params = list(params)
        sizes = [p.numel() for p in params]
        n_grads = sum(sizes)
        n_extra = 0 if extra is None else extra.numel()
        dtype = torch.float64 if any(p.dtype == torch.float64 for p in params) else torch.float32
        flat = torch.zeros(n_grads + len(params) + n_extra, dtype=dtype, device=self.device)
        offset = 0
        for i, (p, n) in enumerate(zip(params, sizes)):
            if p.grad is not None:
                flat[offset : offset + n].copy_(p.grad.reshape(-1))
                flat[n_grads + i] = 1.0
            offset += n
        if extra is not None:
            flat[n_grads + len(params) :].copy_(extra.reshape(-1))
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        has_grad = flat[n_grads : n_grads + len(params)].tolist()
        offset = 0
        for p, n, has in zip(params, sizes, has_grad):
            if has > 0:
                values = flat[offset : offset + n].view_as(p).to(p.dtype)
                if p.grad is None:
                    p.grad = values.clone()
                else:
                    p.grad.copy_(values)
            offset += n
        return None if extra is None else flat[n_grads + len(params) :].clone()

    def sum_(self, values: Tensor) -> Tensor:
        """A small tensor summed over the ranks (returned; ``values`` is left as it was)."""
        out = values.to(self.device, copy=True)
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out.to(values.device)

    def data_parallel(self, field: torch.nn.Module, extra: Sequence[Tensor]) -> "DataParallelStep":
        """``field`` and the task's trained tensors ``extra`` under DistributedDataParallel (see
        :class:`DataParallelStep`). Build it again whenever the set of trained tensors changes (a
        new training stage; :meth:`DataParallelStep.release` the old one): DDP fixes it when it is built."""
        step = DataParallelStep(self, field, extra)
        self.steps.add(step)
        return step

    def max_(self, tensor: Tensor) -> Tensor:
        """Element-wise maximum over the ranks, in place (and returned)."""
        if tensor.device != self.device:
            moved = tensor.to(self.device)
            dist.all_reduce(moved, op=dist.ReduceOp.MAX)
            tensor.copy_(moved)
        else:
            dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return tensor

    def agree(self, stop: bool, elapsed: float) -> Tuple[bool, float]:
        """-> (any rank asked to stop, the largest elapsed time): every rank stops after the same step."""
        flags = torch.tensor([1.0 if stop else 0.0, elapsed], dtype=torch.float64, device=self.device)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        return bool(flags[0].item() > 0), float(flags[1].item())

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (pickled; for start-up state, not for every step)."""
        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0, device=self.device if self.backend == "nccl" else None)
        return box[0]

    def gather(self, value: Any) -> List[Any]:
        """Every rank's ``value``, in rank order, on every rank (pickled)."""
        out: List[Any] = [None] * self.world_size
        dist.all_gather_object(out, value)
        return out

    def broadcast_module_(self, tensors: Iterable[Tensor]) -> None:
        """Overwrite ``tensors`` (parameters and buffers) with rank 0's, so every rank starts alike."""
        for t in tensors:
            data = t.data if t.device == self.device else t.data.to(self.device)
            dist.broadcast(data, src=0)
            if data is not t.data:
                t.data.copy_(data)

    def close(self, wait: bool = False) -> None:
        """Leave the job; ``wait``: first wait for every process to get here (after a run that went
        well, so no process tears its connections down while another still uses them)."""
        for step in list(self.steps):  # before the process group goes (DataParallelStep.release says why)
            step.release(collect=False)
        gc.collect()  # these DDPs, and those of steps already dropped: only a collection frees them
        if dist.is_initialized():
            if wait:
                dist.barrier()
            if self.owned:
                dist.destroy_process_group()


class _StepModule(torch.nn.Module):
    """What DDP wraps: the trained tensors (the field's and the task's, such as a learned background)
    and a forward that runs a closure, the step's forward pass and loss. DDP needs every use of the
    parameters inside its forward; the task reaches the field through several methods
    (``density_for_marching``, ``forward(reuse=...)``, a streamable field's narrower decodings,
    ``loss_terms``), so the whole forward pass is the closure."""

    def __init__(self, field: torch.nn.Module, extra: Sequence[Tensor]):
        super().__init__()
        self.field = field
        self.extra = torch.nn.ParameterList(list(extra))

    def forward(self, compute: Callable[[], Tensor]) -> Tensor:
        return compute()


class DataParallelStep:
    """A training step's gradient exchange by :class:`~torch.nn.parallel.DistributedDataParallel`
    (``--dist-gradients ddp``): gradients are averaged in buckets while the backward pass runs.

    * **Loss scale.** DDP averages over the ``W`` processes, so the loss a process differentiates is
      ``W`` times its share of the global loss (:meth:`scale`); the average is then the
      single-process gradient of the global batch, as with :meth:`Group.sum_gradients_`.
    * **Unused parameters.** ``find_unused_parameters``: a parameter no process used keeps
      ``grad = None`` (Adam skips it, as in one process); one some process used gets the average.
    * **A process whose rays all missed** has no graph to differentiate, but DDP's all-reduce needs
      every process: its loss gets ``0 * sum(first parameter)``, a zero gradient for one tensor that
      any process with a hit uses anyway (and if none hit, the step is skipped).
    * No buffer sync (``forward_sync_buffers=False``): nothing of rank 0's is copied over the others' buffers each step;
      the occupancy grid is made the same by its own all-reduce (:meth:`Group.max_`).
    """

    def __init__(self, group: Group, field: torch.nn.Module, extra: Sequence[Tensor]):
        from torch.nn.parallel import DistributedDataParallel

        self.module = _StepModule(field, extra)
        params = [p for p in self.module.parameters() if p.requires_grad]
        if not params:
            raise NfplugError("--dist-gradients ddp: nothing to train (every parameter is frozen)")
        self.anchor = params[0]
        self.uses = 0  # forward and backward passes so far (the first of each is kept quiet)
        self.world_size = group.world_size
        # No copying of rank 0's buffers at each forward (the argument's name changed in torch 2.13).
        no_buffer_sync = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters else "broadcast_buffers"
        self.ddp = DistributedDataParallel(
            self.module,
            device_ids=[group.device.index] if group.device.type == "cuda" else None,
            find_unused_parameters=True,
            **{no_buffer_sync: False},
        )

    def release(self, collect: bool = True) -> None:
        """Free the DDP now, unhooking it from the parameters. Its objects refer to one another, so
        dropping the last reference frees them only at the next garbage collection; one still alive
        when the process group is destroyed keeps the group alive, with the risk at exit that
        :func:`init_process_group` describes. ``collect=False``: the caller collects."""
        if self.ddp is not None:
            self.ddp = None
            if collect:
                gc.collect()

    def backward(self, loss: Tensor) -> None:
        """``loss.backward()``: DDP averages the gradients meanwhile."""
        with _quiet_first_use(self):
            loss.backward()

    def scale(self) -> float:
        """The factor on this process's share of the loss (DDP averages the gradients)."""
        return float(self.world_size)

    def __call__(self, compute: Callable[[], Tensor]) -> Tensor:
        """Run ``compute`` (-> this process's share of the loss) inside DDP's forward; -> the loss to
        call ``backward`` on, scaled (:meth:`scale`) and never without a graph."""

        def forward() -> Tensor:
            loss = compute() * self.scale()
            if not loss.requires_grad:  # no ray of this process hit the field
                loss = loss + 0.0 * self.anchor.sum()
            return loss

        if self.ddp is None:
            raise RuntimeError("DataParallelStep: used after release(); build a new one (Group.data_parallel)")
        with _quiet_first_use(self):
            return self.ddp(forward)


_DDP_NOISE = "find_unused_parameters=True was specified in DDP constructor, but did not find any unused parameters"


@contextlib.contextmanager
def _quiet_first_use(step: "DataParallelStep") -> Iterator[None]:
    """Around a DDP's first forward and backward: what its C++ side writes to standard error, except
    its advice to turn ``find_unused_parameters`` off when a step happens to use every parameter
    (nfplug keeps it on: a plugin field may leave parameters unused, and a process whose rays all
    missed uses none). Later uses pass straight through."""
    if step.uses >= 2:
        yield
        return
    step.uses += 1
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            kept = [line for line in caught.read().decode(errors="replace").splitlines(keepends=True) if _DDP_NOISE not in line]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def init_from_env(device_spec: str, timeout_s: float) -> Optional[Group]:
    """Join the torchrun job described by the environment; None when not launched with WORLD_SIZE > 1.

    gloo on the CPU, nccl with CUDA (device ``cuda:LOCAL_RANK``). ``timeout_s``: how long a
    collective waits for the other ranks before failing.
    """
    if dist.is_available() and dist.is_initialized():  # a launcher joined the processes already (nfplug train-ray)
        return _adopt(device_spec)
    if not launched_by_torchrun():
        return None
    missing = [k for k in ENV_KEYS if k not in os.environ]
    if missing:
        raise NfplugError(f"WORLD_SIZE is set but {', '.join(missing)} is not: start distributed training with torchrun (see the README)")
    try:
        rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    except ValueError as e:
        raise NfplugError(f"RANK, WORLD_SIZE and LOCAL_RANK must be integers ({e})") from None
    use_cuda = device_spec.startswith("cuda") or (device_spec == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise NfplugError(f"--device: '{device_spec}' requested but CUDA is not available on this machine")
        if device_spec not in ("auto", "cuda"):
            raise NfplugError(f"--device: '{device_spec}' names one GPU; under torchrun each process takes cuda:LOCAL_RANK, so pass --device cuda")
        if local >= torch.cuda.device_count():
            raise NfplugError(f"LOCAL_RANK {local}: this machine has {torch.cuda.device_count()} GPU(s); start at most that many processes per node")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device_spec not in ("auto", "cpu"):
        raise NfplugError(f"--device: '{device_spec}' is not a device for distributed training (use cpu, cuda or auto)")
    else:
        device = torch.device("cpu")
        backend = "gloo"
    try:
        init_process_group(backend, rank=rank, world_size=world, timeout=datetime.timedelta(seconds=timeout_s))
    except (RuntimeError, ValueError) as e:
        raise NfplugError(f"rank {rank}: could not join the other processes at {os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']} ({first_line(e)})") from None
    return _one_voice(Group(rank=rank, world_size=world, local_rank=local, backend=backend, device=device))


def outlive_launcher_stop() -> None:
    """Ignore SIGTERM from here on, in a process already stopping with an error of its own. torchrun
    sends one to every other process the moment one dies; this process closes the group (a garbage
    collection, a fraction of a second) and then reports in one line what happened, which the
    signal would cut off. Only the main thread can set a handler (Ray Train trains in another)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def init_process_group(backend: str, **kwargs: Any) -> None:
    """``torch.distributed.init_process_group``, such that destroying the group (:meth:`Group.close`)
    ends it: its gloo threads stop then, not while Python exits.

    ``torch._dynamo``, which DDP imports on first use, takes references to the process groups that
    exist when it is imported. A group it holds outlives ``destroy_process_group``; its gloo worker
    threads then still run as Python exits, and one that finishes a collective just then aborts the
    process ("terminate called without an active exception", SIGABRT: torch 2.13, about 1 exit in 10
    of the 2-process tests). Imported before the group exists, it holds none."""
    importlib.import_module("torch._dynamo")
    dist.init_process_group(backend, **kwargs)


def _one_voice(group: Group) -> Group:
    """Rank 0 alone prints: the others' standard output goes nowhere (their errors still reach stderr)."""
    if not group.is_main:
        sys.stdout = open(os.devnull, "w")
    return group


def _adopt(device_spec: str) -> Optional[Group]:
    """The process group a launcher (Ray Train's TorchTrainer) made; None if it has one process."""
    world = dist.get_world_size()
    if world == 1:
        return None
    rank, local, backend = dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")), dist.get_backend()
    if backend == "nccl":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    elif device_spec.startswith("cuda"):
        raise NfplugError(f"--device: '{device_spec}' but the processes were joined with {backend}, not nccl")
    else:
        device = torch.device("cpu")
    return _one_voice(Group(rank=rank, world_size=world, local_rank=local, backend=backend, device=device, owned=False))


def first_line(error: BaseException) -> str:
    """The gist of a collective's error: its first line without gloo's source location or advice."""
    text = str(error).strip().splitlines()
    if not text:
        return type(error).__name__
    line = re.sub(r"^\[[^\]]*\]\s*", "", text[0])  # "[/.../gloo/transport/tcp/pair.cc:537] "
    return line.split(". This is typically")[0][:160]


def is_lost_peer(error: BaseException) -> bool:
    """Whether ``error`` is a collective that failed because another rank died or timed out."""
    if isinstance(error, dist.DistError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and any(
        key in text for key in ("Connection closed by peer", "Connection reset by peer", "Timed out", "timed out", "Broken pipe", "NCCL", "Gloo")
    )


def lost_peer_message(group: Group, error: BaseException, step: Optional[int] = None, last_checkpoint: Optional[int] = None, run_dir: Any = None) -> str:
    """The one line a rank prints when another rank is gone (died, or silent past --dist-timeout)."""
    during = f" during step {step + 1}" if step is not None else ""
    if last_checkpoint is None:
        kept = "stopped; no checkpoint had been written yet"
    else:
        kept = f"stopped without writing; the last checkpoint (step {last_checkpoint}) is intact"
    resume = f": continue with {group.launcher} --resume {run_dir}" if run_dir is not None and last_checkpoint is not None else ""
    return f"rank {group.rank} of {group.world_size}: lost contact with another process{during} ({first_line(error)}); {kept}{resume}"


def digest(tensors: Iterable[Optional[Tensor]]) -> str:
    """A short hash of the tensors' bytes (to check that ranks hold the same state)."""
    h = hashlib.sha1()
    for t in tensors:
        if t is None:
            h.update(b"none")
            continue
        h.update(t.detach().cpu().contiguous().view(torch.uint8).reshape(-1).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def state_tensors(state: Any) -> List[Tensor]:
    """Every tensor in a nested state dict, in a fixed order."""
    out: List[Tensor] = []
    if isinstance(state, Tensor):
        out.append(state)
    elif isinstance(state, dict):
        for key in sorted(state, key=str):
            out.extend(state_tensors(state[key]))
    elif isinstance(state, (list, tuple)):
        for item in state:
            out.extend(state_tensors(item))
    return out


def host() -> str:
    return socket.gethostname()


def describe(group: Group) -> str:
    return f"distributed: rank {group.rank} of {group.world_size} ({group.backend}, {group.device}), global batch split over the ranks"


def shard_mask(n_images: int, height: int, width: int, mask: Optional[Tensor], rank: int, world_size: int) -> Tensor:
    """A ``"sharded"`` sampler's pixels: ``mask`` (None: all) restricted to this process's disjoint share,
    whole images ``i % world_size == rank`` when there are at least as many images as processes,
    else pixel rows ``y % world_size == rank``. -> ``[n_images, H, W]`` bool."""
    base = torch.ones(n_images, height, width, dtype=torch.bool) if mask is None else mask.detach().cpu().bool().clone()
    if n_images >= world_size:
        keep = (torch.arange(n_images) % world_size == rank)[:, None, None]
    else:
        keep = (torch.arange(height) % world_size == rank)[None, :, None]
    share = base & keep
    if not bool(share.any()):
        raise NfplugError(f"rank {rank}: no trainable pixel in this process's share of the images; use fewer processes")
    return share


def rank_digests(group: Group, field: Any, task: Any, sampler: Any, step: int, sharded: bool = False) -> Dict[str, Any]:
    """Every process's hash of its field, occupancy grid and sampler state, gathered on every rank;
    ``consistent``: they agree (a sharded sampler's state differs by design and is not compared)."""
    mine = {
        "rank": group.rank,
        "host": host(),
        "step": step,
        "field": digest(list(field.parameters()) + list(field.buffers())),
        "sampler": digest(state_tensors(sampler.state_dict())),
    }
    renderer = getattr(task, "renderer", None)
    if renderer is not None:
        mine["grid"] = digest([renderer.estimator.occs, renderer.estimator.binaries])
    rows = group.gather(mine)
    keys = [k for k in ("field", "grid") + (() if sharded else ("sampler",)) if k in mine]
    consistent = all(row[k] == rows[0][k] for row in rows for k in keys)
    return {"world_size": group.world_size, "backend": group.backend, "consistent": consistent, "compared": keys, "ranks": rows}
