"""Training curves: kept in ``history.json`` and drawn to ``curves.png`` in the run folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

from nfplug.training.run import write_json_atomic

HISTORY_FILE = "history.json"
PLOT_FILE = "curves.png"


class History:
    """``train``: ``{step, time, psnr}`` of training batches; ``eval``: held-out ``{step, time, psnr, views}``."""

    def __init__(self) -> None:
        self.train: List[Dict[str, Any]] = []
        self.eval: List[Dict[str, Any]] = []

    @classmethod
    def load(cls, run_dir: Path) -> "History":
        history = cls()
        path = Path(run_dir) / HISTORY_FILE
        if path.is_file():
            values = json.loads(path.read_text())
            history.train, history.eval = values.get("train", []), values.get("eval", [])
        return history

    def truncate(self, step: int) -> None:
        """Forget entries after ``step`` (a resumed run repeats them)."""
        self.train = [r for r in self.train if r["step"] <= step]
        self.eval = [r for r in self.eval if r["step"] <= step]

    def save(self, run_dir: Path) -> None:
        write_json_atomic(Path(run_dir) / HISTORY_FILE, {"train": self.train, "eval": self.eval})
        self.plot(Path(run_dir) / PLOT_FILE)

    def plot(self, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for ax, key, label in ((axes[0], "step", "step"), (axes[1], "time", "training time (s)")):
            if self.train:
                ax.plot([r[key] for r in self.train], [r["psnr"] for r in self.train], lw=0.8, alpha=0.6, label="train batch")
            if self.eval:
                ax.plot([r[key] for r in self.eval], [r["psnr"] for r in self.eval], "o-", label="held-out views")
            ax.set_xlabel(label)
            ax.set_ylabel("PSNR (dB)")
            ax.grid(alpha=0.3)
            ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
