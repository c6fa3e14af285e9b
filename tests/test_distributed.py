"""Data-parallel training (nfplug.distributed): the pieces on hand cases, the collectives in two
gloo processes, and whole runs under torchrun on the CPU (determinism against one process, every
sampler, --resume with another number of processes, a killed process, a sharded sampler)."""

from __future__ import annotations

import gc
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import weakref
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import REPO
from nfplug.distributed import Group, first_line, init_process_group, lost_peer_message, shard_mask, share_generator, split
from nfplug.training.objective import step_loss

# ----------------------------------------------------------------------------- hand cases


def test_split_hand_cases():
    assert [split(10, r, 3) for r in range(3)] == [(0, 4), (4, 3), (7, 3)]
    assert [split(4, r, 2) for r in range(2)] == [(0, 2), (2, 2)]
    assert [split(1, r, 2) for r in range(2)] == [(0, 1), (1, 0)]  # a process may get no rays
    for total in (0, 1, 7, 4096):
        shares = [split(total, r, 3) for r in range(3)]
        assert sum(c for _, c in shares) == total
        assert all(shares[i][0] + shares[i][1] == shares[i + 1][0] for i in range(2))  # contiguous


@pytest.mark.parametrize("per_item", [1, 3])
def test_share_generator_gives_each_row_its_single_process_numbers(per_item):
    one = torch.Generator().manual_seed(7)
    whole = torch.rand(10 * per_item, generator=one).view(10, per_item)
    after_one = torch.rand(5, generator=one)
    for start, count in ((0, 4), (4, 3), (7, 3)):
        g = torch.Generator().manual_seed(7)
        mine = share_generator(g, (start, 10), per_item)
        rows = torch.rand(count * per_item, generator=mine).view(count, per_item)
        assert torch.equal(rows, whole[start : start + count])
        assert torch.equal(torch.rand(5, generator=g), after_one)  # the shared generator moved past all 10
    g = torch.Generator().manual_seed(7)
    assert share_generator(g, None) is g


def test_step_loss_shares_sum_to_the_single_process_loss_and_gradient():
    per_ray = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], requires_grad=True)
    weight = torch.tensor([1.0, 0.5, 2.0, 1.0, 1.0])
    reg = torch.tensor(0.25, requires_grad=True)
    full = step_loss(weight, per_ray, [], {"r": reg})  # (1 + 1 + 6 + 4 + 5) / 5 + 0.25 = 3.65
    assert full.item() == pytest.approx(3.65)
    full.backward()
    g_full, g_reg = per_ray.grad.clone(), reg.grad.clone()
    per_ray.grad = None
    reg.grad = None
    parts = [step_loss(weight[a:b], per_ray[a:b], [], {"r": reg}, total_rays=5, processes=2) for a, b in ((0, 3), (3, 5))]
    assert parts[0].item() == pytest.approx(8 / 5 + 0.125) and parts[1].item() == pytest.approx(9 / 5 + 0.125)
    (parts[0] + parts[1]).backward()  # what the gradient all-reduce (a sum) adds up
    assert torch.allclose(per_ray.grad, g_full) and torch.allclose(reg.grad, g_reg)


def test_shard_mask_is_disjoint_and_covers_the_trainable_pixels():
    mask = torch.rand(5, 4, 6, generator=torch.Generator().manual_seed(0)) > 0.3
    for n_images, world in ((5, 2), (5, 3), (1, 2), (2, 3)):
        base = mask[:n_images]
        shares = [shard_mask(n_images, 4, 6, base, r, world) for r in range(world)]
        total = torch.stack(shares).sum(0)
        assert torch.equal(total > 0, base) and int(total.max()) == 1  # disjoint, together all of them
        if n_images >= world:  # whole images per process
            for r, share in enumerate(shares):
                assert not share[[i for i in range(n_images) if i % world != r]].any()
    with pytest.raises(Exception, match="no trainable pixel"):
        shard_mask(2, 1, 1, torch.tensor([[[True]], [[False]]]), 1, 2)


