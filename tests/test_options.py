"""Option validation: every engine and built-in plugin option is checked where it is parsed
(the command line, a run's config.json), plugin Configs validate themselves through
``validate()``, and hand-edited run files give one-line errors naming the file and key."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List

import pytest

import nfplug.config
from conftest import smooth_image, write_png
from nfplug import registry
from nfplug.api import Sampler, check, require_range
from nfplug.cli import main, parse_train_args
from nfplug.config import (
    MEMORY_FALLBACK,
    PLUGIN_KINDS,
    TrainBase,
    from_json_dict,
    machine_memory,
    require_choice,
    validate_options,
)
from nfplug.errors import NfplugError
from nfplug.training.run import config_from_run

GB = 10**9


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad option must be refused before training: fail fast if it ever gets that far."""
    import nfplug.training.trainer

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the options were accepted and training started")

    monkeypatch.setattr(nfplug.training.trainer, "train", refuse)
    # The memory estimates compare with the machine's memory: make them the same everywhere.
    monkeypatch.setattr(nfplug.config, "machine_memory", lambda: 24 * GB)


def one_error_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("nfplug: error: ") and "Traceback" not in err, err
    return lines[0][len("nfplug: error: ") :]


# (argv, the option the message must start with, and a further piece the message must hold)
BAD_OPTIONS = [
    # the engine: TrainBase
    (["--max-steps", "0"], "--max-steps", "at least 1"),
    (["--max-time", "0"], "--max-time", "positive"),
    (["--max-time", "inf"], "--max-time", "finite"),
    (["--batch-size", "-1"], "--batch-size", "0 for full batch"),
    (["--eval-every", "-1"], "--eval-every", "at least 0"),
    (["--eval-views", "0"], "--eval-views", "at least 1"),
    (["--eval-at-seconds", "10", "nan"], "--eval-at-seconds", "finite"),
    (["--eval-at-seconds", "-5"], "--eval-at-seconds", "at least 0"),
    (["--checkpoint-every", "-1"], "--checkpoint-every", "at least 0"),
    (["--seed", "-1"], "--seed", "between 0 and 4294967295"),
    (["--seed", str(2**32)], "--seed", "between 0 and 4294967295"),
    (["--threads", "-2"], "--threads", "at least 0"),
    (["--output", ""], "--output", "empty"),
    # DataConfig
    (["--data.downscale", "0"], "--data.downscale", "at least 1"),
    (["--data.val-split", ""], "--data.val-split", "empty"),
    # RenderConfig
    (["--render.grid-resolution", "0"], "--render.grid-resolution", "between 1 and 1290"),
    (["--render.grid-resolution", "1000", "--render.grid-levels", "8"], "--render.grid-resolution", "72.0 GB"),
    (["--render.grid-levels", "0"], "--render.grid-levels", "between 1 and 12"),
    (["--render.samples-per-cell", "0"], "--render.samples-per-cell", "positive"),
    (["--render.alpha-thre", "2"], "--render.alpha-thre", "between 0 and 1"),
    (["--render.early-stop-eps", "-0.1"], "--render.early-stop-eps", "between 0 and 1"),
    (["--render.occ-thre", "nan"], "--render.occ-thre", "finite"),
    (["--render.grid-update-every", "0"], "--render.grid-update-every", "at least 1"),
    (["--render.grid-warmup-steps", "-1"], "--render.grid-warmup-steps", "at least 0"),
    (["--render.chunk-rays", "0"], "--render.chunk-rays", "at least 1"),
    # OptimConfig
    (["--optim.lr", "inf"], "--optim.lr", "finite number, got inf"),
    (["--optim.lr", "nan"], "--optim.lr", "finite number, got nan"),
    (["--optim.lr", "0"], "--optim.lr", "positive"),
    (["--optim.eps", "-1"], "--optim.eps", "positive"),
    (["--optim.weight-decay", "-1e-6"], "--optim.weight-decay", "at least 0"),
    (["--optim.warmup-steps", "-1"], "--optim.warmup-steps", "at least 0"),
    (["--optim.decay-milestones", "0.5", "1.5"], "--optim.decay-milestones", "between 0 and 1"),
    (["--optim.decay-gamma", "0"], "--optim.decay-gamma", "in (0, 1]"),
    (["--optim.min-lr", "-inf"], "--optim.min-lr", "finite"),
    # ngp
    (["--field.n-levels", "0"], "--field.n-levels", "between 1 and 128"),
    (["--field.n-features-per-level", "3"], "--field.n-features-per-level", "not one of 1, 2, 4, 8"),
    (["--field.log2-hashmap-size", "-3"], "--field.log2-hashmap-size", "between 1 and 31"),
    (["--field.log2-hashmap-size", "40"], "--field.log2-hashmap-size", "110.8 GB"),
    (["--field.base-resolution", "0"], "--field.base-resolution", "between 1 and"),
    (["--field.max-resolution", "0"], "--field.max-resolution", "between 1 and"),
    (["--field.image-max-resolution", "-4"], "--field.image-max-resolution", "between 1 and"),
    (["--field.hidden-dim", "0"], "--field.hidden-dim", "at least 1"),
    (["--field.geo-feat-dim", "-1"], "--field.geo-feat-dim", "at least 0"),
    # mlp
    (["--field", "mlp", "--field.width", "1"], "--field.width", "at least 2"),
    (["--field", "mlp", "--field.depth", "0"], "--field.depth", "at least 1"),
    (["--field", "mlp", "--field.skip", "-2"], "--field.skip", "at least -1"),
    (["--field", "mlp", "--field.n-frequencies-pos", "-1"], "--field.n-frequencies-pos", "between 0 and 32"),
    (["--field", "mlp", "--field.n-frequencies-dir", "1000"], "--field.n-frequencies-dir", "between 0 and 32"),
    (["--field", "mlp", "--field.image-n-frequencies", "-1"], "--field.image-n-frequencies", "between 0 and 32"),
    # siren
    (["--field", "siren", "--field.hidden-features", "0"], "--field.hidden-features", "at least 1"),
    (["--field", "siren", "--field.hidden-layers", "-1"], "--field.hidden-layers", "at least 0"),
    (["--field", "siren", "--field.omega-0", "0"], "--field.omega-0", "positive"),
    (["--field", "siren", "--field.first-omega-0", "inf"], "--field.first-omega-0", "finite"),
    # asmr
    (["--field", "asmr", "--field.levels", "1"], "--field.levels", "between 2 and 32"),
    (["--field", "asmr", "--field.hidden-features", "0"], "--field.hidden-features", "at least 1"),
    (["--field", "asmr", "--field.omega-0", "-30"], "--field.omega-0", "positive"),
    (["--field", "asmr", "--field.bases-x", "2", "0", "--field.bases-y", "2", "2"], "--field.bases-x", "at least 1"),
    (["--field", "asmr", "--field.bases-x", "2", "2", "--field.bases-y", "4"], "--field.bases-x", "same length"),
    # streamable
    (["--field", "streamable", "--field.widths", "4", "4"], "--field.widths", "increasing"),
    (["--field", "streamable", "--field.steps-per-stage", "-1"], "--field.steps-per-stage", "at least 0"),
    (["--field", "streamable", "--field.hidden-layers", "-1"], "--field.hidden-layers", "at least 0"),
    (["--field", "streamable", "--field.omega-0", "nan"], "--field.omega-0", "finite"),
    (["--field", "streamable", "--field.n-levels", "0"], "--field.n-levels", "between 1 and 128"),
    (["--field", "streamable", "--field.log2-hashmap-size", "40"], "--field.log2-hashmap-size", "GB"),
    (["--field", "streamable", "--field.base-resolution", "4096"], "--field.base-resolution", "at most --field.max-resolution"),
    # inits
    (["--init", "siren", "--init.omega-0", "0"], "--init.omega-0", "positive"),
    (["--init", "weight-scaling", "--init.alpha", "-1"], "--init.alpha", "positive"),
    (["--init", "weight-scaling", "--init.alpha", "nan"], "--init.alpha", "finite"),
    (["--init", "weight-scaling", "--init.omega-0", "0"], "--init.omega-0", "positive"),
    # samplers
    (["--sampler", "softmine", "--sampler.redraw", "sideways"], "--sampler.redraw", "not one of edges, uniform"),
    (["--sampler", "softmine", "--sampler.alpha", "-0.1"], "--sampler.alpha", "at least 0"),
    (["--sampler", "softmine", "--sampler.ramp-steps", "0"], "--sampler.ramp-steps", "at least 1"),
    (["--sampler", "softmine", "--sampler.step-size", "-1"], "--sampler.step-size", "at least 0"),
    (["--sampler", "softmine", "--sampler.noise", "inf"], "--sampler.noise", "finite"),
    (["--sampler", "softmine", "--sampler.low-loss-fraction", "1.5"], "--sampler.low-loss-fraction", "between 0 and 1"),
    (["--sampler", "softmine", "--sampler.uniform-fraction", "-0.1"], "--sampler.uniform-fraction", "between 0 and 1"),
    (["--sampler", "softmine", "--sampler.weight-min", "-1"], "--sampler.weight-min", "at least 0"),
    (["--sampler", "int", "--sampler.ratio", "0"], "--sampler.ratio", "in (0, 1]"),
    (["--sampler", "int", "--sampler.ratio", "1.5"], "--sampler.ratio", "in (0, 1]"),
    (["--sampler", "int", "--sampler.schedule", "sometimes"], "--sampler.schedule", "not one of step, constant"),
    (["--sampler", "int", "--sampler.reselect", "never"], "--sampler.reselect", "not one of incremental, dense"),
    (["--sampler", "int", "--sampler.error-map", "none"], "--sampler.error-map", "not one of auto, full, chunked"),
    (["--sampler", "int", "--sampler.refresh-rays", "-2"], "--sampler.refresh-rays", "at least -1"),
]


