"""The layering rules of docs/DESIGN.md, checked on the source: the engine imports no plugin, and a
plugin imports from nfplug only, never another plugin (what they share lives in nfplug)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _imports(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def test_the_engine_imports_no_plugin():
    offenders = [(str(p.relative_to(REPO)), m) for p in (REPO / "nfplug").rglob("*.py") for m in _imports(p) if m.split(".")[0] == "nfplug_builtins"]
    assert offenders == []


def test_a_builtin_plugin_imports_no_other_plugin():
    offenders = []
    for path in (REPO / "plugins" / "nfplug_builtins").rglob("*.py"):
        own = ".".join(path.relative_to(REPO / "plugins").with_suffix("").parts)
        offenders += [(own, m) for m in _imports(path) if m.startswith("nfplug_builtins") and m != own]
    assert offenders == []


def test_examples_import_only_nfplug_and_themselves():
    for package in (REPO / "examples").iterdir():
        for path in package.glob("nfplug_*/*.py"):
            own = path.parent.name
            assert all(m.split(".")[0] != "nfplug_builtins" for m in _imports(path)), path
            assert all(not m.startswith("nfplug_") or m.split(".")[0] == own for m in _imports(path)), path