def test_lost_peer_reason_is_short():
    error = RuntimeError("[/__w/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:29103: "
                         "Connection reset by peer. This is typically caused by a remote worker hanging")
    assert first_line(error) == "Read error [127.0.0.1]:29103: Connection reset by peer"


def test_lost_peer_message_names_the_launcher_to_resume_with():
    error = RuntimeError("Connection reset by peer")
    for owned, launcher in ((True, "torchrun --nproc-per-node N -m nfplug train"), (False, "nfplug train-ray --workers N")):
        group = Group(rank=1, world_size=2, local_rank=1, backend="gloo", device=torch.device("cpu"), owned=owned)
        message = lost_peer_message(group, error, step=13, last_checkpoint=10, run_dir="runs/x")
        assert message == (f"rank 1 of 2: lost contact with another process during step 14 (Connection reset by peer); "
                           f"stopped without writing; the last checkpoint (step 10) is intact: continue with {launcher} --resume runs/x")


def test_split_batch_renders_what_one_batch_renders():
    """A scene batch rendered in two shares (each drawing its rows' random numbers) equals the whole
    batch rendered at once: stratified marching and random backgrounds included."""
    from nfplug.cli import parse_train_args
    from nfplug.training.run import build_field, plugin_classes
    from nfplug.training.tasks import build_task

    config, names, _ = parse_train_args(["--data", "demo", "--data.background", "random", "--render.grid-resolution", "32"])
    device = torch.device("cpu")
    task = build_task(config, device)
    field = build_field(config, names, plugin_classes(names), task.field_context(), device, torch.Generator().manual_seed(0))
    from nfplug.api import RayBatch

    n = 96
    g = torch.Generator().manual_seed(1)
    batch = RayBatch(torch.randint(0, task.images.shape[0], (n,), generator=g), torch.rand(n, 2, generator=g) * 64, torch.ones(n))
    one = torch.Generator().manual_seed(5)
    pred, gt, _ = task.train_forward(field, batch, one)
    after = torch.rand(3, generator=one)
    pieces = []
    shared = torch.Generator().manual_seed(5)
    for start, count in (split(n, 0, 2), split(n, 1, 2)):
        rows = RayBatch(batch.image_index[start : start + count], batch.pixel_xy[start : start + count], batch.weight[start : start + count])
        g_rank = torch.Generator().manual_seed(5)  # each process holds the same generator
        p, t, _ = task.train_forward(field, rows, g_rank, (start, n))
        pieces.append((p, t))
        if start == 0:
            task.train_forward(field, rows, shared, (start, n))
    assert torch.allclose(torch.cat([p for p, _ in pieces]), pred, atol=1e-6)
    assert torch.equal(torch.cat([t for _, t in pieces]), gt)  # random background composited the same
    assert torch.equal(torch.rand(3, generator=shared), after)  # and the generator moved as in one process


# ------------------------------------------------------------------- collectives, 2 processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_two(fn, *args) -> None:
    mp.spawn(_worker, args=(fn, _free_port(), args), nprocs=2, join=True)


def _worker(rank: int, fn, port: int, args) -> None:
    torch.set_num_threads(1)
    init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    group = Group(rank=rank, world_size=2, local_rank=rank, backend="gloo", device=torch.device("cpu"))
    try:
        fn(group, *args)
    finally:
        group.close()  # as training leaves: the DDPs released first