@pytest.mark.parametrize("argv, option, detail", BAD_OPTIONS, ids=[" ".join(a) for a, _, _ in BAD_OPTIONS])
def test_bad_option_is_a_one_line_error_naming_it(argv: List[str], option: str, detail: str, capsys, no_training) -> None:
    assert main(["train", *argv, "--no-progress"]) == 2
    message = one_error_line(capsys)
    assert message.startswith(f"{option}: "), message
    assert detail in message, message


def test_hash_table_estimate_names_the_size_and_the_machine(no_training, capsys) -> None:
    assert main(["train", "--field.log2-hashmap-size", "40"]) == 2
    message = one_error_line(capsys)
    # 16 levels up to 2048^3 cells, 2 float32 features: the dense levels make 110.8 GB, x4 to train.
    assert "110.8 GB" in message and "443.4 GB" in message and "24.0 GB" in message, message


def test_machine_memory_falls_back_to_a_fixed_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    assert machine_memory() > 0
    import os

    def unavailable(name: str) -> int:
        raise ValueError(name)

    monkeypatch.setattr(os, "sysconf", unavailable)
    assert machine_memory() == MEMORY_FALLBACK


def test_default_options_of_every_installed_plugin_validate() -> None:
    validate_options(TrainBase())
    for slot, kind in PLUGIN_KINDS.items():
        statuses = [s for s in registry.load_all(kind) if s.loaded]
        assert statuses, kind
        for status in statuses:
            cls = registry.get(kind, status.entry.name)
            validate_options(cls.Config(), f"--{slot}.")
            config, names, _ = parse_train_args([f"--{slot}", status.entry.name])
            assert names[slot] == status.entry.name and getattr(config, slot) == cls.Config()


