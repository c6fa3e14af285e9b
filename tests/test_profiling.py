"""`nfplug train --profile`: exclusive time per stage, hand-checked with a fake clock, and end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nfplug import profiling
from nfplug.cli import main
from nfplug.profiling import StepProfile, section


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(profiling.time, "perf_counter", fake)
    return fake


def test_nested_sections_are_charged_their_exclusive_time(clock: FakeClock) -> None:
    """Step 0..10: march 1..8 holding field 2..5; loss 8..9; 1 s outside any section."""
    profile = StepProfile()
    with profiling.profiling(profile):
        clock.now = 1.0
        with section("march"):
            clock.now = 2.0
            with section("field"):
                clock.now = 5.0
            clock.now = 8.0
        with section("loss"):
            clock.now = 9.0
        clock.now = 10.0
    assert profile.seconds == {"march": 4.0, "field": 3.0, "loss": 1.0}
    assert profile.total == 10.0 and profile.steps == 1
    summary = profile.to_json()
    assert summary["step_ms"] == 10000.0 and summary["other_ms"] == 2000.0
    assert summary["ms_per_step"] == {"march": 4000.0, "field": 3000.0, "loss": 1000.0}


def test_a_whole_section_keeps_its_nested_time_and_steps_add_up(clock: FakeClock) -> None:
    profile = StepProfile()
    for _ in range(2):
        with profiling.profiling(profile):
            with section("grid update", whole=True):
                with section("hash encoding forward"):
                    clock.now += 3.0
                clock.now += 1.0
            with section("hash encoding forward"):
                clock.now += 2.0
    assert profile.seconds == {"grid update": 8.0, "hash encoding forward": 4.0}
    assert profile.steps == 2 and profile.total == 12.0
    lines = profile.table().splitlines()
    assert lines[1].split() == ["grid", "update", "4000.0", "66.7%"]  # slowest first, per step
    assert lines[-1].split()[-2:] == ["6000.0", "100.0%"]


def test_sections_outside_a_profiled_step_record_nothing(clock: FakeClock) -> None:
    profile = StepProfile()
    assert profile.table() == "no profiled steps"
    with profiling.profiling(profile):
        clock.now = 1.0
    with section("march"):  # after the step (an evaluation, say)
        clock.now = 5.0
    with profiling.profiling(None):  # --profile off
        with section("march"):
            clock.now = 9.0
    assert profile.seconds == {} and profile.steps == 1 and profile.total == 1.0


def test_train_profile_prints_the_table_and_writes_profile_json(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    argv = ["train", "--max-steps", "3", "--batch-size", "256", "--render.grid-resolution", "16", "--field.log2-hashmap-size", "12",
            "--eval-every", "0", "--no-progress", "--profile", "--output", str(run)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "time per training step by stage" in printed and "step (3 steps)" in printed
    summary = json.loads((run / "profile.json").read_text())
    assert summary["steps"] == 3
    stages = summary["ms_per_step"]
    for name in ("grid update", "march", "hash encoding forward", "field forward: MLPs", "volume rendering",
                 "backward: hash encoding", "backward: MLPs, rendering", "optimizer"):
        assert stages.get(name, 0.0) > 0.0, f"{name} was not timed: {stages}"
    assert sum(stages.values()) <= summary["step_ms"] * 1.001
    assert main(argv[:-3] + ["--output", str(tmp_path / "plain")]) == 0
    assert not (tmp_path / "plain" / "profile.json").exists()
