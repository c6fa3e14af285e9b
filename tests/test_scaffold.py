"""`nfplug new-plugin`: each kind's package installs, is listed, and passes its own tests out of the box."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import install_package
from nfplug.scaffold import KINDS, names_for


def _run(args, cwd, env=None):
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)


def test_every_kind_installs_lists_and_passes_its_conformance_test(tmp_path):
    site = tmp_path / "site"
    for kind in KINDS:
        made = _run([sys.executable, "-m", "nfplug.cli", "new-plugin", kind, f"my-{kind}"], tmp_path)
        assert made.returncode == 0, made.stderr
        assert f"next: cd nfplug-my-{kind} && pip install -e . && pytest" in made.stdout
        folder = tmp_path / f"nfplug-my-{kind}"
        names = names_for(kind, f"my-{kind}")
        assert (folder / names["package"] / f"{kind}.py").is_file() and (folder / "tests" / f"test_my_{kind}.py").is_file()
        env = install_package(folder, site)
        tests = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], folder)  # the package's own tests
        assert tests.returncode == 0, tests.stdout[-3000:]
        assert "1 passed" in tests.stdout
    listing = _run([sys.executable, "-m", "nfplug.cli", "plugins"], tmp_path, env)
    assert listing.returncode == 0, listing.stderr
    for kind in KINDS:
        row = next(line for line in listing.stdout.splitlines() if line.startswith(f"my-{kind} "))
        assert row.split()[:4] == [f"my-{kind}", kind, f"nfplug-my-{kind}", "ok"], row


def test_a_broken_edit_fails_the_package_test_with_the_rule(tmp_path):
    assert _run([sys.executable, "-m", "nfplug.cli", "new-plugin", "sampler", "edgy"], tmp_path).returncode == 0
    source = tmp_path / "nfplug-edgy" / "nfplug_edgy" / "sampler.py"
    text = source.read_text()
    assert "torch.ones(pick.shape[0], device=ctx.device)" in text
    source.write_text(text.replace("torch.ones(pick.shape[0], device=ctx.device)", "torch.zeros(pick.shape[0], device=ctx.device)"))
    tests = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], tmp_path / "nfplug-edgy")
    assert tests.returncode == 1
    assert "EdgySampler (scene task, masked): weights positive and finite: step 0: sample()'s weight spans [0, 0]" in tests.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["colour", "x"], "KIND: 'colour' is not a plugin kind (one of field, init, sampler, dataset)"),
        (["sampler", "My Sampler"], "NAME: 'My Sampler' is not a plugin name"),
        (["sampler", "9lives"], "NAME: '9lives' is not a plugin name"),
        (["sampler"], "expected KIND and NAME, got 1 argument(s); usage: nfplug new-plugin KIND NAME [--output DIR]"),
        (["sampler", "x", "--bogus", "1"], "--bogus: unknown option"),
        (["sampler", "x", "--output="], "--output: must not be empty"),
    ],
)
def test_bad_arguments_are_one_line(tmp_path, args, message):
    result = _run([sys.executable, "-m", "nfplug.cli", "new-plugin", *args], tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("nfplug: error: ") and message in result.stderr, result.stderr
    assert not any(tmp_path.iterdir())


def test_an_existing_folder_is_left_alone(tmp_path):
    (tmp_path / "nfplug-taken").mkdir()
    (tmp_path / "nfplug-taken" / "keep.txt").write_text("mine")
    result = _run([sys.executable, "-m", "nfplug.cli", "new-plugin", "field", "taken"], tmp_path)
    assert result.returncode == 2 and "already exists and is not an empty folder" in result.stderr
    assert [p.name for p in (tmp_path / "nfplug-taken").iterdir()] == ["keep.txt"]