def _check_collectives(group: Group, out: str) -> None:
    r = group.rank
    # gather_rows with unequal shares: 3 rows and 2 rows of a 5-row batch.
    start, count = split(5, r, 2)
    rows = torch.arange(start, start + count, dtype=torch.float32)[:, None] * torch.tensor([[1.0, 10.0]])
    gathered = group.gather_rows(rows, start, 5)
    assert torch.equal(gathered, torch.arange(5.0)[:, None] * torch.tensor([[1.0, 10.0]]))
    # sum_gradients_: a gradient on both, on one only, on neither.
    both, one, neither = (torch.nn.Parameter(torch.zeros(3)) for _ in range(3))
    both.grad = torch.full((3,), float(r + 1))
    if r == 1:
        one.grad = torch.tensor([1.0, 2.0, 3.0])
    extra = group.sum_gradients_([both, one, neither], torch.tensor([float(r), 2.0]))
    assert torch.equal(both.grad, torch.full((3,), 3.0))
    assert torch.equal(one.grad, torch.tensor([1.0, 2.0, 3.0]))  # a missing gradient counts as zeros
    assert neither.grad is None  # nobody computed one: Adam skips it, as in one process
    assert torch.equal(extra, torch.tensor([1.0, 4.0]))
    # max_ and agree.
    values = torch.tensor([1.0, 5.0, -1.0]) if r == 0 else torch.tensor([2.0, 3.0, -2.0])
    assert torch.equal(group.max_(values), torch.tensor([2.0, 5.0, -1.0]))
    assert group.agree(r == 1, 10.0 + r) == (True, 11.0)
    assert group.broadcast({"rank": r})["rank"] == 0
    Path(out, f"ok{r}").write_text("ok")


def test_collectives_two_processes(tmp_path):
    _run_two(_check_collectives, str(tmp_path))
    assert (tmp_path / "ok0").exists() and (tmp_path / "ok1").exists()