def test_good_values_at_the_edges_of_their_ranges_pass() -> None:
    config, _, _ = parse_train_args(
        ["--batch-size", "0", "--eval-every", "0", "--checkpoint-every", "0", "--seed", str(2**32 - 1),
         "--optim.decay-milestones", "--optim.decay-gamma", "1", "--optim.warmup-steps", "0",
         "--render.alpha-thre", "1", "--field.geo-feat-dim", "0", "--field.log2-hashmap-size", "19"]
    )
    assert config.optim.decay_milestones == () and config.seed == 2**32 - 1
    parse_train_args(["--sampler", "int", "--sampler.ratio", "1", "--sampler.refresh-rays", "-1"])
    parse_train_args(["--field", "mlp", "--field.skip", "-1", "--field.n-frequencies-dir", "0"])


# ------------------------------------------------------------------- helpers


def test_helpers_messages() -> None:
    with pytest.raises(NfplugError, match=r"^--x: must be at least 1$"):
        require_range(0, "--x", 1)
    with pytest.raises(NfplugError, match=r"^--x: must be positive$"):
        require_range(0.0, "--x", 0, low_open=True)
    with pytest.raises(NfplugError, match=r"^--x: must be in \[0, 1\)$"):
        require_range(1.0, "--x", 0, 1, high_open=True)
    with pytest.raises(NfplugError, match=r"^--x: must be a finite number, got nan$"):
        require_range(math.nan, "--x")
    with pytest.raises(NfplugError, match=r"^--x: must be a number, got True$"):
        require_range(True, "--x", 0)
    with pytest.raises(NfplugError, match=r"^--x: every value must be at least 1, got \(2, 0\)$"):
        require_range((2, 0), "--x", 1)
    with pytest.raises(NfplugError, match=r"^--x: 'c' is not one of a, b$"):
        require_choice("c", "--x", ("a", "b"))
    with pytest.raises(NfplugError, match=r"^--x: broken$"):
        check(False, "--x", "broken")
    require_range(None, "--x", 1)  # an unset optional option
    require_range(10**400, "--x", 1)  # a huge int is finite
    check(True, "--x", "fine")


