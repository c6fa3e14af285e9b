"""A run: its resolved config (plugins plus options), its folder, and rebuilding it.

Shared by ``nfplug train`` (new and ``--resume``), ``nfplug eval`` and ``nfplug render``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
import tyro
from typing_extensions import Annotated

from nfplug import registry
from nfplug.api import Field
from nfplug.config import DEFAULT_PLUGINS, PLUGIN_KINDS, PLUGIN_SLOTS, TrainBase, from_json_dict, to_json_dict, validate_options
from nfplug.errors import NfplugError
from nfplug.training.checkpoint import load_run_checkpoint, restoring
from nfplug.training.rundir import atomic_file, os_reason

CONFIG_FILE = "config.json"


def plugin_classes(names: Dict[str, str]) -> Dict[str, type]:
    """Load the chosen plugin classes, slot -> class (only these are imported)."""
    return {slot: registry.get(PLUGIN_KINDS[slot], names[slot]) for slot in PLUGIN_SLOTS}


def config_type(names: Dict[str, str], classes: Dict[str, type]) -> type:
    """``TrainBase`` plus one nested dataclass per plugin slot (``--field.OPTION``, ...)."""
    extra = []
    for slot in PLUGIN_SLOTS:
        cls = classes[slot].Config
        help_text = f"Options of the {slot} '{names[slot]}' (choose another with --{slot} NAME)."
        extra.append((slot, Annotated[cls, tyro.conf.arg(help=help_text)], dataclasses.field(default_factory=cls)))
    return dataclasses.make_dataclass("TrainConfig", extra, bases=(TrainBase,), frozen=True)


def select_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as e:
        raise NfplugError(f"--device: '{spec}' is not a device (use cpu, cuda, cuda:N or auto)") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise NfplugError(f"--device: '{spec}' requested but CUDA is not available on this machine")
    return device


def write_json_atomic(path: Path, values: Any) -> None:
    """Write JSON atomically (mode 0666 minus the umask); a one-line NfplugError naming
    ``path`` if it cannot be written (read-only, permission denied, disk full)."""
    with atomic_file(Path(path), "w") as f:
        json.dump(values, f, indent=2)
        f.write("\n")


def save_run_config(run_dir: Path, config: Any, names: Dict[str, str]) -> None:
    """Write ``config.json``; ``data.path`` is stored absolute, so the run works from any folder."""
    values = to_json_dict(config, names)
    data = values.get("data")
    if isinstance(data, dict) and isinstance(data.get("path"), str) and data["path"] != "demo":
        data["path"] = os.path.abspath(os.path.expanduser(data["path"]))
    write_json_atomic(run_dir / CONFIG_FILE, values)


def read_json(path: Path, missing: str) -> Any:
    """A JSON file's content; a one-line NfplugError naming it if it is absent (``missing``
    says what that means) or not valid JSON."""
    if not path.is_file():
        raise NfplugError(f"{path}: missing; {missing}")
    try:
        return json.loads(path.read_text())
    except OSError as e:
        raise NfplugError(f"{path}: cannot read it: {os_reason(e)}") from e
    except json.JSONDecodeError as e:
        raise NfplugError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from e


def read_run_config(run_dir: Path) -> Tuple[Dict[str, str], Dict[str, Any]]:
    """-> (plugin names, raw option values) of a run directory."""
    path = Path(run_dir) / CONFIG_FILE
    if not Path(run_dir).is_dir():
        raise NfplugError(f"{run_dir}: no such run directory")
    values = read_json(path, f"{run_dir} is not an nfplug run directory")
    if not isinstance(values, dict) or not isinstance(values.get("plugins"), dict):
        raise NfplugError(f"{path}: not an nfplug run config (no 'plugins' entry)")
    names = {slot: str(values["plugins"].get(slot, DEFAULT_PLUGINS[slot])) for slot in PLUGIN_SLOTS}
    return names, values


def config_from_run(run_dir: Path) -> Tuple[Any, Dict[str, str]]:
    """-> (config, plugin names) of a run, its values type-checked and validated as on the
    command line; any problem is one line naming ``RUN/config.json``."""
    names, values = read_run_config(run_dir)
    path = Path(run_dir) / CONFIG_FILE
    try:
        config = from_json_dict(config_type(names, plugin_classes(names)), values)
        validate_options(config)
    except NfplugError as e:
        raise NfplugError(f"{path}: {e}") from None
    except (TypeError, ValueError) as e:
        raise NfplugError(f"{path}: invalid option values: {e}") from e
    return config, names


def build_field(config: Any, names: Dict[str, str], classes: Dict[str, type], context: Any, device: torch.device, generator: torch.Generator) -> Field:
    """Build the field, check it supports the task, and apply the init plugin."""
    field_cls = classes["field"]
    if context.task not in field_cls.tasks:
        raise NfplugError(
            f"--field: '{names['field']}' does not support the {context.task} task "
            f"(it supports: {', '.join(field_cls.tasks)})"
        )
    try:
        field = field_cls(config.field, context)
    except (MemoryError, RuntimeError) as e:  # a size no validate() estimates, e.g. a huge layer width
        if not isinstance(e, MemoryError) and "allocate" not in str(e) and "out of memory" not in str(e):
            raise
        raise NfplugError(f"--field: not enough memory to build the '{names['field']}' field with these options") from None
    classes["init"](config.init).apply(field, generator)
    return field.to(device)


@dataclass
class LoadedRun:
    run_dir: Path
    config: Any
    names: Dict[str, str]
    task: Any
    field: Field
    step: int


def load_run(run_dir: Path, device_spec: str = "auto", checkpoint: Optional[str] = None) -> LoadedRun:
    """Rebuild a trained run from its config and last usable checkpoint, or ``checkpoint``
    (for eval, render and export)."""
    from nfplug.training.tasks import build_task

    run_dir = Path(run_dir)
    config, names = config_from_run(run_dir)
    device = select_device(device_spec)
    path, ckpt = load_run_checkpoint(run_dir, device, checkpoint)
    classes = plugin_classes(names)
    task = build_task(config, device, load_train=False, run_dir=run_dir)
    field = build_field(config, names, classes, task.field_context(), device, torch.Generator().manual_seed(0))
    with restoring(path):
        field.load_state_dict(ckpt["field"])
        task.load_state_dict(ckpt["task"])
    field.eval()
    return LoadedRun(run_dir, config, names, task, field, int(ckpt["step"]))