class _Three(torch.nn.Module):
    """Three parameters; which of them a process uses is up to the test."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
        self.b = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
        self.c = torch.nn.Parameter(torch.tensor([5.0, 6.0]))


def _check_ddp(group: Group, out: str) -> None:
    """DataParallelStep (--dist-gradients ddp) against the flat all-reduce (--dist-gradients flat) on
    hand-computed gradients: each process's loss is its share; the processes' gradients sum."""
    r = group.rank
    x = torch.tensor([1.0, -1.0]) * (r + 1)  # rank 0: [1, -1]; rank 1: [2, -2]
    extra = torch.nn.Parameter(torch.tensor([0.5]))  # a task's parameter (a learned background)

    def share(m: _Three, hit: bool) -> torch.Tensor:
        # Rank 0 uses a and b, rank 1 only a; c is never used; a process without a hit has no graph.
        if not hit:
            return torch.tensor(0.0)
        loss = (m.a * x).sum() + extra.sum() * (r + 1)
        return loss + (m.b * x).sum() * 2 if r == 0 else loss

    for hits in ((True, True), (True, False)):
        grads = {}
        for way in ("ddp", "flat"):
            m = _Three()
            extra.grad = None
            if way == "ddp":
                step = group.data_parallel(m, [extra])
                loss = step(lambda: share(m, hits[r]))
                loss.backward()  # always a graph, even without a hit: DDP needs every process
            else:
                loss = share(m, hits[r])
                if loss.requires_grad:
                    loss.backward()
                group.sum_gradients_([m.a, m.b, m.c, extra])
            grads[way] = [None if p.grad is None else p.grad.clone() for p in (m.a, m.b, m.c, extra)]
        a, b, c, e = grads["flat"]
        if hits == (True, True):  # a: x0 + x1 = [3, -3]; b: 2 x0 = [2, -2]; extra: 1 + 2
            assert torch.equal(a, torch.tensor([3.0, -3.0])) and torch.equal(b, torch.tensor([2.0, -2.0])) and torch.equal(e, torch.tensor([3.0]))
        else:  # rank 1 missed: rank 0's gradients alone
            assert torch.equal(a, torch.tensor([1.0, -1.0])) and torch.equal(b, torch.tensor([2.0, -2.0])) and torch.equal(e, torch.tensor([1.0]))
        assert c is None  # used by no process: Adam skips it, as in one process
        for got, want in zip(grads["ddp"], grads["flat"]):
            assert (got is None) == (want is None)
            assert got is None or torch.equal(got, want)
    Path(out, f"ok{r}").write_text("ok")


def test_ddp_gradients_are_the_flat_all_reduce(tmp_path):
    _run_two(_check_ddp, str(tmp_path))
    assert (tmp_path / "ok0").exists() and (tmp_path / "ok1").exists()


def _gloo_threads() -> list:
    return [t for t in os.listdir("/proc/self/task") if Path("/proc/self/task", t, "comm").read_text().startswith("pt_gloo")]


def _check_release(group: Group, out: str) -> None:
    """A released DDP is freed at once, and closing the group releases the rest and ends the group:
    its gloo threads stop. One still running as Python exits aborted about one exit in ten (SIGABRT,
    "terminate called without an active exception"): DDP's objects refer to one another, and
    torch._dynamo holds on to the groups that exist when DDP imports it."""
    m = _Three()
    gc.disable()  # no collection but release's own
    try:
        old = group.data_parallel(m, [])
        old.backward(old(lambda: (m.a * m.b).sum()))
        old_ddp = weakref.ref(old.ddp)
        new = group.data_parallel(m, [])  # a new training stage
        new.backward(new(lambda: (m.a * m.b).sum()))
        new_ddp = weakref.ref(new.ddp)
        old.release()
        assert old_ddp() is None and new_ddp() is not None
        with pytest.raises(RuntimeError, match="after release"):
            old(lambda: m.a.sum())
        assert _gloo_threads()
        group.close(wait=True)
        assert new_ddp() is None and not dist.is_initialized()
        assert not _gloo_threads()  # the group ended here, not as Python exits
    finally:
        gc.enable()
    Path(out, f"ok{group.rank}").write_text("ok")


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads the threads' names from /proc (Linux)")
def test_closing_the_group_frees_every_ddp(tmp_path):
    _run_two(_check_release, str(tmp_path))
    assert (tmp_path / "ok0").exists() and (tmp_path / "ok1").exists()


def _check_grid(group: Group, out: str) -> None:
    from nfplug.config import RenderConfig
    from nfplug.rendering.scene_renderer import SceneRenderer

    torch.manual_seed(0)
    cfg = RenderConfig(grid_resolution=16, grid_update_every=1, grid_warmup_steps=0)
    renderer = SceneRenderer((-1.0,) * 3 + (1.0,) * 3, 0.5, 5.0, cfg)
    # Each process sees a different density, as processes whose fields had drifted apart would.
    centre = torch.tensor([0.3, -0.2, 0.1]) if group.rank == 0 else torch.tensor([-0.4, 0.2, -0.3])

    def density(x):
        return 50.0 * torch.exp(-((x - centre) ** 2).sum(-1) / 0.05)

    state = torch.get_rng_state()
    est = renderer.estimator
    start = (est.occs.clone(), est.binaries.clone())
    renderer.update_occupancy(0, density)  # alone: this process's own EMA update
    alone = renderer.estimator.occs.clone()
    theirs = alone.clone()
    group.max_(theirs)  # what the all-reduce should give: the element-wise max of the two
    est.occs.copy_(start[0])
    est.binaries = start[1].clone()
    torch.set_rng_state(state)
    renderer.reduce_occupancy = group.max_
    renderer.update_occupancy(0, density)
    occs, binaries = renderer.estimator.occs, renderer.estimator.binaries
    assert torch.equal(occs, theirs)
    assert not torch.equal(occs, alone)  # the other process's cells are in this grid now
    torch.save({"occs": occs, "binaries": binaries}, Path(out, f"grid{group.rank}.pt"))


def test_occupancy_grid_all_reduce_is_bit_identical(tmp_path):
    _run_two(_check_grid, str(tmp_path))
    a, b = (torch.load(tmp_path / f"grid{r}.pt") for r in range(2))
    assert torch.equal(a["occs"], b["occs"]) and torch.equal(a["binaries"], b["binaries"])
    assert a["binaries"].any()


# ------------------------------------------------------------------------- torchrun, end to end

RUN = ["--data", "demo", "--eval-every", "0", "--final-eval-views", "1", "--no-progress", "--render.grid-resolution", "32"]


def _torchrun(n: int, args, env=None, **kw) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(n), "--master-port", str(_free_port()), "-m", "nfplug", "train", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, **kw)


def _nfplug(args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nfplug", "train", *args], capture_output=True, text=True, timeout=600)


def _last_checkpoint(run: Path) -> dict:
    return torch.load(sorted((run / "checkpoints").glob("*.pt"))[-1], map_location="cpu", weights_only=False)


def _explain(r: subprocess.CompletedProcess) -> str:
    """What the processes said, without torchrun's own report around it."""
    return "\n".join(line for line in r.stderr.splitlines() if not line.startswith(("W1", "E1", "I1")))[:4000]


