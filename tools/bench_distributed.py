"""Data-parallel training on this machine, and a model of what more machines would give.

Three parts, one after the other in one run:

1. **Training throughput.** The same training four ways: 1 process with 2 threads (``nfplug
   train --threads 2``), 2 processes with 1 thread each (``torchrun --nproc-per-node 2``) with
   each gradient exchange (``--dist-gradients ddp``, the default, and ``flat``) and, for
   reference, 1 process with 1 thread. Steps/s and rays/s come from each run's own
   ``history.json`` (global batch; the first ``--skip`` steps, the grid's warm-up, left out);
   ``--rounds`` repeats all four, interleaved, and keeps each one's median.
2. **Gradient exchange.** In two gloo processes (1 thread each), a forward and backward of the
   ``ngp`` field on a batch of samples, then the gradients exchanged: not at all (the compute
   alone), one flat all-reduce (``--dist-gradients flat``), one all-reduce per parameter tensor,
   plain DistributedDataParallel (25 MB buckets, overlapped with the backward pass), and DDP as
   nfplug runs it (``--dist-gradients ddp``: the forward pass inside DDP's forward, unused
   parameters found).
3. **Model.** Bytes all-reduced per step for ``ngp`` at its default size for ``--data``, and the
   step time predicted for N machines like this one on a stated network bandwidth (ring
   all-reduce: each machine sends and receives ``2 (N - 1) / N`` times the gradient bytes):

       t(N) = t_compute * (unsplit + (1 - unsplit) / N) + 2 (N - 1) / N * bytes / bandwidth + latency * 2 (N - 1)

   ``t_compute``: the measured step time of 1 process with 2 threads (part 1); ``unsplit``: the
   share of a step every process repeats rather than splits (Adam, the sampler, waiting for the
   slower process), from rank 0's ``--profile`` of part 1's 2-process run.

Prints the tables and writes ``bench_distributed.png`` (speed-up against machines, per bandwidth).

    python tools/bench_distributed.py --data ../shared/data/nerf_synthetic/lego --steps 300 --rounds 3
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def train(out: Path, data: str, steps: int, batch: int, processes: int, threads: int, extra: tuple = ()) -> dict:
    args = ["--data", data, "--max-steps", str(steps), "--batch-size", str(batch), "--threads", str(threads), "--no-progress",
            "--eval-every", "0", "--final-eval-views", "1", "--checkpoint-every", "0", "--output", str(out), *extra]
    if processes > 1:
        args.append("--profile")  # rank 0's time by stage: what every process repeats (part 3)
    if processes == 1:
        cmd = [sys.executable, "-m", "nfplug", "train", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes), "--master-port", str(free_port()),
               "-m", "nfplug", "train", *args]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        sys.exit(f"bench_distributed: {' '.join(cmd[:6])} ... failed:\n{result.stderr[-3000:]}")
    history = json.loads((out / "history.json").read_text())["train"]
    metrics = json.loads((out / "metrics.json").read_text())
    profile = json.loads((out / "profile.json").read_text()) if (out / "profile.json").is_file() else None
    return {"rows": history, "wall": time.perf_counter() - t0, "psnr": metrics["mean"]["psnr"], "seconds": metrics["train_seconds"], "profile": profile}


DDP_RUN = "2 processes x 1 thread, DDP"

REPEATED = ("optimizer", "sampler: sample", "sampler: update", "loss")
"""Stages of a distributed step that every process does whole (Adam over all parameters, the
replicated sampler) or that wait for the slower process (the loss's gather)."""


def rate(rows: list, skip: int) -> float:
    """Steps per second between the first logged step at or after ``skip`` and the last."""
    kept = [r for r in rows if r["step"] >= skip]
    first, last = kept[0], kept[-1]
    return (last["step"] - first["step"]) / (last["time"] - first["time"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- part 2


def build_field(data: str):
    from nfplug.cli import parse_train_args
    from nfplug.training.run import build_field as build, plugin_classes
    from nfplug.training.tasks import build_task

    config, names, _ = parse_train_args(["--data", data, "--field", "ngp"])
    task = build_task(config, torch.device("cpu"))
    field = build(config, names, plugin_classes(names), task.field_context(), torch.device("cpu"), torch.Generator().manual_seed(0))
    return field, task


def exchange_worker(rank: int, port: int, data: str, samples: int, repeats: int, out: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from nfplug.distributed import Group, init_process_group

    torch.set_num_threads(1)
    init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    group = Group(rank=rank, world_size=2, local_rank=rank, backend="gloo", device=torch.device("cpu"))
    field, _ = build_field(data)
    params = [p for p in field.parameters() if p.requires_grad]
    g = torch.Generator().manual_seed(rank)
    x = (torch.rand(samples, 3, generator=g) * 2 - 1) * 0.5
    d = torch.nn.functional.normalize(torch.randn(samples, 3, generator=g), dim=-1)

    def backward(module, trained=params) -> None:
        for p in trained:
            p.grad = None
        rgb, sigma = module(x, d)
        (rgb.square().mean() + sigma.mean()).backward()

    def per_tensor() -> None:
        for p in params:
            dist.all_reduce(p.grad)

    # Each DDP on its own copy of the field: DDP hooks the parameters it wraps.
    plain = copy.deepcopy(field)
    ddp = DistributedDataParallel(plain, find_unused_parameters=False)
    as_trained = copy.deepcopy(field)
    step = group.data_parallel(as_trained, [])  # as nfplug trains: the forward pass in DDP's forward, unused parameters found

    def nfplug_ddp() -> None:
        for p in as_trained.parameters():
            p.grad = None

        def loss():
            rgb, sigma = as_trained(x, d)
            return (rgb.square().mean() + sigma.mean()) / 2  # this process's share (DataParallelStep scales by 2)

        step(loss).backward()

    ways = {
        "compute only": lambda: backward(field),
        "flat all-reduce": lambda: (backward(field), group.sum_gradients_(params)),
        "all-reduce per tensor": lambda: (backward(field), per_tensor()),
        "DDP, plain": lambda: backward(ddp, list(plain.parameters())),
        "DDP as nfplug runs it": nfplug_ddp,
    }
    for fn in ways.values():
        fn()  # warm up
    rounds: dict = {name: [] for name in ways}
    for _ in range(repeats):  # interleaved rounds, the median of each: the machine's noise hits all alike
        for name, fn in ways.items():
            dist.barrier()
            t0 = time.perf_counter()
            for _ in range(3):
                fn()
            dist.barrier()
            rounds[name].append((time.perf_counter() - t0) / 3)
    times = {name: sorted(values)[len(values) // 2] for name, values in rounds.items()}
    flat = torch.zeros(sum(p.numel() for p in params))
    dist.barrier()
    t0 = time.perf_counter()
    for _ in range(repeats):
        dist.all_reduce(flat)
    times["all-reduce alone"] = (time.perf_counter() - t0) / repeats
    if rank == 0:
        Path(out).write_text(json.dumps({"times": times, "params": sum(p.numel() for p in params), "tensors": len(params)}))
    ddp = ways = None  # the plain DDP: for close's collection to free before the group goes
    group.close(wait=True)


def exchange(data: str, samples: int, repeats: int) -> dict:
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "exchange.json")
        mp.spawn(exchange_worker, args=(free_port(), data, samples, repeats, out), nprocs=2, join=True)
        return json.loads(Path(out).read_text())


# ----------------------------------------------------------------------------- part 3


def report_exchange(args) -> tuple:
    """Part 2: print the exchange table; -> (bytes of gradient a step, seconds by way of exchanging)."""
    print(f"\nPart 2: gradient exchange in 2 gloo processes (1 thread each), ngp on {args.data}, {args.samples} samples a pass, "
          f"median of {args.repeats} interleaved rounds", flush=True)
    ex = exchange(args.data, args.samples, args.repeats)
    times = ex["times"]
    nbytes = 4 * ex["params"]
    print(f"ngp: {ex['params']:,} parameters in {ex['tensors']} tensors = {nbytes / 2**20:.1f} MiB of float32 gradients a step")
    print(f"\n| {'exchange':<26} | ms a step | exchange ms |")
    print(f"|{'-' * 28}|-----------|-------------|")
    for name in ("compute only", "flat all-reduce", "all-reduce per tensor", "DDP, plain", "DDP as nfplug runs it"):
        extra = (times[name] - times["compute only"]) * 1e3
        print(f"| {name:<26} | {times[name] * 1e3:9.1f} | {extra:11.1f} |")
    loopback = nbytes / times["all-reduce alone"] / 1e9 * 8
    print(f"one flat all-reduce alone: {times['all-reduce alone'] * 1e3:.1f} ms ({loopback:.1f} Gbit/s of gradient through gloo over loopback)")
    return nbytes, times


def predicted_step(t_compute: float, unsplit: float, nbytes: float, machines: int, gbit_s: float, latency: float = 50e-6) -> float:
    """Step time on ``machines`` machines: the share ``unsplit`` of ``t_compute`` that every process
    repeats, the rest divided, plus a ring all-reduce of ``nbytes`` at ``gbit_s``."""
    if machines == 1:
        return t_compute
    hops = 2 * (machines - 1)
    return t_compute * (unsplit + (1 - unsplit) / machines) + hops / machines * nbytes / (gbit_s * 1e9 / 8) + latency * hops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="demo", help="scene (default: the built-in demo)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--skip", type=int, default=100, help="steps left out of the rate (grid warm-up)")
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--samples", type=int, default=65536, help="samples a forward pass in part 2")
    parser.add_argument("--repeats", type=int, default=10, help="rounds of part 2")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of part 1 (each trains every setup once)")
    parser.add_argument("--bandwidths", type=float, nargs="+", default=[1.0, 10.0, 25.0, 100.0], help="Gbit/s")
    parser.add_argument("--plot", default="bench_distributed.png")
    parser.add_argument("--only-exchange", action="store_true", help="part 2 alone")
    args = parser.parse_args()
    if args.skip >= args.steps:
        sys.exit("bench_distributed: --skip must be below --steps")
    if args.only_exchange:
        report_exchange(args)
        return

    print(f"Part 1: training {args.data}, {args.steps} steps of {args.batch_size} rays, rate over steps {args.skip}-{args.steps}, "
          f"median of {args.rounds} interleaved round(s)", flush=True)
    setups = (("1 process x 2 threads", 1, 2, ()), (DDP_RUN, 2, 1, ("--dist-gradients", "ddp")),
              ("2 processes x 1 thread, flat", 2, 1, ("--dist-gradients", "flat")), ("1 process x 1 thread", 1, 1, ()))
    trials: dict = {label: [] for label, *_ in setups}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):  # interleaved: the machine's slow spells hit every setup alike
            for label, procs, threads, extra in setups:
                run = train(Path(tmp) / f"{label.replace(' ', '_').replace(',', '')}_{i}", args.data, args.steps, args.batch_size, procs, threads, extra)
                run["steps_s"] = rate(run["rows"], args.skip)
                trials[label].append(run)
                print(f"  round {i + 1}: {label}: {run['steps_s']:.2f} steps/s", flush=True)
    runs = {label: sorted(t, key=lambda r: r["steps_s"])[len(t) // 2] for label, t in trials.items()}  # the median run
    base = runs["1 process x 2 threads"]["steps_s"]
    print(f"\n| {'setup':<31} | steps/s | rays/s | vs 1 x 2 threads | final PSNR (1 view) |")
    print(f"|{'-' * 33}|---------|--------|------------------|---------------------|")
    for label, r in runs.items():
        print(f"| {label:<31} | {r['steps_s']:7.2f} | {r['steps_s'] * args.batch_size:6.0f} | {r['steps_s'] / base:15.2f}x | {r['psnr']:19.2f} |")
    ratios = [d["steps_s"] / f["steps_s"] for d, f in zip(trials[DDP_RUN], trials["2 processes x 1 thread, flat"])]
    print(f"DDP / flat all-reduce, steps/s of the same round: {', '.join(f'{x:.3f}' for x in ratios)}")

    nbytes, times = report_exchange(args)

    t_compute = 1.0 / base
    feedback = args.batch_size * 4 * 4  # loss, error and position gradient (2) a ray, float32
    total = nbytes + feedback
    # The share of a step every process repeats or waits in, from rank 0's --profile of the 2-process
    # run (a lower bound: the grid update's bookkeeping and waits inside the all-reduce are not in it).
    profile = runs[DDP_RUN]["profile"]
    repeated_ms = sum(profile["ms_per_step"].get(name, 0.0) for name in REPEATED)
    unsplit = repeated_ms / profile["step_ms"]
    print(f"\nPart 3: model. Bytes all-reduced a step: {nbytes / 2**20:.1f} MiB gradients + {feedback / 2**10:.0f} KiB sampler feedback; "
          f"t_compute = {t_compute * 1e3:.0f} ms a step (1 process x 2 threads, measured above); repeated by every process: at least "
          f"{unsplit:.0%} of a step ({repeated_ms:.1f} of {profile['step_ms']:.0f} ms in {', '.join(REPEATED)}, rank 0's --profile of the 2-process run)")
    machines = [1, 2, 4, 8, 16]
    print("\n| Gbit/s | " + " | ".join(f"{n} machines" for n in machines) + " |")
    print("|--------|" + "|".join("-" * (len(f"{n} machines") + 2) for n in machines) + "|")
    curves = {}
    for bw in args.bandwidths:
        speed = [t_compute / predicted_step(t_compute, unsplit, total, n, bw) for n in machines]
        curves[bw] = speed
        print(f"| {bw:6g} | " + " | ".join(f"{s:>{len(str(n)) + 8}.2f}x" for s, n in zip(speed, machines)) + " |")
    gain = t_compute * (1 - unsplit) / 2  # what a second machine saves before the exchange
    breakeven = total / gain * 8 / 1e9 if gain > 0 else float("inf")
    print(f"\nTwo machines pay off once the network moves a step's bytes in under {gain * 1e3:.0f} ms: above {breakeven:.1f} Gbit/s here; "
          f"at most {1 / max(unsplit, 1e-9):.1f}x with any number of machines while {unsplit:.0%} of a step is repeated.")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    labels = list(runs)
    ax1.bar(range(len(labels)), [runs[k]["steps_s"] * args.batch_size for k in labels], color=["tab:blue", "tab:orange", "tab:red", "tab:gray"])
    ax1.set_xticks(range(len(labels)), [k.replace(" x ", "\nx ").replace(", ", "\n") for k in labels], fontsize=8)
    ax1.set_ylabel("rays / s (global batch)")
    ax1.set_title(f"this machine ({os.cpu_count()} cores), {Path(args.data).name}")
    for bw, speed in curves.items():
        ax2.plot(machines, speed, marker="o", label=f"{bw:g} Gbit/s")
    ax2.plot(machines, machines, "k--", linewidth=0.8, label="ideal")
    ax2.set_xscale("log", base=2)
    ax2.set_yscale("log", base=2)
    ax2.set_xlabel("machines (each like this one)")
    ax2.set_ylabel("predicted speed-up")
    ax2.set_title(f"ngp: {nbytes / 2**20:.0f} MiB all-reduced a step")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(args.plot, dpi=110)
    print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
