"""Plugin discovery through Python entry points.

Discovery is lazy: listing names (for ``--help`` and error messages) reads only the
installed packages' metadata; a plugin's module is imported when it is used. It is
also isolated: a plugin whose import raises is reported once, naming the plugin and
its distribution, and every other plugin keeps working.

Two more sources, for plugin development:

- the environment variable ``NFPLUG_PLUGINS`` (:data:`ENV_VAR`): entries
  ``KIND:NAME=MODULE:CLASS`` separated by ``;``, e.g.
  ``NFPLUG_PLUGINS="samplers:my-sampler=my_sampler:MySampler"``. ``MODULE`` is a module
  importable from the current folder or ``PYTHONPATH``, or a ``.py`` file's path
  (``./my_sampler.py:MySampler``). Nothing needs installing, so a researcher can iterate on
  one file. Their distribution is shown as ``NFPLUG_PLUGINS``.
- :func:`registered`: a class registered for the duration of a ``with`` block, in this process
  (what :mod:`nfplug.testing` uses to train a plugin that is not installed).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import importlib
import importlib.util
import os
import re
import sys
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional

from nfplug.api import API_VERSION, PLUGIN_BASES
from nfplug.errors import NfplugError

GROUPS = {kind: f"nfplug.{kind}" for kind in PLUGIN_BASES}
KIND_SINGULAR = {"fields": "field", "inits": "init", "samplers": "sampler", "datasets": "dataset"}
ENV_VAR = "NFPLUG_PLUGINS"
ENV_DISTRIBUTION = ENV_VAR  # the distribution column of plugins registered through it
IN_PROCESS = "(registered in this process)"
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class PluginEntry:
    """One registered plugin, before it is imported."""

    kind: str  # "fields" | "inits" | "samplers" | "datasets"
    name: str
    value: str  # "module:Class" (or "path/to/file.py:Class" from NFPLUG_PLUGINS)
    distribution: str
    obj: Optional[type] = None  # the class itself, for :func:`registered`

    def load(self) -> type:
        """Import the plugin class; raises NfplugError naming the plugin if that fails."""
        try:
            obj = self.obj if self.obj is not None else _load_value(self.value, self.distribution == ENV_DISTRIBUTION)
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


def api_mismatch(cls: type) -> Optional[str]:
    """A one-line message if ``cls`` declares an ``api_version`` other than this nfplug's
    :data:`~nfplug.api.API_VERSION`, else None (also when it declares none)."""
    declared = getattr(cls, "api_version", None)
    if declared is None or declared == API_VERSION:
        return None
    return (
        f"written for nfplug plugin API {declared}, this nfplug has API {API_VERSION} "
        f"(docs/DESIGN.md, 'API versions', lists what changed)"
    )


def _load_value(value: str, development: bool = False) -> object:
    module_name, _, attr = value.rpartition(":") if value.count(":") > 1 else value.partition(":")
    module_name = module_name.strip()
    if development and (module_name.endswith(".py") or os.sep in module_name or "/" in module_name):
        obj: object = _import_file(Path(module_name).expanduser())
    else:
        if development and os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.append(os.getcwd())  # a module next to the user, as `python -m` would find it
        obj = importlib.import_module(module_name)
    for part in attr.strip().split(".") if attr else []:
        obj = getattr(obj, part)
    return obj


def _import_file(path: Path) -> object:
    """Import a ``.py`` file as a module named after it (once per process)."""
    path = path.resolve()
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    name = f"nfplug_dev_{re.sub(r'[^0-9A-Za-z_]', '_', path.stem)}"
    module = sys.modules.get(name)
    if module is not None and getattr(module, "__file__", None) == str(path):
        return module
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _kind_of(text: str) -> Optional[str]:
    text = text.strip()
    for kind, singular in KIND_SINGULAR.items():
        if text in (kind, singular):
            return kind
    return None


def env_entries() -> List[PluginEntry]:
    """The plugins :data:`ENV_VAR` registers; a malformed entry is a one-line NfplugError."""
    text = os.environ.get(ENV_VAR, "")
    entries = []
    example = "e.g. samplers:my-sampler=my_sampler:MySampler"
    for item in filter(None, (part.strip() for part in text.split(";"))):
        head, eq, value = item.partition("=")
        kind_text, colon, name = head.partition(":")
        kind, name, value = _kind_of(kind_text), name.strip(), value.strip()
        if not (eq and colon and kind and name and ":" in value):
            raise NfplugError(f"{ENV_VAR}: '{item}' is not KIND:NAME=MODULE:CLASS with KIND one of {', '.join(GROUPS)} ({example})")
        if not NAME_PATTERN.fullmatch(name):
            raise NfplugError(f"{ENV_VAR}: '{name}' is not a plugin name (letters, digits, '-', '_', '.')")
        entries.append(PluginEntry(kind=kind, name=name, value=value, distribution=ENV_DISTRIBUTION))
    return entries


_REGISTERED: Dict[str, Dict[str, PluginEntry]] = {kind: {} for kind in GROUPS}


@contextlib.contextmanager
def registered(kind: str, name: str, cls: type) -> Iterator[None]:
    """Register ``cls`` as the ``kind`` plugin ``name`` in this process inside the block (an
    installed plugin of the same name is hidden meanwhile)."""
    kind = _kind_of(kind) or kind
    if kind not in GROUPS:
        raise ValueError(f"unknown plugin kind {kind!r} (one of {', '.join(GROUPS)})")
    previous = _REGISTERED[kind].get(name)
    value = f"{cls.__module__}:{cls.__qualname__}"
    _REGISTERED[kind][name] = PluginEntry(kind=kind, name=name, value=value, distribution=IN_PROCESS, obj=cls)
    try:
        yield
    finally:
        if previous is None:
            _REGISTERED[kind].pop(name, None)
        else:
            _REGISTERED[kind][name] = previous


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
    for entry in env_entries():
        if entry.kind != kind:
            continue
        if entry.name in found:
            other = found[entry.name]
            raise NfplugError(
                f"{ENV_VAR}: the {KIND_SINGULAR[kind]} '{entry.name}' is already installed (from "
                f"'{other.distribution}', {other.value}); give yours another name"
            )
        found[entry.name] = entry
    found.update(_REGISTERED[kind])
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
    cls = plugins[name].load()
    mismatch = api_mismatch(cls)
    if mismatch and cls not in _WARNED:
        _WARNED.add(cls)
        print(f"nfplug: warning: {KIND_SINGULAR[kind]} plugin '{name}' from '{plugins[name].distribution}': {mismatch}", file=sys.stderr)
    return cls


_WARNED: set = set()


@dataclass(frozen=True)
class PluginStatus:
    entry: PluginEntry
    loaded: bool
    description: str
    error: Optional[str] = None
    api_warning: Optional[str] = None  # :func:`api_mismatch`


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
        mismatch = api_mismatch(cls)
        warning = f"{KIND_SINGULAR[kind]} plugin '{entry.name}' from '{entry.distribution}': {mismatch}" if mismatch else None
        statuses.append(PluginStatus(entry, True, getattr(cls, "description", "") or "", api_warning=warning))
    return statuses
