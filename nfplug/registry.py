"""Plugin discovery through Python entry points.

Discovery is lazy: listing names (for ``--help`` and error messages) reads only the
installed packages' metadata; a plugin's module is imported when it is used. It is
also isolated: a plugin whose import raises is reported once, naming the plugin and
its distribution, and every other plugin keeps working.
"""

from __future__ import annotations

import dataclasses
import difflib
import warnings
from dataclasses import dataclass
from importlib import metadata
from typing import Dict, Iterable, List, Optional

from nfplug.api import PLUGIN_BASES
from nfplug.errors import NfplugError

GROUPS = {kind: f"nfplug.{kind}" for kind in PLUGIN_BASES}
KIND_SINGULAR = {"fields": "field", "inits": "init", "samplers": "sampler", "datasets": "dataset"}


@dataclass(frozen=True)
class PluginEntry:
    """One registered plugin, before it is imported."""

    kind: str  # "fields" | "inits" | "samplers" | "datasets"
    name: str
    value: str  # "module:Class"
    distribution: str

    def load(self) -> type:
        """Import the plugin class; raises NfplugError naming the plugin if that fails."""
        try:
            obj = _load_value(self.value)
        except Exception as e:  # noqa: BLE001 - any import failure is the plugin's, not ours
            raise NfplugError(
                f"{KIND_SINGULAR[self.kind]} plugin '{self.name}' from distribution "
                f"'{self.distribution}' failed to load ({self.value}): {type(e).__name__}: {e}"
            ) from e
        base = PLUGIN_BASES[self.kind]
        if not (isinstance(obj, type) and issubclass(obj, base)):
            raise NfplugError(
                f"{KIND_SINGULAR[self.kind]} plugin '{self.name}' from distribution "
                f"'{self.distribution}' points at {self.value}, which is not a subclass of "
                f"nfplug.api.{base.__name__}"
            )
        if not dataclasses.is_dataclass(obj.Config):
            raise NfplugError(
                f"{KIND_SINGULAR[self.kind]} plugin '{self.name}': {self.value}.Config must be a dataclass"
            )
        return obj


def _load_value(value: str) -> object:
    import importlib

    module_name, _, attr = value.partition(":")
    obj: object = importlib.import_module(module_name.strip())
    for part in attr.strip().split(".") if attr else []:
        obj = getattr(obj, part)
    return obj


def _entry_points(group: str) -> Iterable[metadata.EntryPoint]:
    return metadata.entry_points(group=group)


def discover(kind: str) -> Dict[str, PluginEntry]:
    """Every registered plugin of one kind, by name, without importing any of them.

    Raises NfplugError if two distributions register the same name.
    """
    found: Dict[str, PluginEntry] = {}
    seen_values = set()
    for ep in _entry_points(GROUPS[kind]):
        dist = ep.dist.name if getattr(ep, "dist", None) is not None else "unknown"
        entry = PluginEntry(kind=kind, name=ep.name, value=ep.value, distribution=dist)
        # An editable install can expose the same distribution twice; that is not a clash.
        if (entry.name, entry.value, entry.distribution) in seen_values:
            continue
        seen_values.add((entry.name, entry.value, entry.distribution))
        if ep.name in found:
            other = found[ep.name]
            raise NfplugError(
                f"two {kind} plugins are named '{ep.name}': {other.value} (from "
                f"'{other.distribution}') and {ep.value} (from '{dist}'); uninstall one of them"
            )
        found[ep.name] = entry
    return dict(sorted(found.items()))


def names(kind: str) -> List[str]:
    return list(discover(kind))


def unknown_name_message(kind: str, name: str, valid: List[str]) -> str:
    option = "--data.format" if kind == "datasets" else f"--{KIND_SINGULAR[kind]}"
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    what = "dataset format" if kind == "datasets" else KIND_SINGULAR[kind]
    return f"{option}: unknown {what} '{name}'. Valid names: {', '.join(valid) or '(none installed)'}.{hint}"


def get(kind: str, name: str) -> type:
    """Load one plugin class by name; NfplugError lists valid names and the closest match."""
    plugins = discover(kind)
    if name not in plugins:
        raise NfplugError(unknown_name_message(kind, name, list(plugins)))
    return plugins[name].load()


@dataclass(frozen=True)
class PluginStatus:
    entry: PluginEntry
    loaded: bool
    description: str
    error: Optional[str] = None


def load_all(kind: str) -> List[PluginStatus]:
    """Try to load every plugin of a kind; failures become warnings, not exceptions."""
    statuses = []
    for entry in discover(kind).values():
        try:
            cls = entry.load()
        except NfplugError as e:
            warnings.warn(str(e), stacklevel=2)
            statuses.append(PluginStatus(entry, False, "", str(e)))
            continue
        statuses.append(PluginStatus(entry, True, getattr(cls, "description", "") or ""))
    return statuses