def _errors(stderr: str):
    return [line for line in stderr.splitlines() if line.startswith("nfplug: error")]


SAME_STEPS = ["--max-steps", "3", "--sampler", "uniform", "--batch-size", "1024"]


def _train_one_process(run: Path) -> None:
    """The 1-process reference run the distributed ones are compared with (SAME_STEPS, one thread)."""
    r = _nfplug([*RUN, *SAME_STEPS, "--threads", "1", "--output", str(run)])
    assert r.returncode == 0, r.stderr[-2000:]


def _assert_took_the_same_steps(one: Path, two: Path) -> None:
    """The 2-process run ``two`` holds the 1-process run ``one``'s field to float tolerance (sums over
    rays in another order), after steps that moved it, and the same grid bit for bit."""
    a, b = _last_checkpoint(one), _last_checkpoint(two)
    assert a["step"] == b["step"] == 3 and b["world_size"] == 2
    moved = 0.0
    for name, value in a["field"].items():
        assert torch.allclose(value, b["field"][name], rtol=0, atol=1e-6), name
        moved = max(moved, float((value - _initial(one, name)).abs().max()))
    assert moved > 1e-4  # the steps were taken (so the comparison above can fail)
    for key in ("occs", "binaries"):
        assert torch.equal(a["task"]["estimator"][key], b["task"]["estimator"][key])


@pytest.mark.parametrize("gradients", ["ddp", "flat"])
def test_two_processes_take_the_single_process_steps(tmp_path, gradients):
    """Uniform sampler, demo scene, same seed and global batch: after 3 steps the 2-process field is
    the 1-process field to float tolerance (sums over rays in another order) and the grids are equal,
    with either gradient exchange (DistributedDataParallel, the default; one flat all-reduce)."""
    one, two = tmp_path / "one", tmp_path / "two"
    _train_one_process(one)
    r2 = _torchrun(2, [*RUN, *SAME_STEPS, "--dist-gradients", gradients, "--output", str(two)])
    assert r2.returncode == 0, _explain(r2)
    _assert_took_the_same_steps(one, two)
    report = json.loads((two / "distributed.json").read_text())
    assert report["consistent"] and report["world_size"] == 2 and report["compared"] == ["field", "grid", "sampler"]
    assert len({row["field"] for row in report["ranks"]}) == 1 and len({row["grid"] for row in report["ranks"]}) == 1
    # Rank 0 alone writes and reports: one final line, one metrics file, one TensorBoard log.
    assert r2.stdout.count("nfplug: trained 3 steps") == 1
    assert "global batch split over the ranks" in r2.stdout
    assert len(list((two / "tensorboard").glob("events.*"))) == 1
    assert json.loads((two / "metrics.json").read_text())["step"] == 3


_INITIAL = {}


def _initial(run: Path, name: str) -> torch.Tensor:
    """The field's value before training (same seed, built in this process)."""
    if not _INITIAL:
        from nfplug.cli import parse_train_args
        from nfplug.training.run import build_field, plugin_classes
        from nfplug.training.tasks import build_task

        config, names, _ = parse_train_args([*RUN, "--sampler", "uniform"])
        torch.manual_seed(config.seed)
        task = build_task(config, torch.device("cpu"))
        field = build_field(config, names, plugin_classes(names), task.field_context(), torch.device("cpu"), torch.Generator().manual_seed(config.seed))
        _INITIAL.update({k: v.detach().clone() for k, v in field.state_dict().items()})
    return _INITIAL[name]


