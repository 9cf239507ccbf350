"""Pictures of the per-class results (`per_class.per_class_report`): the confusion matrix in counts and
normalised by true class beside per-class precision/recall/F1, and a grid of the most confident mistakes."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Sequence, Union

import numpy as np
import torch

from ...utils.plots import pyplot, save_figure
from .draw import to_display

MAX_MATRIX_CLASSES = 30  # more classes than this: the matrix shows the ones with the most errors


def _shown_classes(report: Dict[str, Any]) -> List[int]:
    """Indices of the classes the matrix shows: all (with samples or predictions), or the MAX_MATRIX_CLASSES
    with the most errors (wrong in either direction)."""
    cm = np.asarray(report["confusion_matrix"]["counts"])
    used = [i for i in range(len(cm)) if cm[i].sum() or cm[:, i].sum()]
    if len(used) <= MAX_MATRIX_CLASSES:
        return used
    errors = cm.sum(0) + cm.sum(1) - 2 * np.diag(cm)
    return sorted(sorted(used, key=lambda i: (-errors[i], i))[:MAX_MATRIX_CLASSES])


def _matrix(ax, values: np.ndarray, names: Sequence[str], title: str, fmt: str, vmax: float) -> None:
    n = len(names)
    ax.imshow(values, cmap="Blues", vmin=0, vmax=vmax if vmax > 0 else 1)
    ax.set_xticks(range(n), names, rotation=45 if n > 3 else 0, ha="right" if n > 3 else "center", fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=10)
    if n <= 15:
        for i in range(n):
            for j in range(n):
                v = values[i, j]
                ax.text(
                    j,
                    i,
                    format(v, fmt),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if v > 0.6 * vmax else "black",
                )


def per_class_figure(report: Dict[str, Any], title: str = ""):
    """Three panels: confusion counts, confusion normalised by true class (each row sums to 1), and per-class
    precision, recall and F1 (worst F1 at the top)."""
    plt = pyplot()
    shown = _shown_classes(report)
    labels = report["confusion_matrix"]["labels"]
    names = [labels[i] for i in shown]
    counts = np.asarray(report["confusion_matrix"]["counts"])[np.ix_(shown, shown)]
    normalized = np.asarray(report["confusion_matrix"]["normalized"])[np.ix_(shown, shown)]
    classes = sorted((c for c in report["classes"] if c["support"] > 0), key=lambda c: (c["f1"], c["name"]))
    bars = classes[:MAX_MATRIX_CLASSES]
    side = max(3.6, 0.42 * len(names) + 1.6)
    fig, axes = plt.subplots(1, 3, figsize=(3 * side + 1.0, side + 0.9), squeeze=False)
    cm_ax, norm_ax, bar_ax = axes[0]
    _matrix(cm_ax, counts, names, "confusion matrix (counts)", "d", float(counts.max()) if counts.size else 1.0)
    _matrix(norm_ax, normalized, names, "normalised by true class (recall on the diagonal)", ".2f", 1.0)
    y = np.arange(len(bars))
    for k, (key, colour) in enumerate((("precision", "tab:blue"), ("recall", "tab:orange"), ("f1", "tab:green"))):
        bar_ax.barh(y + (k - 1) * 0.27, [c[key] for c in bars], height=0.27, color=colour, label=key)
    for i, c in enumerate(bars):  # the F1 in figures too: a class at 0 has no bar to see
        bar_ax.text(min(c["f1"], 0.9) + 0.01, i + 0.27, f"F1 {c['f1']:.2f}", va="center", fontsize=7)
    bar_ax.set_yticks(y, [f"{c['name']} ({c['support']})" for c in bars], fontsize=8)
    bar_ax.invert_yaxis()
    bar_ax.set_xlim(0, 1)
    bar_ax.set_xlabel("score")
    bar_ax.grid(axis="x", alpha=0.3)
    bar_ax.legend(fontsize=8, loc="lower right")
    more = f", worst {len(bars)} of {len(classes)}" if len(classes) > len(bars) else ""
    bar_ax.set_title(f"per class (support in brackets{more})", fontsize=10)
    note = (
        f" ({len(shown)} of {len(labels)} classes: those with the most errors)"
        if len(shown) < len([c for c in report["classes"] if c["support"]])
        else ""
    )
    fig.suptitle(
        (title + ": " if title else "")
        + f"accuracy {100 * report['accuracy']:.2f}%, macro F1 {report['macro_avg']['f1']:.3f}{note}",
        fontsize=11,
    )
    fig.tight_layout()
    return fig


def plot_per_class(report: Dict[str, Any], path: Union[str, Path], title: str = "") -> Path:
    """`per_class_figure` written atomically as a PNG."""
    return save_figure(per_class_figure(report, title), path, dpi=100)


def mistakes_figure(images: np.ndarray, mistakes: Sequence[Dict[str, Any]], title: str = "", columns: int = 4):
    """A grid of the mistakes' images (NHWC in [0, 1], as the model saw them), each titled
    "true / predicted (probability)", most confident first."""
    plt = pyplot()
    n = len(mistakes)
    columns = max(1, min(columns, n))
    rows = max(1, -(-n // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 2.5 * rows + 0.6), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        m = mistakes[i]
        ax.imshow(images[i], interpolation="nearest")
        ax.set_title(f"{m['true']} / {m['predicted']} ({m['probability']:.2f})", fontsize=9, color="tab:red")
    heading = "most confident mistakes: true / predicted (probability)" if n else "no mistakes"
    fig.suptitle((title + ": " if title else "") + heading, fontsize=10)
    fig.tight_layout()
    return fig


def plot_mistakes(
    images: np.ndarray, mistakes: Sequence[Dict[str, Any]], path: Union[str, Path], title: str = ""
) -> Path:
    """`mistakes_figure` written atomically as a PNG."""
    return save_figure(mistakes_figure(images, mistakes, title), path, dpi=100)


def draw_mistakes(report: Dict[str, Any], dataset, data_cfg: Dict[str, Any], path: str, title: str = "") -> None:
    """The report's most confident mistakes drawn from `dataset` (its evaluation transform: what the model saw)."""
    mistakes = report["mistakes"]
    if mistakes:
        x = torch.stack([dataset[m["index"]][0] for m in mistakes])
        images = to_display(x, data_cfg["mean"], data_cfg["std"])
    else:
        images = []
    plot_mistakes(images, mistakes, path, title)
