"""Training curves: kept in ``history.json`` and drawn to ``curves.png`` in the run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

from nfplug.errors import NfplugError
from nfplug.training.rundir import atomic_file
from nfplug.training.run import read_json, write_json_atomic

HISTORY_FILE = "history.json"
PLOT_FILE = "curves.png"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class History:
    """``train``: ``{step, time, psnr}`` of training batches; ``eval``: held-out ``{step, time, psnr, views}``."""

    def __init__(self) -> None:
        self.train: List[Dict[str, Any]] = []
        self.eval: List[Dict[str, Any]] = []

    @classmethod
    def load(cls, run_dir: Path) -> "History":
        """The run's history (empty if it has none yet). A corrupt ``history.json`` is a one-line
        NfplugError naming it rather than a fresh history, which would overwrite the curves so
        far at the next save: the user repairs it, or deletes it to start the curves afresh."""
        history = cls()
        path = Path(run_dir) / HISTORY_FILE
        if not path.is_file():
            return history
        hint = "repair it, or delete it to start the training curves afresh"
        try:
            values = read_json(path, "")
        except NfplugError as e:
            raise NfplugError(f"{e}; {hint}") from None
        if not isinstance(values, dict):
            raise NfplugError(f"{path}: expected an object with 'train' and 'eval' lists; {hint}")
        for key in ("train", "eval"):
            rows = values.get(key, [])
            if not isinstance(rows, list):
                raise NfplugError(f"{path}: {key}: expected a list; {hint}")
            for i, row in enumerate(rows):
                if not (isinstance(row, dict) and all(_is_number(row.get(k)) for k in ("step", "time", "psnr"))):
                    raise NfplugError(f"{path}: {key}[{i}]: expected an object with numbers step, time and psnr; {hint}")
            setattr(history, key, rows)
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
        try:
            with atomic_file(Path(path), "wb") as f:
                fig.savefig(f, dpi=100, format="png")
        finally:
            plt.close(fig)
