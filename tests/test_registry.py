"""Entry-point discovery with fake entry points (no install needed)."""

from __future__ import annotations

import sys
import textwrap
from importlib import metadata

import pytest

from nfplug import registry
from nfplug.api import Sampler
from nfplug.errors import NfplugError


class FakeDist:
    def __init__(self, name: str) -> None:
        self.name = name


def fake_ep(name: str, value: str, group: str, dist: str = "fake-dist") -> metadata.EntryPoint:
    ep = metadata.EntryPoint(name=name, value=value, group=group)
    # EntryPoint is immutable; dist is how importlib reports the providing package.
    object.__setattr__(ep, "dist", FakeDist(dist))
    return ep


@pytest.fixture
def plugin_module(tmp_path, monkeypatch):
    """A module ``fake_plugins`` with a good sampler, a non-plugin and a failing import."""
    (tmp_path / "fake_plugins.py").write_text(
        textwrap.dedent(
            """
            from nfplug.api import Sampler
            class Good(Sampler):
                description = "a good sampler"
            class NotAPlugin:
                pass
            """
        )
    )
    (tmp_path / "broken_plugin.py").write_text("raise ImportError('needs libfoo')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for mod in ("fake_plugins", "broken_plugin"):
        sys.modules.pop(mod, None)


def use_entry_points(monkeypatch, eps):
    monkeypatch.setattr(registry, "_entry_points", lambda group: [e for e in eps if e.group == group])


def test_discovery_is_lazy_and_loads_on_demand(monkeypatch, plugin_module):
    use_entry_points(monkeypatch, [fake_ep("good", "fake_plugins:Good", "nfplug.samplers")])
    found = registry.discover("samplers")
    assert list(found) == ["good"]
    assert "fake_plugins" not in sys.modules  # listing imported nothing
    cls = registry.get("samplers", "good")
    assert issubclass(cls, Sampler) and cls.description == "a good sampler"


def test_unknown_name_lists_valid_names_and_closest(monkeypatch, plugin_module):
    use_entry_points(monkeypatch, [fake_ep("uniform", "fake_plugins:Good", "nfplug.samplers"), fake_ep("softmine", "fake_plugins:Good", "nfplug.samplers")])
    with pytest.raises(NfplugError) as e:
        registry.get("samplers", "softmin")
    msg = str(e.value)
    assert "--sampler" in msg and "softmine, uniform" in msg and "Did you mean 'softmine'" in msg
    assert "\n" not in msg


def test_duplicate_names_are_a_clear_error(monkeypatch, plugin_module):
    use_entry_points(
        monkeypatch,
        [fake_ep("good", "fake_plugins:Good", "nfplug.samplers", "dist-a"), fake_ep("good", "other:Good", "nfplug.samplers", "dist-b")],
    )
    with pytest.raises(NfplugError, match="two samplers plugins are named 'good'.*dist-a.*dist-b"):
        registry.discover("samplers")


def test_broken_plugin_is_isolated(monkeypatch, plugin_module):
    use_entry_points(
        monkeypatch,
        [fake_ep("good", "fake_plugins:Good", "nfplug.samplers"), fake_ep("broken", "broken_plugin:X", "nfplug.samplers", "broken-dist")],
    )
    with pytest.warns(UserWarning, match="'broken' from distribution 'broken-dist' failed to load"):
        statuses = registry.load_all("samplers")
    by_name = {s.entry.name: s for s in statuses}
    assert by_name["good"].loaded and not by_name["broken"].loaded
    assert "needs libfoo" in by_name["broken"].error
    assert registry.get("samplers", "good").description == "a good sampler"


def test_wrong_type_is_rejected(monkeypatch, plugin_module):
    use_entry_points(monkeypatch, [fake_ep("bad", "fake_plugins:NotAPlugin", "nfplug.samplers")])
    with pytest.raises(NfplugError, match="not a subclass of nfplug.api.Sampler"):
        registry.get("samplers", "bad")


def test_builtins_are_registered_through_entry_points():
    """The built-ins come from the installed nfplug distribution's entry points."""
    assert {"ngp", "mlp"} <= set(registry.names("fields"))
    assert "uniform" in registry.names("samplers")
    assert "default" in registry.names("inits")
    assert registry.discover("fields")["ngp"].distribution == "nfplug"
