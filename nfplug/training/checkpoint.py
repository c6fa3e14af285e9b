"""Checkpoints: written atomically, read with ``torch.load(..., weights_only=True)``.

A checkpoint is a dict of tensors and plain values; the trainer writes::

    {"format": "nfplug-checkpoint", "version": 1, "step": int,
     "field": state_dict,                # the field's weights (all finite: checked on save and load)
     "optimizer": state_dict,            # Adam of the current training stage
     "stage": int, "stages": [{"start", "parts", "frozen"}],  # the plan the run started with
     "schedule_steps": int,              # the learning-rate schedule's length (kept on --resume)
     "task": dict,                       # the task's state, e.g. a scene's occupancy grid
     "sampler": dict,                    # the sampler plugin's state
     "rng": {"generator": ByteTensor, "torch": ByteTensor, "cuda": ByteTensor (on a GPU)},
     "elapsed": float}                   # training seconds so far

Files are named ``ckpt_<step>.pt`` inside ``<run>/checkpoints``; a new one is first
written to a temporary file (``.ckpt_*.tmp``) in the same folder and then renamed over, so a
crash, a full disk or Ctrl-C never leaves a half-written checkpoint under a checkpoint's
name and never damages the previous one. The last ``KEEP_LAST`` are kept.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import sys
import zipfile
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import torch

from nfplug.errors import NfplugError
from nfplug.training.rundir import atomic_file, make_folder, os_reason, remove_stale_tmp, writing

FORMAT = "nfplug-checkpoint"
VERSION = 1
KEEP_LAST = 3
_NAME = re.compile(r"^ckpt_(\d+)\.pt$")
SET_ASIDE = ".set-aside"


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: Path) -> List[Path]:
    """Checkpoints of a run, oldest first."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def first_non_finite(state: Any) -> Optional[str]:
    """The name of the first floating-point tensor of a state dict holding NaN or inf, or None."""
    if not isinstance(state, dict):
        return None
    for name, value in state.items():
        if isinstance(value, torch.Tensor) and (value.is_floating_point() or value.is_complex()):
            if not bool(torch.isfinite(value).all()):
                return str(name)
    return None


def save_checkpoint(run_dir: Path, state: Dict[str, Any], step: int) -> Path:
    """Atomically write ``ckpt_<step>.pt`` and keep only the last few checkpoints.

    Refuses (NfplugError) to write field weights holding NaN or inf; a failed write (full
    disk, read-only folder) is a one-line NfplugError and leaves earlier checkpoints as they were.
    """
    folder = checkpoint_dir(run_dir)
    path = folder / f"ckpt_{step:07d}.pt"
    bad = first_non_finite(state.get("field"))
    if bad is not None:
        raise NfplugError(
            f"{path}: not written: the field's weight '{bad}' holds NaN or inf (the training diverged; "
            f"lower --optim.lr); the earlier checkpoints are kept"
        )
    make_folder(folder)
    remove_stale_tmp(folder)  # left by a killed run: we are the run's only writer
    payload = {"format": FORMAT, "version": VERSION, "step": step, **state}
    with atomic_file(path, "wb", prefix=".ckpt_") as f:
        torch.save(payload, f)
    for old in list_checkpoints(run_dir)[:-KEEP_LAST]:
        with writing(old, "remove it"):
            old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path, map_location: Optional[torch.device] = None) -> Dict[str, Any]:
    """Load and validate a checkpoint; NfplugError (one line) if it is not a usable one."""
    path = Path(path)
    if not path.is_file():
        raise NfplugError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location=map_location or "cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        detail = _unpickler_detail(e)  # never torch's advice to retry with weights_only=False
        if any(word in detail for word in ("GLOBAL", "allowlist", "Can only create", "Can only build")):
            raise NfplugError(
                f"{path}: contains objects other than tensors and plain values{_blocked_global(detail)}, "
                f"so nfplug refuses to load it (loading it could run code)"
            ) from None
        raise NfplugError(f"{path}: not a readable checkpoint (truncated or corrupt?): {detail}") from None
    except OSError as e:
        raise NfplugError(f"{path}: cannot read the checkpoint: {os_reason(e)}") from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as e:
        raise NfplugError(f"{path}: not a readable checkpoint (truncated or corrupt?): {_first_line(e)}") from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise NfplugError(f"{path}: not an nfplug checkpoint (written by another program?)")
    if payload.get("version") != VERSION:
        raise NfplugError(f"{path}: checkpoint version {payload.get('version')} is not supported (expected {VERSION})")
    bad = first_non_finite(payload.get("field"))
    if bad is not None:
        raise NfplugError(f"{path}: the field's weight '{bad}' holds NaN or inf (written by a diverged training); refusing to load it")
    return payload