def test_from_json_dict_checks_types_and_converts() -> None:
    from nfplug_builtins.fields.streamable import StreamableField

    config = from_json_dict(StreamableField.Config, {"widths": [2, 5], "omega_0": 30, "unknown": 1}, "field.")
    assert config.widths == (2, 5) and isinstance(config.omega_0, float)
    assert from_json_dict(StreamableField.Config, {"widths": None}).widths is None
    cases = [
        ({"widths": [2, "a"]}, "field.widths[1]: expected an integer, got 'a'"),
        ({"widths": 3}, "field.widths: expected a list, got 3"),
        ({"mode": "fast"}, "field.mode: expected one of 'progressive', 'slimmable', got 'fast'"),
        ({"omega_0": "30"}, "field.omega_0: expected a number, got '30'"),
        ({"omega_0": True}, "field.omega_0: expected a number, got true"),
        ({"n_levels": 16.0}, "field.n_levels: expected an integer, got 16.0"),
        ({"n_levels": None}, "field.n_levels: expected an integer, got null"),
    ]
    for values, message in cases:
        with pytest.raises(NfplugError) as e:
            from_json_dict(StreamableField.Config, values, "field.")
        assert str(e.value) == message


# ------------------------------------------------------- a third-party plugin


@dataclass(frozen=True)
class PatchConfig:
    patch_size: int = 8
    scale: float = 1.0

    def validate(self) -> None:
        require_range(self.patch_size, "--sampler.patch-size", 1)


class PatchSampler(Sampler):
    Config = PatchConfig
    description = "a third-party sampler with its own validate()"


@pytest.fixture
def patch_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    real_get = registry.get
    monkeypatch.setattr(registry, "get", lambda kind, name: PatchSampler if (kind, name) == ("samplers", "patch") else real_get(kind, name))


def test_third_party_config_validate_is_called_after_parsing(patch_plugin, no_training, capsys) -> None:
    config, names, _ = parse_train_args(["--sampler", "patch", "--sampler.patch-size", "4"])
    assert names["sampler"] == "patch" and config.sampler == PatchConfig(patch_size=4)
    assert main(["train", "--sampler", "patch", "--sampler.patch-size", "0"]) == 2
    assert one_error_line(capsys) == "--sampler.patch-size: must be at least 1"
    # floats are refused when not finite even without a validate() check of their own
    assert main(["train", "--sampler", "patch", "--sampler.scale", "inf"]) == 2
    assert one_error_line(capsys) == "--sampler.scale: must be a finite number, got inf"
    # the engine's validation function directly, and the plugin's base constructor
    with pytest.raises(NfplugError, match="^--sampler.patch-size: must be at least 1$"):
        validate_options(PatchConfig(patch_size=-1), "--sampler.")
    with pytest.raises(NfplugError, match="^--sampler.patch-size: must be at least 1$"):
        PatchSampler(PatchConfig(patch_size=0), None)  # type: ignore[arg-type]


def test_third_party_config_validate_is_called_on_a_run_config(patch_plugin, tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"plugins": {"sampler": "patch"}, "sampler": {"patch_size": 3}}))
    config, _ = config_from_run(tmp_path)
    assert config.sampler == PatchConfig(patch_size=3)
    path.write_text(json.dumps({"plugins": {"sampler": "patch"}, "sampler": {"patch_size": 0}}))
    with pytest.raises(NfplugError) as e:
        config_from_run(tmp_path)
    assert str(e.value) == f"{path}: --sampler.patch-size: must be at least 1"
    path.write_text(json.dumps({"plugins": {"sampler": "patch"}, "sampler": {"patch_size": "big"}}))
    with pytest.raises(NfplugError) as e:
        config_from_run(tmp_path)
    assert str(e.value) == f"{path}: sampler.patch_size: expected an integer, got 'big'"


def test_builtin_plugins_validate_when_built_directly() -> None:
    """The checks moved out of the constructors still guard direct construction (base classes)."""
    from nfplug_builtins.inits.weight_scaling import WeightScalingInit
    from nfplug_builtins.samplers.softmine import SoftMineConfig, SoftMineSampler

    with pytest.raises(NfplugError, match=r"^--sampler\.redraw: 'x' is not one of edges, uniform$"):
        SoftMineSampler(SoftMineConfig(redraw="x"), None)  # type: ignore[arg-type]
    with pytest.raises(NfplugError, match=r"^--init\.alpha: must be positive$"):
        WeightScalingInit(WeightScalingInit.Config(alpha=0.0))


