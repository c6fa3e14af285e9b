"""``nfplug train-ray``: the same data-parallel training as ``torchrun``, launched by Ray Train.

For users who already run a Ray cluster: ``ray.train.torch.TorchTrainer`` starts ``--workers``
processes (on the cluster at ``--address``, or on a local Ray started for the run), joins them in
one ``torch.distributed`` process group (gloo on CPUs, nccl with ``--gpus``) and runs nfplug's
training in each. nfplug adopts that process group (:func:`nfplug.distributed.init_from_env`), so
everything else is the torchrun path: the global batch split over the processes, rank 0 writing the
run folder, the occupancy-grid all-reduce, the gradient exchange (``--dist-gradients``).

Needs the extra: ``pip install nfplug[ray]``. The training options are checked here, before Ray
starts, so a typo costs no cluster time.
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from nfplug.errors import NfplugError

USAGE = """usage: nfplug train-ray [--workers N] [--cpus-per-worker C] [--gpus] [--address ADDR] TRAIN-OPTIONS...

Train with Ray Train (pip install nfplug[ray]): N processes, each running 'nfplug train TRAIN-OPTIONS'
as one data-parallel job (the same training as torchrun; see the README, Scale out).

  --workers N           training processes (default 2)
  --cpus-per-worker C   CPU cores Ray reserves for each, and its torch threads (default 1)
  --gpus                one GPU a process (nccl); default: CPUs (gloo)
  --address ADDR        a running Ray cluster ('auto', or HOST:PORT); default: start Ray on this machine

'nfplug train --help' shows TRAIN-OPTIONS."""


@dataclass(frozen=True)
class RayOptions:
    workers: int = 2
    cpus_per_worker: int = 1
    gpus: bool = False
    address: Optional[str] = None


def take_ray_options(argv: List[str]) -> Tuple[RayOptions, List[str]]:
    """Take train-ray's own options out of ``argv`` (each checked, one line if wrong); -> (options, the rest)."""
    from nfplug.cli import take_option

    values: Dict[str, Any] = {}
    for name, field_name in (("workers", "workers"), ("cpus-per-worker", "cpus_per_worker")):
        raw, argv = take_option(argv, name)
        if raw is not None:
            try:
                values[field_name] = int(raw)
            except ValueError:
                raise NfplugError(f"--{name}: expected a whole number, got '{raw}'") from None
            if values[field_name] < 1:
                raise NfplugError(f"--{name}: must be at least 1, got {values[field_name]}")
    address, argv = take_option(argv, "address")
    if address is not None and not address.strip():
        raise NfplugError("--address: must not be empty ('auto', or HOST:PORT of a running Ray cluster)")
    gpus = "--gpus" in argv
    argv = [a for a in argv if a != "--gpus"]
    return RayOptions(address=address, gpus=gpus, **values), argv


