"""Pictures of classification: a grid of validation images, each titled with the predicted class and, when the
prediction is wrong, the true one (green right, red wrong)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch

from ...utils.plots import pyplot, save_figure


def to_display(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Normalized NCHW images back to displayable NHWC floats in [0, 1] (grey images as RGB)."""
    mean_t = torch.tensor(mean, dtype=images.dtype).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=images.dtype).view(1, -1, 1, 1)
    shown = (images.cpu() * std_t + mean_t).clamp(0, 1)
    if shown.shape[1] == 1:
        shown = shown.expand(-1, 3, -1, -1)
    return shown.permute(0, 2, 3, 1).numpy()


def prediction_grid(
    images: np.ndarray,
    targets: Sequence[int],
    predictions: Sequence[int],
    class_names: Sequence[str],
    title: str,
    path: Union[str, Path],
    columns: int = 8,
) -> Path:
    """Write a grid of `images` (NHWC in [0, 1]) titled "predicted" or "predicted (true: ...)" to `path`."""
    plt = pyplot()
    n = len(images)
    rows = max(1, -(-n // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.8 * rows + 0.5), squeeze=False)
    right = sum(int(p == t) for p, t in zip(predictions, targets))
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(images[i], interpolation="nearest")
        ok = predictions[i] == targets[i]
        label = class_names[predictions[i]] + ("" if ok else f"\n(true: {class_names[targets[i]]})")
        ax.set_title(label, fontsize=8, color="tab:green" if ok else "tab:red")
    fig.suptitle(f"{title}: {right}/{n} right (predicted class; true class in brackets when wrong)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)