@pytest.mark.parametrize("sampler", ["softmine", "int"])
def test_samplers_distributed_and_resume_with_another_process_count(tmp_path, sampler):
    """softmine (position gradients, batch-wide loss weights) and int (error predictions split over
    the processes) keep one state on every process; a run moves from 2 processes to 1 and back."""
    run = tmp_path / "run"
    base = [*RUN, "--sampler", sampler, "--batch-size", "512", "--checkpoint-every", "5"]
    r = _torchrun(2, [*base, "--max-steps", "10", "--output", str(run)])
    assert r.returncode == 0, _explain(r)
    report = json.loads((run / "distributed.json").read_text())
    assert report["consistent"] and "sampler" in report["compared"]
    state = _last_checkpoint(run)["sampler"]
    r = _nfplug(["--resume", str(run), "--max-steps", "14"])  # 2 processes -> 1
    assert r.returncode == 0, r.stderr[-2000:]
    assert _last_checkpoint(run)["step"] == 14 and _last_checkpoint(run)["world_size"] == 1
    r = _torchrun(2, ["--resume", str(run), "--max-steps", "18"])  # 1 -> 2
    assert r.returncode == 0, _explain(r)
    ckpt = _last_checkpoint(run)
    assert ckpt["step"] == 18 and ckpt["world_size"] == 2
    assert json.loads((run / "distributed.json").read_text())["ranks"][0]["step"] == 18
    assert json.loads((run / "metrics.json").read_text())["step"] == 18
    if sampler == "softmine":  # its positions moved on from the first run's
        assert not torch.equal(state["positions"], ckpt["sampler"]["positions"])


def test_killed_process_stops_the_others_and_keeps_the_checkpoint(tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(_free_port()), "-m", "nfplug", "train",
           *RUN, "--max-steps", "100000", "--batch-size", "512", "--checkpoint-every", "5", "--output", str(run)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while not list((run / "checkpoints").glob("*.pt")) and time.time() < deadline:
            time.sleep(0.5)
        assert list((run / "checkpoints").glob("*.pt")), "no checkpoint within 300 s"
        rank1 = [pid for pid in _children(proc.pid) if _environ(pid).get("RANK") == "1"]
        assert len(rank1) == 1
        killed = time.time()
        os.kill(rank1[0], signal.SIGKILL)
        out, err = proc.communicate(timeout=120)
        stopped = time.time() - killed
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert stopped < 60
    lines = _errors(err)
    assert len(lines) == 1, err[-3000:]  # rank 0's one line; rank 1 died without a word
    assert "rank 0 of 2: lost contact with another process" in lines[0] and "is intact" in lines[0]
    ckpt = _last_checkpoint(run)  # loads: the last one written is whole
    assert ckpt["step"] % 5 == 0 and ckpt["step"] >= 5
    assert f"(step {ckpt['step']})" in lines[0]
    assert not (run / "metrics.json").exists()


def _children(pid: int):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out] + [c for p in out for c in _children(int(p))]


def _environ(pid: int) -> dict:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return {}
    return dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)


SHARDED = textwrap.dedent(
    '''
    import torch
    from nfplug.api import RayBatch, Sampler

    class ShardedSampler(Sampler):
        """Uniform over this process's share; remembers which images it drew from."""
        distributed = "sharded"

        def __init__(self, config, context):
            super().__init__(config, context)
            self.index, self.xy = context.trainable_pixels()
            self.seen = torch.zeros(context.n_images, dtype=torch.bool)

        def sample(self, step, generator):
            pick = torch.randint(0, self.index.shape[0], (self.context.batch_size,), generator=generator)
            return RayBatch(self.index[pick], self.xy[pick], torch.ones(pick.shape[0]))

        def update(self, feedback):
            self.seen[feedback.batch.image_index] = True
            assert feedback.loss.shape[0] == self.context.batch_size  # only this process's rays

        def state_dict(self):
            return {"seen": self.seen.clone(), "rank": self.context.rank}

        def load_state_dict(self, state):
            self.seen = state["seen"].clone()
    '''
)


