"""Reports a competitor looks at: training curves."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..core.utils import atomic_path


def plot_history(history: pd.DataFrame, metric: str, path: Path, title: str) -> None:
    """Save loss and metric curves per fold (one line per fold) to a PNG; no-op without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plots are a convenience, not a requirement
        return
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for fold, h in history.groupby("fold"):
        axes[0].plot(h["epoch"], h["train_loss"], label=f"fold {fold}")
        axes[1].plot(h["epoch"], h["valid_loss"], label=f"fold {fold}")
        axes[2].plot(h["epoch"], h[metric], label=f"fold {fold}")
    for ax, name in zip(axes, ["train loss", "validation loss", f"validation {metric}"]):
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[2].legend()
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)