def cmd_train_ray(argv: List[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0
    options, train_argv = take_ray_options(argv)
    names = [a.partition("=")[0] for a in train_argv]
    if "--viewer" in names:
        raise NfplugError("--viewer: not with train-ray (the viewer watches one process; open the run later with nfplug view RUN)")
    if "--checkpoint" in names:
        raise NfplugError("--checkpoint: not with train-ray (continue from the run's latest checkpoint with --resume RUN)")
    if "--device" in names or "--threads" in names:
        raise NfplugError("--device, --threads: set by train-ray (--gpus for one GPU a process, --cpus-per-worker for threads)")
    from nfplug.cli import parse_train_args

    config, _, _ = parse_train_args(train_argv)  # every training option checked before Ray starts
    try:
        import ray
        from ray.train import FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchConfig, TorchTrainer
    except ImportError:
        raise NfplugError("train-ray needs Ray Train: pip install nfplug[ray] (or pip install 'ray[default,train]')") from None

    if options.address is None:  # a Ray started here: it would wait forever for cores or GPUs it lacks
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        need = options.workers * options.cpus_per_worker
        if need > cores:
            raise NfplugError(f"--workers {options.workers} x --cpus-per-worker {options.cpus_per_worker}: needs {need} CPU cores, this machine has {cores} (or pass --address of a Ray cluster)")
        if options.gpus:
            import torch

            if torch.cuda.device_count() < options.workers:
                raise NfplugError(f"--gpus: one GPU a worker, {options.workers} needed, this machine has {torch.cuda.device_count()} (or pass --address of a Ray cluster)")
    worker_argv = [*train_argv, "--device", "cuda" if options.gpus else "cpu", "--threads", str(options.cpus_per_worker)]
    # Workers' prints reach the driver once (Ray Train would also copy each into its log), and rank
    # 0's progress bar every 10 s (Ray forwards each redraw as a line).
    env = {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0", "TQDM_MININTERVAL": "10"}
    try:
        ray.init(address=options.address, logging_level="WARNING", runtime_env={"env_vars": env})
    except Exception as e:  # noqa: BLE001 - Ray's errors for a cluster it cannot reach vary by version
        where = f"the Ray cluster at {options.address}" if options.address else "a Ray on this machine"
        lines = str(e).strip().splitlines()
        raise NfplugError(f"--address: could not start or reach {where} ({lines[0] if lines else type(e).__name__})") from None
    try:
        with tempfile.TemporaryDirectory(prefix="nfplug-ray-") as storage:  # Ray's own bookkeeping; the run folder is nfplug's
            trainer = TorchTrainer(
                _worker,
                train_loop_config={"argv": worker_argv, "cwd": os.getcwd()},
                torch_config=TorchConfig(backend="nccl" if options.gpus else "gloo", timeout_s=int(config.dist_timeout)),
                scaling_config=ScalingConfig(num_workers=options.workers, use_gpu=options.gpus, resources_per_worker={"CPU": options.cpus_per_worker}),
                run_config=RunConfig(name="nfplug", storage_path=storage, failure_config=FailureConfig(max_failures=0)),
            )
            try:
                trainer.fit()
            except (KeyboardInterrupt, SystemExit):  # Ctrl-C: Ray Train's handler aborts the run and exits
                print("nfplug: train-ray interrupted; the workers were stopped without a final checkpoint. Continue from the "
                      f"last periodic one (--checkpoint-every) with: nfplug train-ray ... --resume {config.output or 'RUN'}", file=sys.stderr)
                return 130
            except Exception as e:  # a worker failed: its own one-line error is its message
                raise NfplugError(f"train-ray: {_worker_error(e)}") from None
    finally:
        ray.shutdown()
    return 0


def _worker(loop_config: Dict[str, Any]) -> None:
    """One Ray Train worker: ``nfplug train`` in this process, in the driver's folder."""
    os.chdir(loop_config["cwd"])
    from nfplug.cli import cmd_train

    try:
        code = cmd_train(list(loop_config["argv"]))
    except NfplugError as e:  # Ray prints a worker's traceback: let it be this frame's alone
        raise NfplugError(str(e)) from None
    if code != 0:
        raise NfplugError("training was interrupted; continue with nfplug train-ray ... --resume RUN")


def _worker_error(error: BaseException) -> str:
    """The first worker error's message, without Ray's wrapping (which names the worker and its traceback)."""
    seen = set()
    stack = [error]
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, NfplugError):
            return str(e)
        failures = getattr(e, "worker_failures", None)  # Ray Train 2: {rank: exception}
        if isinstance(failures, dict):
            stack.extend(failures[k] for k in sorted(failures, reverse=True))
        for attr in ("cause", "__cause__", "__context__"):
            inner = getattr(e, attr, None)
            if isinstance(inner, BaseException):
                stack.append(inner)
    text = str(error).strip().splitlines()
    return next((line.strip() for line in reversed(text) if line.strip().startswith(("nfplug.errors.NfplugError", "NfplugError"))), text[0] if text else type(error).__name__)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(cmd_train_ray(sys.argv[1:]))