def test_sharded_sampler_owns_a_disjoint_share(tmp_path):
    (tmp_path / "sharded_sampler.py").write_text(SHARDED)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
               NFPLUG_PLUGINS="samplers:sharded=sharded_sampler:ShardedSampler")
    run = tmp_path / "run"
    r = _torchrun(2, [*RUN, "--sampler", "sharded", "--batch-size", "256", "--max-steps", "20", "--output", str(run)], env=env)
    assert r.returncode == 0, _explain(r)
    state = _last_checkpoint(run)["sampler"]
    assert state["world_size"] == 2 and [s["state"]["rank"] for s in state["per_rank"]] == [0, 1]
    seen = [s["state"]["seen"] for s in state["per_rank"]]
    assert not (seen[0] & seen[1]).any()  # disjoint images
    assert seen[0][0::2].all() and seen[1][1::2].all()  # image i belongs to process i % 2
    report = json.loads((run / "distributed.json").read_text())
    assert report["consistent"] and report["compared"] == ["field", "grid"]
    r = subprocess.run([sys.executable, "-m", "nfplug", "train", "--resume", str(run), "--max-steps", "22"], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "had 2 process(es), now 1: it starts afresh" in r.stdout


def test_viewer_is_refused_under_torchrun():
    env = dict(os.environ, WORLD_SIZE="2", RANK="0", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT="1")
    r = subprocess.run([sys.executable, "-m", "nfplug", "train", "--data", "demo", "--viewer"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and _errors(r.stderr) == [r.stderr.strip()] and "--viewer: not with torchrun" in r.stderr


def test_malformed_world_size_is_one_line():
    r = subprocess.run([sys.executable, "-m", "nfplug", "train", "--data", "demo"], capture_output=True, text=True,
                       env=dict(os.environ, WORLD_SIZE="two"), timeout=120, cwd=REPO)
    assert r.returncode == 2 and r.stderr.strip() == "nfplug: error: WORLD_SIZE: expected the number of processes, got 'two' (torchrun sets it; unset it to train in one process)"


def test_world_size_without_torchrun_is_one_line():
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["WORLD_SIZE"] = "2"
    r = subprocess.run([sys.executable, "-m", "nfplug", "train", "--data", "demo"], capture_output=True, text=True, env=env, timeout=120, cwd=REPO)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "start distributed training with torchrun" in r.stderr


def test_two_launchers_as_two_machines(tmp_path):
    """Two torchrun launchers meeting at a rendezvous endpoint, as on two machines (here both on
    localhost, one process each): the README's multi-node command."""
    run = tmp_path / "run"
    port = _free_port()
    common = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
              "--rdzv-endpoint", f"127.0.0.1:{port}"]
    args = ["-m", "nfplug", "train", *RUN, "--max-steps", "6", "--batch-size", "512", "--output", str(run)]
    other = subprocess.Popen([*common, "--node-rank", "1", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = subprocess.run([*common, "--node-rank", "0", *args], capture_output=True, text=True, timeout=600)
        out, err = other.communicate(timeout=120)
    finally:
        if other.poll() is None:
            other.kill()
    assert first.returncode == 0 and other.returncode == 0, _explain(first) + err[-2000:]
    report = json.loads((run / "distributed.json").read_text())
    assert report["consistent"] and sorted(row["rank"] for row in report["ranks"]) == [0, 1]
    assert (first.stdout + out).count("nfplug: trained 6 steps") == 1  # whichever launcher holds rank 0 reports
