"""CLI parsing on real argv strings (tyro's API changes between versions)."""

from __future__ import annotations

import pytest

from nfplug.cli import main, parse_train_args, split_train_argv
from nfplug.errors import NfplugError


def test_split_plugin_names_and_data_shortcut():
    names, resume, rest = split_train_argv(
        ["--field", "mlp", "--sampler=uniform", "--data", "scenes/lego", "--data.downscale", "4", "--field.hidden-dim", "32"]
    )
    assert names == {"field": "mlp", "sampler": "uniform"}
    assert resume is None
    assert rest == ["--data.path", "scenes/lego", "--data.downscale", "4", "--field.hidden-dim", "32"]


def test_parse_full_command_line():
    config, names, resume = parse_train_args(
        ["--data", "somewhere", "--data.downscale", "4", "--field", "ngp", "--sampler", "uniform", "--init", "default",
         "--max-steps", "3000", "--output", "runs/lego", "--max-time", "60", "--optim.lr", "0.005"]
    )
    assert names == {"field": "ngp", "sampler": "uniform", "init": "default"}
    assert config.data.path == "somewhere" and config.data.downscale == 4
    assert config.max_steps == 3000 and config.max_time == 60.0 and config.output == "runs/lego"
    assert config.optim.lr == 0.005 and resume is None
    assert type(config.field).__name__.endswith("Config")


@pytest.mark.parametrize(
    "data, extra, sampler",
    [
        (None, [], "uniform"),  # the demo scene: a quick start, where uniform measured faster
        ("blender", [], "softmine"),
        ("nerfstudio", [], "uniform"),  # a capture
        ("llff", [], "uniform"),
        ("missing", [], "uniform"),  # unreadable: training reports it
        ("photo.PNG", [], "uniform"),
        ("blender", ["--data.task", "image"], "uniform"),
        ("photo.png", ["--sampler", "int"], "int"),
        ("blender", ["--sampler=uniform"], "uniform"),
    ],
)
def test_the_default_sampler_follows_the_data(tmp_path, data, extra, sampler):
    """Object scenes train with softmine unless told otherwise; captures, the demo and images with
    uniform (README, "Which sampler by default")."""
    from test_data import _make_scene
    from test_datasets import make_llff, make_nerfstudio

    argv = list(extra)
    if data is not None:
        root = tmp_path / data
        {"blender": _make_scene, "nerfstudio": make_nerfstudio, "llff": make_llff}.get(data, lambda _: None)(root)
        argv = ["--data", str(root), *argv]
    _, names, _ = parse_train_args(argv)
    assert names == {"field": "ngp", "init": "default", "sampler": sampler}


def test_plugin_option_reaches_plugin_config():
    from nfplug import registry

    field_cls = registry.get("fields", "ngp")
    defaults = field_cls.Config()
    ints = [name for name in field_cls.Config.__dataclass_fields__ if type(getattr(defaults, name)) is int]
    assert ints, "ngp has integer options"
    option, default = ints[0], getattr(defaults, ints[0])
    config, _, _ = parse_train_args(["--field", "ngp", f"--field.{option.replace('_', '-')}", str(default * 2)])
    assert getattr(config.field, option) == default * 2


def test_unknown_plugin_names_valid_ones():
    with pytest.raises(NfplugError) as e:
        parse_train_args(["--field", "ngpp"])
    assert "--field: unknown field 'ngpp'" in str(e.value) and "Did you mean 'ngp'" in str(e.value)


def test_invalid_option_values_are_one_line_errors(capsys):
    assert main(["train", "--max-steps", "0"]) == 2
    assert capsys.readouterr().err.strip() == "nfplug: error: --max-steps: must be at least 1"
    assert main(["train", "--optim.min-lr", "-1e-6"]) == 2
    assert capsys.readouterr().err.strip() == "nfplug: error: --optim.min-lr: must be at least 0"
    assert main(["train", "--field"]) == 2
    assert "--field: expects a value" in capsys.readouterr().err


def test_help_lists_plugin_names_and_plugin_options(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--field NAME" in out and "mlp, ngp" in out and "--sampler NAME" in out and "--init NAME" in out
    with pytest.raises(SystemExit):
        main(["train", "--field", "ngp", "--help"])
    out = capsys.readouterr().out
    assert "--field." in out and "hash" in out.lower()


def test_unknown_command_and_plugins_listing(capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    for name in ("ngp", "mlp", "uniform", "default"):
        assert any(line.startswith(name + " ") and " ok " in line for line in out.splitlines()), name


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--data.downscale", "x"], "--data.downscale"),
        (["--bogus-flag", "3"], "--bogus-flag"),
        (["--data.background", "pink"], "'pink'"),
    ],
)
def test_tyro_parse_errors_become_one_line(argv, expected, capsys):
    assert main(["train", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("nfplug: error:") and expected in err and "\n" not in err and "╭" not in err
