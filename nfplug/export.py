"""Streaming export: a trained field as ordered chunks, one per part, plus a small manifest.

``nfplug export RUN --format stream`` writes::

    OUT/manifest.json      format, the run's config, the field context, the scene's frame
                           (``scene``: pose normalisation, box, near, far of a scene run),
                           one entry per chunk
    OUT/part-01.pt         part 1's parameters (+ buffers and the task state, e.g. the
    OUT/part-02.pt         occupancy grid of a scene), then each further part's parameters
    ...

A reader holding the manifest and the first k chunks rebuilds the field decoded from its
first k parts (:func:`load_stream`), equal to ``nfplug render/eval RUN --parts k``; chunks
after k are never opened. Chunks carry their size and SHA-256 in the manifest, so a truncated
download is reported, not decoded.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch

from nfplug.api import FieldContext, decoding, field_n_parts, field_parameter_parts
from nfplug.config import from_json_dict, to_json_dict
from nfplug.errors import NfplugError
from nfplug.training.run import LoadedRun, config_type, plugin_classes, read_json, write_json_atomic
from nfplug.training.rundir import check_writable, write_bytes_atomic

MANIFEST = "manifest.json"
FORMAT = "nfplug-stream"
VERSION = 1


def export_stream(run: LoadedRun, out: Path) -> Path:
    """Write ``run``'s field as per-part chunks and a manifest into ``out``; -> manifest path."""
    field = run.field
    check_writable(out)  # creates it; one line if it cannot be written, before any work
    parts = field_parameter_parts(field)
    state = field.state_dict()
    chunks = []
    for k in range(1, field_n_parts(field) + 1):
        tensors = {name: value for name, value in state.items() if parts.get(name, 1) == k}
        payload: Dict[str, Any] = {"part": k, "tensors": tensors}
        if k == 1:
            payload["task"] = run.task.state_dict()
        data = _serialize(payload)
        name = f"part-{k:02d}.pt"
        write_bytes_atomic(out / name, data)
        params = sum(v.numel() for n, v in tensors.items() if n in parts)
        chunks.append({"part": k, "file": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "params": params})
    ctx = field.context
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "step": run.step,
        "config": to_json_dict(run.config, run.names),
        "context": {"task": ctx.task, "aabb": list(ctx.aabb), "out_channels": ctx.out_channels,
                    "resolution": list(ctx.resolution) if ctx.resolution else None, "pixel_size": ctx.pixel_size},
        "n_parts": field_n_parts(field),
        "chunks": chunks,
    }
    if hasattr(run.task, "setup"):  # the field lives in the canonical frame; this maps the capture's world into it
        manifest["scene"] = run.task.setup()
    path = out / MANIFEST
    write_json_atomic(path, manifest)  # last: a manifest always names complete chunks
    return path


def read_manifest(folder: Path) -> Dict[str, Any]:
    path = Path(folder) / MANIFEST
    manifest = read_json(path, f"{folder} is not an nfplug stream export")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise NfplugError(f"{path}: not an {FORMAT} manifest")
    if manifest.get("version") != VERSION:
        raise NfplugError(f"{path}: stream format version {manifest.get('version')} is not supported (this nfplug reads {VERSION})")
    return manifest


def load_stream(folder: Path, k: Optional[int] = None, device: str = "cpu") -> Tuple[Any, Dict[str, Any]]:
    """Rebuild the field decoded from its first ``k`` parts (default: every chunk present in
    order) from a stream export, reading only chunks ``1..k``; -> (the field decoding ``k`` parts,
    :func:`nfplug.api.decoding`, and the task state)."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    n = int(manifest["n_parts"])
    if k is None:
        k = 0
        while k < n and (folder / manifest["chunks"][k]["file"]).is_file():
            k += 1
    if not 1 <= k <= n:
        raise NfplugError(f"{folder}: cannot decode {k} parts (the stream has {n}, and part 1 is needed)")
    names = {slot: str(name) for slot, name in manifest["config"]["plugins"].items()}
    classes = plugin_classes(names)
    config = from_json_dict(config_type(names, classes), manifest["config"])
    c = manifest["context"]
    resolution = tuple(c["resolution"]) if c["resolution"] else None
    context = FieldContext(c["task"], tuple(c["aabb"]), int(c["out_channels"]), resolution, pixel_size=c.get("pixel_size"))
    field = classes["field"](config.field, context)
    state: Dict[str, torch.Tensor] = {}
    task_state: Dict[str, Any] = {}
    for chunk in manifest["chunks"][:k]:
        payload = _read_chunk(folder, chunk)
        state.update(payload["tensors"])
        task_state = payload.get("task", task_state)
    missing, unexpected = field.load_state_dict(state, strict=False)
    parts = field_parameter_parts(field)
    if unexpected or any(parts.get(name, 1) <= k for name in missing):
        raise NfplugError(f"{folder}: the chunks do not match the {names['field']} field of the manifest")
    return decoding(field.to(device).eval(), k), task_state


def _read_chunk(folder: Path, chunk: Dict[str, Any]) -> Dict[str, Any]:
    path = folder / chunk["file"]
    if not path.is_file():
        raise NfplugError(f"{path}: missing (chunk {chunk['part']} of the stream)")
    data = path.read_bytes()
    if len(data) != chunk["bytes"] or hashlib.sha256(data).hexdigest() != chunk["sha256"]:
        raise NfplugError(f"{path}: incomplete or corrupted ({len(data)} bytes, manifest says {chunk['bytes']})")
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _serialize(payload: Dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()

