"""Per-epoch log (CSV, rewritten whole from the history each epoch so a resumed run never duplicates a row)
and the PNG plot of loss and accuracy curves drawn when a run ends."""

from __future__ import annotations

import csv
from typing import Any, Dict, List, Sequence, Tuple

from ..utils.files import write_atomically
from ..utils.plots import pyplot, save_figure

COLUMNS = [
    "epoch",
    "lr",
    "train_loss",
    "val_loss",
    "val_top1",
    "val_top5",
    "ema_val_loss",
    "ema_val_top1",
    "ema_val_top5",
    "epoch_time_s",
    "skipped_images",
]


def write_csv(history: List[Dict[str, Any]], path: str, columns: Sequence[str] = COLUMNS) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
            writer.writeheader()
            for row in history:
                writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in columns})

    write_atomically(path, write)


def read_csv(path: str) -> List[Dict[str, Any]]:
    with open(path, newline="") as f:
        return [{k: (float(v) if v not in ("", None) else None) for k, v in row.items()} for row in csv.DictReader(f)]


CLASSIFICATION_METRICS = (("val_top1", "top-1"), ("val_top5", "top-5"), ("ema_val_top1", "top-1 (EMA)"))


def plot_curves(
    history: List[Dict[str, Any]],
    path: str,
    title: str = "",
    metrics: Sequence[Tuple[str, str]] = CLASSIFICATION_METRICS,
) -> None:
    """Two panels: train/val loss, and the task's validation metrics (history key, label), by epoch."""
    plt = pyplot()

    epochs = [r["epoch"] for r in history]

    def series(key):
        pts = [(e, r.get(key)) for e, r in zip(epochs, history) if r.get(key) is not None]
        return [p[0] for p in pts], [p[1] for p in pts]

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for key, label in (("train_loss", "train"), ("val_loss", "val"), ("ema_val_loss", "val (EMA)")):
        x, y = series(key)
        if x:
            ax_loss.plot(x, y, marker=".", label=label)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    for key, label in metrics:
        x, y = series(key)
        if x:
            ax_acc.plot(x, y, marker=".", label=label)
    ax_acc.set(xlabel="epoch", ylabel="validation metric (%)", title=", ".join(label for _, label in metrics))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
