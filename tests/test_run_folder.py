"""The run folder under faults: unwritable output, full disk, two processes, orphans, umask,
relative data paths, unsafe pickles, corrupt or NaN checkpoints (issue 12)."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import smooth_image, write_png
from nfplug.cli import main
from nfplug.errors import NfplugError
from nfplug.training import checkpoint as ckpt_module
from nfplug.training.checkpoint import FORMAT, VERSION, list_checkpoints, load_checkpoint, save_checkpoint
from nfplug.training.rundir import RunLock

# A 16x20 image and a tiny SIREN: a real run (config, checkpoints, history, metrics) in well under a second.
TINY = ["--field", "siren", "--field.hidden-features", "16", "--field.hidden-layers", "1",
        "--eval-every", "0", "--no-progress"]


@pytest.fixture
def image(tmp_path: Path) -> Path:
    return write_png(tmp_path / "img.png", smooth_image(16, 20))


def train(image: Path, run: Path, *extra: str) -> int:
    return main(["train", "--data", str(image), "--output", str(run), *TINY, *extra])


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("nfplug: error: ") and "\n" not in err, err
    return err


def read_only(monkeypatch, root: Path, code: int = errno.EROFS) -> None:
    """Creating or writing a file under ``root`` fails with ``code`` (tests run as root, so
    chmod 0555 would not stop them)."""
    real_open = os.open

    def fake_open(path, flags, *args, **kwargs):
        if str(os.fspath(path)).startswith(str(root)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(code, os.strerror(code), os.fspath(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)


def snapshot(run: Path) -> dict:
    return {p.name: p.read_bytes() for p in list_checkpoints(run)}


def tmp_files(run: Path) -> list:
    return sorted(p.name for p in run.rglob("*.tmp"))


# ----------------------------------------------------------------- 1. unwritable output


def test_output_that_cannot_be_a_folder(image: Path, tmp_path: Path, capsys) -> None:
    assert train(image, Path("/proc/nfplug-test/run"), "--max-steps", "1") == 2
    err = one_line_error(capsys)
    assert "/proc/nfplug-test" in err and "cannot create the folder" in err

    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    assert train(image, a_file / "run", "--max-steps", "1") == 2
    err = one_line_error(capsys)
    assert f"{a_file / 'run'}: cannot create the folder: not a folder ({a_file} is a file)" in err

    assert train(image, a_file, "--max-steps", "1") == 2
    assert f"{a_file}: cannot create the folder: not a folder" in one_line_error(capsys)
    assert a_file.read_text() == "not a folder"


@pytest.mark.parametrize("code, reason", [(errno.EROFS, "read-only file system"), (errno.EACCES, "permission denied")])
def test_unwritable_output_fails_before_training(image: Path, tmp_path: Path, monkeypatch, capsys, code: int, reason: str) -> None:
    from nfplug_builtins.samplers.uniform import UniformSampler

    run = tmp_path / "run"
    run.mkdir()
    read_only(monkeypatch, run, code)
    monkeypatch.setattr(UniformSampler, "sample", lambda *a: pytest.fail("training started on an unwritable run folder"))
    assert train(image, run, "--max-steps", "5") == 2
    assert f"{run}: cannot write in the folder: {reason}" in one_line_error(capsys)
    assert list(run.iterdir()) == []


def test_full_disk_keeps_the_previous_checkpoint(image: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    run = tmp_path / "run"
    assert train(image, run, "--max-steps", "2") == 0
    before = snapshot(run)
    assert list(before) == ["ckpt_0000002.pt"]

    def disk_full(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    assert main(["train", "--resume", str(run), "--max-steps", "4", "--no-progress"]) == 2
    err = one_line_error(capsys)
    assert f"{run / 'checkpoints' / 'ckpt_0000004.pt'}: cannot write it: no space left on device" in err
    assert snapshot(run) == before and tmp_files(run) == []
    assert load_checkpoint(run / "checkpoints" / "ckpt_0000002.pt")["step"] == 2


def test_torch_enforce_fail_is_a_write_error(tmp_path: Path, monkeypatch) -> None:
    """torch.save to a path on a full disk raises ``RuntimeError: [enforce fail at inline_container.cc:672]``."""
    state = {"field": {"w": torch.ones(3)}}
    save_checkpoint(tmp_path, state, 1)
    before = snapshot(tmp_path)

    def enforce_fail(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(torch, "save", enforce_fail)
    with pytest.raises(NfplugError, match=r"ckpt_0000002\.pt: cannot write it: the write failed \(disk full\?\)"):
        save_checkpoint(tmp_path, state, 2)

    class Full:
        f_bavail, f_frsize = 0, 4096

    monkeypatch.setattr(os, "statvfs", lambda path: Full())
    with pytest.raises(NfplugError, match=r"ckpt_0000002\.pt: cannot write it: no space left on device$"):
        save_checkpoint(tmp_path, state, 2)
    assert snapshot(tmp_path) == before and tmp_files(tmp_path) == []


def test_read_only_run_eval_render_export_resume(image: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    run = tmp_path / "run"
    assert train(image, run, "--max-steps", "2") == 0
    before = snapshot(run)
    metrics = (run / "metrics.json").read_bytes()
    read_only(monkeypatch, run)

    for command in (["eval", str(run)], ["render", str(run)], ["export", str(run)], ["train", "--resume", str(run), "--max-steps", "4"]):
        assert main(command) == 2, command
        err = one_line_error(capsys)
        assert str(run) in err and "read-only file system" in err, (command, err)
    assert snapshot(run) == before and (run / "metrics.json").read_bytes() == metrics


def test_every_run_file_write_names_the_file(tmp_path: Path, monkeypatch) -> None:
    from nfplug.training.history import History
    from nfplug.training.run import write_json_atomic

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(json, "dump", full)
    with pytest.raises(NfplugError, match=r"config\.json: cannot write it: no space left on device$"):
        write_json_atomic(tmp_path / "config.json", {})
    with pytest.raises(NfplugError, match=r"history\.json: cannot write it: no space left on device$"):
        History().save(tmp_path)
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind


# ----------------------------------------------------------------- 2. two processes


def test_second_trainer_on_a_locked_run_is_refused(image: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    run.mkdir()
    with RunLock(run):  # another open file description: conflicts even within this process
        assert train(image, run, "--max-steps", "2") == 2
        assert f"{run}: another nfplug process is training this run (pid {os.getpid()})" in one_line_error(capsys)
    assert train(image, run, "--max-steps", "2") == 0
    with RunLock(run):  # the lock was released when train returned; resuming a running run is refused
        assert main(["train", "--resume", str(run), "--max-steps", "4"]) == 2
        assert "another nfplug process is training this run" in one_line_error(capsys)
    assert load_checkpoint(list_checkpoints(run)[-1])["step"] == 2


def test_lock_is_held_by_a_live_process_only(image: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from nfplug.training.rundir import RunLock; "
         "lock = RunLock(sys.argv[1]); print('locked', flush=True); time.sleep(600)", str(run)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert train(image, run, "--max-steps", "2") == 2
        assert f"another nfplug process is training this run (pid {holder.pid})" in one_line_error(capsys)
    finally:
        holder.kill()
        holder.wait(timeout=60)
    assert train(image, run, "--max-steps", "2") == 0  # a killed process holds no lock


def test_two_cli_trainers_at_once(image: Path, tmp_path: Path) -> None:
    """Two real ``nfplug train --output RUN`` processes: exactly one trains."""
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "nfplug.cli", "train", "--data", str(image), "--output", str(run), *TINY, "--max-steps", "100000"]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (run / "config.json").exists() and time.time() < deadline and first.poll() is None:
            time.sleep(0.1)
        assert first.poll() is None, first.communicate()[1][-2000:]
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2
        assert second.stderr.strip() == f"nfplug: error: {run}: another nfplug process is training this run (pid {first.pid})"
    finally:
        first.terminate()
        first.communicate(timeout=120)


# ----------------------------------------------------------------- 3. orphan temporary files


def test_orphan_tmp_files_are_removed(image: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert train(image, run, "--max-steps", "2") == 0
    orphans = [run / "checkpoints" / ".ckpt_killed.tmp", run / ".config.json.killed.tmp", run / ".history.json.killed.tmp"]
    for orphan in orphans:
        orphan.write_bytes(b"left by kill -9")
    eval_tmp = run / ".metrics.json.in-flight.tmp"  # an `nfplug eval` may be writing it: left alone
    eval_tmp.write_bytes(b"{}")
    assert main(["train", "--resume", str(run), "--max-steps", "3"]) == 0
    assert not any(p.exists() for p in orphans) and eval_tmp.exists()

    orphan = run / "checkpoints" / ".ckpt_killed2.tmp"
    orphan.write_bytes(b"x")
    save_checkpoint(run, {"field": {"w": torch.ones(2)}}, 10)
    assert not orphan.exists()


# ----------------------------------------------------------------- 4. umask


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_run_files_honour_the_umask(image: Path, tmp_path: Path, umask: int, mode: int) -> None:
    run = tmp_path / "run"
    old = os.umask(umask)
    try:
        assert train(image, run, "--max-steps", "2") == 0
        assert main(["export", str(run)]) == 0
    finally:
        os.umask(old)
    files = [run / "config.json", run / "history.json", run / "metrics.json", *list_checkpoints(run),
             *sorted((run / "export-stream").iterdir())]
    assert len(files) >= 5
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == mode, path


# ----------------------------------------------------------------- 5. relative data path


def test_relative_data_path_works_from_another_folder(tmp_path: Path, monkeypatch, capsys) -> None:
    work = tmp_path / "work"
    work.mkdir()
    write_png(work / "img.png", smooth_image(16, 20))
    monkeypatch.chdir(work)
    assert main(["train", "--data", "img.png", "--output", "runs/x", *TINY, "--max-steps", "2"]) == 0
    config = json.loads((work / "runs" / "x" / "config.json").read_text())
    assert config["data"]["path"] == str(work / "img.png")
    monkeypatch.chdir(work / "runs")
    assert main(["eval", "x"]) == 0
    assert "PSNR" in capsys.readouterr().out
    assert main(["train", "--resume", "x", "--max-steps", "3"]) == 0


def test_demo_data_path_stays_demo(tmp_path: Path) -> None:
    from nfplug.training.run import save_run_config
    from nfplug.config import TrainBase

    save_run_config(tmp_path, TrainBase(), {"field": "ngp", "init": "default", "sampler": "uniform"})
    assert json.loads((tmp_path / "config.json").read_text())["data"]["path"] == "demo"


# ----------------------------------------------------------------- 6. unsafe pickles


class _Evil:
    def __reduce__(self):
        return (print, ("pwned: this ran while loading a checkpoint",))


def test_blocked_pickle_does_not_suggest_the_unsafe_path(tmp_path: Path, capsys) -> None:
    path = tmp_path / "ckpt_0000001.pt"
    torch.save({"format": FORMAT, "version": VERSION, "step": 1, "field": {}, "x": _Evil()}, path)
    with pytest.raises(NfplugError) as e:
        load_checkpoint(path)
    message = str(e.value)
    assert message.startswith(f"{path}: contains objects other than tensors and plain values")
    assert "(it refers to print), so nfplug refuses to load it" in message and "\n" not in message
    assert "weights_only" not in message and "trust" not in message
    assert "pwned" not in capsys.readouterr().out


# ----------------------------------------------------------------- 7. corrupt latest checkpoint


def test_corrupt_latest_checkpoint_falls_back_to_the_previous(image: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    assert train(image, run, "--max-steps", "4", "--checkpoint-every", "2") == 0
    older, latest = list_checkpoints(run)
    latest.write_bytes(latest.read_bytes()[:100])
    capsys.readouterr()

    assert main(["eval", str(run)]) == 0
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"nfplug: warning: {latest} is unusable (") and err.endswith(f"using the previous checkpoint {older}")
    assert "\n" not in err
    assert json.loads((run / "metrics.json").read_text())["step"] == 2

    assert main(["render", str(run), "--checkpoint", older.name]) == 0  # explicit: no warning
    assert capsys.readouterr().err.strip() == ""
    assert main(["eval", str(run), "--checkpoint", str(latest)]) == 2  # explicit: no fallback
    assert str(latest) in one_line_error(capsys)

    # --resume continues from the good one; the unusable one is set aside, so it cannot fork the run
    assert main(["train", "--resume", str(run), "--max-steps", "5"]) == 0
    err = capsys.readouterr().err
    assert f"{latest} is unusable" in err and "renamed to *.set-aside" in err
    assert (run / "checkpoints" / "ckpt_0000004.pt.set-aside").stat().st_size == 100  # the truncated one
    assert [p.name for p in list_checkpoints(run)] == ["ckpt_0000002.pt", "ckpt_0000004.pt", "ckpt_0000005.pt"]
    assert load_checkpoint(list_checkpoints(run)[1])["step"] == 4  # written again by the resumed run

    # pick an earlier checkpoint explicitly
    assert main(["train", "--resume", str(run), "--checkpoint", older.name, "--max-steps", "3"]) == 0
    assert "later checkpoint(s) ckpt_0000004.pt, ckpt_0000005.pt renamed to *.set-aside" in capsys.readouterr().err
    assert [p.name for p in list_checkpoints(run)] == ["ckpt_0000002.pt", "ckpt_0000003.pt"]
    assert load_checkpoint(list_checkpoints(run)[-1])["step"] == 3
    aside = sorted(p.name for p in (run / "checkpoints").glob("*.set-aside*"))
    assert aside == ["ckpt_0000004.pt.set-aside", "ckpt_0000004.pt.set-aside-1", "ckpt_0000005.pt.set-aside"]
    assert (run / "checkpoints" / "ckpt_0000004.pt.set-aside").stat().st_size == 100  # not overwritten

    assert train(image, tmp_path / "other", "--max-steps", "1", "--checkpoint", str(older)) == 2
    assert "--checkpoint: only with --resume" in one_line_error(capsys)


def test_a_failed_resume_from_an_earlier_checkpoint_sets_nothing_aside(image: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    assert train(image, run, "--max-steps", "4", "--checkpoint-every", "2") == 0
    before = [p.name for p in list_checkpoints(run)]
    older = list_checkpoints(run)[0]
    # a different network than the checkpoint holds: the restore fails
    assert main(["train", "--resume", str(run), "--checkpoint", older.name, "--max-steps", "6", "--field.hidden-features", "24"]) == 2
    assert "does not match the run's config" in one_line_error(capsys)
    assert [p.name for p in list_checkpoints(run)] == before
    assert not list((run / "checkpoints").glob("*.set-aside*"))


def test_no_usable_checkpoint_is_the_latest_error(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, {"field": {"w": torch.ones(2)}}, 1)
    save_checkpoint(tmp_path, {"field": {"w": torch.ones(2)}}, 2)
    for path in list_checkpoints(tmp_path):
        path.write_bytes(b"garbage")
    with pytest.raises(NfplugError, match=r"ckpt_0000002\.pt: not a readable checkpoint"):
        ckpt_module.load_run_checkpoint(tmp_path)


# ----------------------------------------------------------------- 8. NaN weights


def test_nan_checkpoint_is_refused(image: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    assert train(image, run, "--max-steps", "2") == 0
    (path,) = list_checkpoints(run)
    payload = torch.load(path, weights_only=True)
    name = sorted(payload["field"])[1]
    payload["field"][name] = torch.full_like(payload["field"][name], float("nan"))
    torch.save(payload, path)
    capsys.readouterr()
    assert main(["eval", str(run)]) == 2
    assert one_line_error(capsys) == f"nfplug: error: {path}: the field's weight '{name}' holds NaN or inf (written by a diverged training); refusing to load it"


def _poison_after(monkeypatch, n_steps: int) -> None:
    """Every optimizer step after the ``n_steps``-th leaves NaN weights."""
    real_step = torch.optim.Adam.step
    count = {"n": 0}

    def step(self, *args, **kwargs):
        result = real_step(self, *args, **kwargs)
        count["n"] += 1
        if count["n"] >= n_steps:
            with torch.no_grad():
                for group in self.param_groups:
                    for p in group["params"]:
                        p.fill_(float("nan"))
        return result

    monkeypatch.setattr(torch.optim.Adam, "step", step)


def test_diverged_loss_writes_no_checkpoint(image: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    run = tmp_path / "run"
    _poison_after(monkeypatch, 3)  # weights NaN after step 3, the loss of step 4 is NaN
    assert train(image, run, "--max-steps", "8", "--checkpoint-every", "2") == 2
    assert "step 4: the loss became nan" in one_line_error(capsys)
    assert [p.name for p in list_checkpoints(run)] == ["ckpt_0000002.pt"]
    assert load_checkpoint(list_checkpoints(run)[0])["step"] == 2  # finite, loadable
    assert tmp_files(run) == []


def test_non_finite_weights_are_never_saved(image: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    run = tmp_path / "run"
    _poison_after(monkeypatch, 4)  # step 4's loss is still finite, its checkpoint would hold NaN
    assert train(image, run, "--max-steps", "8", "--checkpoint-every", "2") == 2
    err = one_line_error(capsys)
    assert f"{run / 'checkpoints' / 'ckpt_0000004.pt'}: not written: the field's weight" in err and "NaN or inf" in err
    assert [p.name for p in list_checkpoints(run)] == ["ckpt_0000002.pt"]
    assert load_checkpoint(list_checkpoints(run)[0])["step"] == 2
    assert tmp_files(run) == []
