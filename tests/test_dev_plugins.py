"""Development registration (NFPLUG_PLUGINS) and plugin API versions, through the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import TINY_TRAIN
from nfplug import registry
from nfplug.api import API_VERSION
from nfplug.errors import NfplugError

SAMPLER = textwrap.dedent(
    """
    import torch
    from nfplug.api import RayBatch, Sampler

    class EdgeSampler(Sampler):
        description = "pixels from the left half only"
        api_version = {version}

        def sample(self, step, generator):
            c = self.context
            xy = torch.rand(c.batch_size, 2, generator=generator) * torch.tensor([c.width / 2, float(c.height)])
            index = torch.randint(0, c.n_images, (c.batch_size,), generator=generator)
            return RayBatch(index, xy, torch.ones(c.batch_size))
    """
)


def _nfplug(args, cwd, plugins):
    env = dict(os.environ, NFPLUG_PLUGINS=plugins)
    return subprocess.run([sys.executable, "-m", "nfplug.cli", *args], cwd=cwd, env=env, capture_output=True, text=True)


def _row(listing: str, name: str) -> list:
    return next(line for line in listing.splitlines() if line.startswith(name + " ")).split()


def test_a_module_in_the_current_folder_trains_without_installing(tmp_path):
    (tmp_path / "edge_sampler.py").write_text(SAMPLER.format(version=API_VERSION))
    plugins = "samplers:edge=edge_sampler:EdgeSampler"
    listing = _nfplug(["plugins"], tmp_path, plugins)
    assert listing.returncode == 0, listing.stderr
    assert _row(listing.stdout, "edge")[:4] == ["edge", "sampler", "NFPLUG_PLUGINS", "ok"]
    run = tmp_path / "run"
    result = _nfplug(["train", "--sampler", "edge", "--max-steps", "3", "--output", str(run), *TINY_TRAIN, "--threads", "1"], tmp_path, plugins)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((run / "config.json").read_text())["plugins"]["sampler"] == "edge"


def test_a_file_path_and_the_singular_kind_work_too(tmp_path):
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "edge_sampler.py").write_text(SAMPLER.format(version=API_VERSION))
    listing = _nfplug(["plugins"], tmp_path, f"sampler:edge2={folder / 'edge_sampler.py'}:EdgeSampler")
    assert listing.returncode == 0, listing.stderr
    assert _row(listing.stdout, "edge2")[3] == "ok"


@pytest.mark.parametrize(
    "plugins, message",
    [
        ("edge", "NFPLUG_PLUGINS: 'edge' is not KIND:NAME=MODULE:CLASS"),
        ("colours:edge=edge_sampler:EdgeSampler", "with KIND one of fields, inits, samplers, datasets"),
        ("samplers:edge=edge_sampler", "is not KIND:NAME=MODULE:CLASS"),
        ("samplers:uniform=edge_sampler:EdgeSampler", "NFPLUG_PLUGINS: the sampler 'uniform' is already installed"),
        ("samplers:ed ge=edge_sampler:EdgeSampler", "'ed ge' is not a plugin name"),
    ],
)
def test_a_malformed_entry_is_one_line(tmp_path, plugins, message):
    result = _nfplug(["plugins"], tmp_path, plugins)
    assert result.returncode == 2
    assert result.stderr.startswith("nfplug: error: ") and message in result.stderr and result.stderr.count("\n") == 1, result.stderr


def test_a_module_that_does_not_import_is_reported_by_name(tmp_path):
    listing = _nfplug(["plugins"], tmp_path, "samplers:ghost=no_such_module:Ghost")
    assert listing.returncode == 0
    assert _row(listing.stdout, "ghost")[3] == "FAILED"
    assert "'ghost' from distribution 'NFPLUG_PLUGINS' failed to load (no_such_module:Ghost): ModuleNotFoundError" in listing.stderr
    result = _nfplug(["train", "--sampler", "ghost", "--max-steps", "1", *TINY_TRAIN], tmp_path, "samplers:ghost=no_such_module:Ghost")
    assert result.returncode == 2 and "failed to load" in result.stderr


def test_an_api_mismatch_is_shown_by_nfplug_plugins_and_when_training(tmp_path):
    (tmp_path / "old_sampler.py").write_text(SAMPLER.format(version=API_VERSION - 1))
    plugins = "samplers:old=old_sampler:EdgeSampler"
    listing = _nfplug(["plugins"], tmp_path, plugins)
    assert listing.returncode == 0
    assert " ".join(_row(listing.stdout, "old")[3:5]) == "API MISMATCH"
    expected = f"sampler plugin 'old' from 'NFPLUG_PLUGINS': written for nfplug plugin API {API_VERSION - 1}, this nfplug has API {API_VERSION}"
    assert expected in listing.stderr
    assert _row(listing.stdout, "uniform")[3] == "ok"  # the built-ins declare the current version
    result = _nfplug(["train", "--sampler", "old", "--max-steps", "2", "--output", str(tmp_path / "run"), *TINY_TRAIN, "--threads", "1"], tmp_path, plugins)
    assert result.returncode == 0, result.stderr[-1000:]  # a warning, not a refusal
    assert result.stderr.count(expected) == 1


def test_registered_hides_an_installed_plugin_only_inside_the_block():
    from nfplug_builtins.samplers.uniform import UniformSampler

    class Mine(UniformSampler):
        pass

    with registry.registered("samplers", "uniform", Mine):
        assert registry.get("samplers", "uniform") is Mine
        assert registry.discover("samplers")["uniform"].distribution == registry.IN_PROCESS
    assert registry.get("samplers", "uniform") is UniformSampler
    with pytest.raises(ValueError, match="unknown plugin kind"):
        with registry.registered("colours", "x", Mine):
            pass


def test_builtins_declare_the_current_api_version():
    for kind in ("fields", "inits", "samplers", "datasets"):
        for name in registry.names(kind):
            assert registry.get(kind, name).api_version == API_VERSION, (kind, name)


def test_env_entries_parse_several_and_skip_blanks(monkeypatch):
    monkeypatch.setenv("NFPLUG_PLUGINS", " fields:a=pkg.mod:A ; ;init:b=./b.py:B")
    entries = registry.env_entries()
    assert [(e.kind, e.name, e.value) for e in entries] == [("fields", "a", "pkg.mod:A"), ("inits", "b", "./b.py:B")]
    monkeypatch.setenv("NFPLUG_PLUGINS", "fields:a")
    with pytest.raises(NfplugError):
        registry.env_entries()