def _unpickler_detail(error: BaseException) -> str:
    """What torch's weights-only unpickler objected to (the line after ``WeightsUnpickler error:``),
    without the advice around it; else the error's first line."""
    text = str(error)
    _, found, after = text.partition("WeightsUnpickler error:")
    lines = [line.strip() for line in after.splitlines() if line.strip()] if found else []
    return lines[0] if lines else _first_line(error)


def _blocked_global(detail: str) -> str:
    """`` (it refers to posix.system)`` if torch's error says which global it refused."""
    match = re.search(r"GLOBAL ([\w.]+)", detail)
    return f" (it refers to {match.group(1)})" if match else ""


def latest_checkpoint(run_dir: Path) -> Path:
    found = list_checkpoints(run_dir)
    if not found:
        raise NfplugError(f"{checkpoint_dir(run_dir)}: no checkpoint in this run directory")
    return found[-1]


def resolve_checkpoint(run_dir: Path, checkpoint: Union[str, Path]) -> Path:
    """``--checkpoint PATH``: a path, or a file name inside the run's ``checkpoints/``."""
    path = Path(checkpoint)
    if not path.exists() and (checkpoint_dir(run_dir) / path).exists():
        return checkpoint_dir(run_dir) / path
    if not path.is_file():
        raise NfplugError(f"--checkpoint: {path}: no such checkpoint file")
    return path


def load_run_checkpoint(
    run_dir: Path, map_location: Optional[torch.device] = None, checkpoint: Union[str, Path, None] = None
) -> Tuple[Path, Dict[str, Any]]:
    """-> (path, payload) of ``checkpoint`` if given, else of the run's latest usable checkpoint.

    If the latest is unreadable (truncated, corrupt, NaN weights), the previous good one is
    used with a one-line warning on stderr naming both; the latest's error if none is usable.
    """
    if checkpoint is not None:
        path = resolve_checkpoint(run_dir, checkpoint)
        return path, load_checkpoint(path, map_location)
    found = list_checkpoints(run_dir)
    if not found:
        latest_checkpoint(run_dir)  # raises: no checkpoint
    failed: Optional[Tuple[Path, NfplugError]] = None
    for path in reversed(found):
        try:
            payload = load_checkpoint(path, map_location)
        except NfplugError as e:
            failed = failed or (path, e)
            continue
        if failed is not None:
            bad, error = failed
            reason = str(error).removeprefix(f"{bad}: ")
            print(f"nfplug: warning: {bad} is unusable ({reason}); using the previous checkpoint {path}", file=sys.stderr)
        return path, payload
    assert failed is not None
    raise failed[1]


def set_aside_later(run_dir: Path, path: Path, step: int) -> None:
    """After ``nfplug train --resume`` restored ``path`` (step ``step``): rename the run's
    checkpoints of later steps (an unusable latest, or all after ``--checkpoint``) to
    ``*.pt.set-aside[-N]``, so the continued run does not fork (a later ``--resume`` would
    pick them). Called only once the restore succeeded, so a failed resume moves nothing."""
    later = [p for p in list_checkpoints(run_dir) if int(_NAME.match(p.name).group(1)) > step and p.resolve() != Path(path).resolve()]
    for p in later:
        target, n = p.with_name(p.name + SET_ASIDE), 1
        while target.exists():  # never overwrite one set aside before
            target, n = p.with_name(f"{p.name}{SET_ASIDE}-{n}"), n + 1
        with writing(p, "set it aside"):
            os.replace(p, target)
    if later:
        names = ", ".join(p.name for p in later)
        print(f"nfplug: warning: resuming {run_dir} from step {step} ({Path(path).name}); later checkpoint(s) {names} renamed to *{SET_ASIDE}*", file=sys.stderr)


@contextlib.contextmanager
def restoring(path: Path) -> Iterator[None]:
    """Turn the errors of loading a checkpoint's states into one line naming the checkpoint.

    ``load_state_dict`` raises on missing or mis-shaped entries, e.g. when the run's
    config.json was edited to build a different network than the checkpoint holds.
    """
    try:
        yield
    except (RuntimeError, KeyError, ValueError, TypeError) as e:
        raise NfplugError(f"{path}: does not match the run's config ({type(e).__name__}: {_first_line(e)})") from e


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
