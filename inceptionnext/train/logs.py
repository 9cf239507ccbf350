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


def _constant(values: Sequence[float]) -> bool:
    return len(values) > 1 and max(values) - min(values) < 1e-9


def curves_figure(
    history: List[Dict[str, Any]], title: str = "", metrics: Sequence[Tuple[str, str]] = CLASSIFICATION_METRICS
):
    """The matplotlib figure of `plot_curves`: loss on the left, the task's validation metrics (history key,
    label) on the right, against epochs, or iterations for an iteration run (rows with "iter"). Only series the
    history holds are drawn and named; a metric flat at one value (top-5 of 3 classes, always 100) is not drawn
    but named with its value in the panel's title."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    by_iter = bool(history) and all(r.get("iter") is not None for r in history)
    xs = [r["iter"] if by_iter else r["epoch"] for r in history]
    unit = "iteration" if by_iter else "epoch"

    def series(key):
        pts = [(x, r.get(key)) for x, r in zip(xs, history) if r.get(key) is not None]
        return [p[0] for p in pts], [p[1] for p in pts]

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    drawn = []
    for key, label in (("train_loss", "train"), ("val_loss", "validation"), ("ema_val_loss", "validation (EMA)")):
        x, y = series(key)
        if x:
            ax_loss.plot(x, y, marker=".", label=label)
            drawn.append(label)
    ax_loss.set(xlabel=unit, ylabel="loss", title="loss: " + ", ".join(drawn) if drawn else "loss")
    drawn, flat = [], []
    for key, label in metrics:
        x, y = series(key)
        if not x:
            continue
        if _constant(y):
            flat.append(f"{label} {y[0]:.4g} throughout")
            continue
        ax_acc.plot(x, y, marker=".", label=label)
        drawn.append(label)
    acc_title = "validation " + ", ".join(drawn) if drawn else "validation metrics"
    if flat:
        acc_title += "\n(not drawn: " + "; ".join(flat) + ")"
    ax_acc.set(xlabel=unit, ylabel="%", title=acc_title)
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        if 0 < len(xs) <= 12:  # a tick at each evaluation
            ax.set_xticks(xs)
        else:  # whole numbers only: no epoch 1.2, no iteration 250.5
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_curves(
    history: List[Dict[str, Any]],
    path: str,
    title: str = "",
    metrics: Sequence[Tuple[str, str]] = CLASSIFICATION_METRICS,
) -> None:
    """Two panels (`curves_figure`), written atomically as a PNG."""
    save_figure(curves_figure(history, title, metrics), path, dpi=100)
