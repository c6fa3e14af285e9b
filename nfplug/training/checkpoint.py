"""Checkpoints: written atomically, read with ``torch.load(..., weights_only=True)``.

A checkpoint is a dict of tensors and plain values::

    {"format": "nfplug-checkpoint", "version": 1, "step": int,
     "field": state_dict, "estimator": state_dict | None, "optimizer": state_dict,
     "sampler": dict, "rng": {"torch": ByteTensor, "sampler": ByteTensor}, "extra": dict}

Files are named ``ckpt_<step>.pt`` inside ``<run>/checkpoints``; a new one is first
written to a temporary file in the same folder and then renamed over, so a crash or
Ctrl-C never leaves a half-written checkpoint under a checkpoint's name.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import torch

from nfplug.errors import NfplugError

FORMAT = "nfplug-checkpoint"
VERSION = 1
KEEP_LAST = 3
_NAME = re.compile(r"^ckpt_(\d+)\.pt$")


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: Path) -> List[Path]:
    """Checkpoints of a run, oldest first."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def save_checkpoint(run_dir: Path, state: Dict[str, Any], step: int) -> Path:
    """Atomically write ``ckpt_<step>.pt`` and keep only the last few checkpoints."""
    folder = checkpoint_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"ckpt_{step:07d}.pt"
    payload = {"format": FORMAT, "version": VERSION, "step": step, **state}
    fd, tmp = tempfile.mkstemp(prefix=".ckpt_", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    for old in list_checkpoints(run_dir)[:-KEEP_LAST]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path, map_location: Optional[torch.device] = None) -> Dict[str, Any]:
    """Load and validate a checkpoint; NfplugError (one line) if it is not a usable one."""
    path = Path(path)
    if not path.is_file():
        raise NfplugError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location=map_location or "cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as e:
        raise NfplugError(f"{path}: not a readable checkpoint (truncated or corrupt?): {_first_line(e)}") from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise NfplugError(f"{path}: not an nfplug checkpoint (written by another program?)")
    if payload.get("version") != VERSION:
        raise NfplugError(f"{path}: checkpoint version {payload.get('version')} is not supported (expected {VERSION})")
    return payload


def latest_checkpoint(run_dir: Path) -> Path:
    found = list_checkpoints(run_dir)
    if not found:
        raise NfplugError(f"{checkpoint_dir(run_dir)}: no checkpoint in this run directory")
    return found[-1]


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
