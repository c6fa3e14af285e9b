"""Where a training step's time goes: ``nfplug train --profile``.

The engine marks its stages with :func:`section`; while a step runs under :func:`profiling`, each
section's wall-clock time is added up. Sections nest, and each is charged only its own
(exclusive) time: the field's evaluations inside marching count as the field's, not as marching's,
and the hash encoding's share of a training forward pass counts as the encoding's. A section
opened with ``whole=True`` (the grid update, the density evaluations that marching asks for) keeps
everything inside it. Outside a profiled step, :func:`section` costs one global lookup.

Example::

    >>> profile = StepProfile()
    >>> with profiling(profile):
    ...     with section("march"):
    ...         with section("field forward: MLPs"):
    ...             pass
    >>> sorted(profile.seconds)
    ['field forward: MLPs', 'march']
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional


class StepProfile:
    """Exclusive seconds per section over the profiled steps, and the steps' total time."""

    def __init__(self) -> None:
        self.seconds: Dict[str, float] = {}
        self.total = 0.0
        self.steps = 0
        self._stack: List[List[float]] = []  # [start, seconds spent in nested sections]
        self._whole = 0  # open sections that keep their nested sections' time

    def _enter(self) -> None:
        self._stack.append([time.perf_counter(), 0.0])

    def _exit(self, name: str) -> None:
        start, nested = self._stack.pop()
        spent = time.perf_counter() - start
        self.seconds[name] = self.seconds.get(name, 0.0) + spent - nested
        if self._stack:
            self._stack[-1][1] += spent

    def table(self) -> str:
        """Milliseconds per step and share of the step, one row per section, slowest first."""
        if self.steps == 0 or self.total <= 0:
            return "no profiled steps"
        rows = sorted(self.seconds.items(), key=lambda kv: -kv[1])
        other = self.total - sum(self.seconds.values())
        rows.append(("other (Python, bookkeeping)", other))
        width = max(len(name) for name, _ in rows)
        lines = [f"{'stage':<{width}}  {'ms/step':>8}  {'share':>6}"]
        for name, seconds in rows:
            lines.append(f"{name:<{width}}  {1000 * seconds / self.steps:8.1f}  {100 * seconds / self.total:5.1f}%")
        lines.append(f"{'step (' + str(self.steps) + ' steps)':<{width}}  {1000 * self.total / self.steps:8.1f}  100.0%")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {
            "steps": self.steps,
            "step_ms": 1000 * self.total / max(1, self.steps),
            "ms_per_step": {name: 1000 * s / max(1, self.steps) for name, s in self.seconds.items()},
            "other_ms": 1000 * (self.total - sum(self.seconds.values())) / max(1, self.steps),
        }


_ACTIVE: Optional[StepProfile] = None


@contextmanager
def profiling(profile: Optional[StepProfile]) -> Iterator[None]:
    """Profile one step into ``profile`` (None: do nothing); the step's time goes to its total."""
    global _ACTIVE
    if profile is None:
        yield
        return
    _ACTIVE = profile
    start = time.perf_counter()
    try:
        yield
    finally:
        profile.total += time.perf_counter() - start
        profile.steps += 1
        profile._stack.clear()
        profile._whole = 0
        _ACTIVE = None


@contextmanager
def section(name: str, whole: bool = False) -> Iterator[None]:
    """Charge the block's exclusive time to ``name`` when a step is being profiled; with ``whole``,
    its nested sections' time too."""
    profile = _ACTIVE
    if profile is None or profile._whole:
        yield
        return
    profile._enter()
    profile._whole += whole
    try:
        yield
    finally:
        profile._whole -= whole
        profile._exit(name)