# ------------------------------------------------------------ hand-edited run files


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A real 2-step run on an 8x8 image."""
    root = tmp_path_factory.mktemp("tiny_run")
    png = write_png(root / "tiny.png", smooth_image(8, 8))
    run = root / "run"
    code = main(["train", "--data", str(png), "--max-steps", "2", "--batch-size", "0", "--eval-every", "0",
                 "--output", str(run), "--no-progress"])
    assert code == 0 and (run / "config.json").is_file() and (run / "history.json").is_file()
    return run


def _edited_copy(run: Path, tmp_path: Path, edit: Callable[[Dict[str, Any]], None]) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    values = json.loads((copy / "config.json").read_text())
    edit(values)
    (copy / "config.json").write_text(json.dumps(values))
    return copy


def _set(path: str, value: Any) -> Callable[[Dict[str, Any]], None]:
    def edit(values: Dict[str, Any]) -> None:
        *parents, key = path.split(".")
        for p in parents:
            values = values[p]
        values[key] = value

    return edit


CONFIG_EDITS = [
    ("max_steps", "abc", ["train", "--resume", "RUN", "--no-progress"], "max_steps: expected an integer, got 'abc'"),
    ("field.hidden_dim", "wide", ["eval", "RUN"], "field.hidden_dim: expected an integer, got 'wide'"),
    ("render.chunk_rays", 0, ["eval", "RUN"], "--render.chunk-rays: must be at least 1"),
    ("field.n_levels", 0, ["render", "RUN"], "--field.n-levels: must be between 1 and 128"),
    ("optim.lr", "fast", ["render", "RUN"], "optim.lr: expected a number, got 'fast'"),
    ("optim.lr", math.inf, ["eval", "RUN"], "--optim.lr: must be a finite number, got inf"),
    ("optim.decay_milestones", [0.5, "x"], ["export", "RUN"], "optim.decay_milestones[1]: expected a number, got 'x'"),
    ("data.task", "video", ["export", "RUN"], "data.task: expected one of 'auto', 'scene', 'image', got 'video'"),
    ("data.downscale", True, ["eval", "RUN"], "data.downscale: expected an integer, got true"),
    ("progress", "yes", ["train", "--resume", "RUN"], "progress: expected true or false, got 'yes'"),
    ("seed", 1.5, ["train", "--resume", "RUN"], "seed: expected an integer, got 1.5"),
    ("render", "fast", ["eval", "RUN"], "render: expected an object, got 'fast'"),
    ("plugins.field", "nope", ["eval", "RUN"], "--field: unknown field 'nope'"),
]


@pytest.mark.parametrize("key, value, command, message", CONFIG_EDITS, ids=[f"{c[0]}={c[1]!r}" for c in CONFIG_EDITS])
def test_hand_edited_config_json_is_a_one_line_error_naming_file_and_key(
    tiny_run: Path, tmp_path: Path, key: str, value: Any, command: List[str], message: str, capsys
) -> None:
    run = _edited_copy(tiny_run, tmp_path, _set(key, value))
    assert main([str(run) if a == "RUN" else a for a in command]) == 2
    assert one_error_line(capsys).startswith(f"{run / 'config.json'}: {message}")


def test_config_json_with_compatible_values_still_loads(tiny_run: Path, tmp_path: Path, capsys) -> None:
    def edit(values: Dict[str, Any]) -> None:
        values["render"]["samples_per_cell"] = 2  # an int for a float
        values["optim"]["lr"] = None  # Optional
        values["removed_option"] = 1  # an option since removed
        values["eval_at_seconds"] = []  # a list for a tuple

    run = _edited_copy(tiny_run, tmp_path, edit)
    config, _ = config_from_run(run)
    assert config.render.samples_per_cell == 2.0 and config.optim.lr is None and config.eval_at_seconds == ()
    assert main(["eval", str(run)]) == 0
    assert "PSNR" in capsys.readouterr().out


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected an object with 'train' and 'eval' lists"),
        ('{"train": 3, "eval": []}', "train: expected a list"),
        ('{"train": [{"step": 1, "time": 0.1}], "eval": []}', "train[0]: expected an object with numbers step, time and psnr"),
    ],
)
def test_corrupt_history_json_is_a_one_line_error_naming_it(tiny_run: Path, tmp_path: Path, content: str, message: str, capsys) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "history.json").write_text(content)
    assert main(["train", "--resume", str(run), "--max-steps", "3", "--no-progress"]) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"{run / 'history.json'}: {message}") and "delete it" in line, line
    assert (run / "history.json").read_text() == content  # not overwritten
