"""Pictures of segmentation: class-colour overlays of predictions on their images, with a legend of the classes."""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np

from ...models.segmentation import IGNORE_INDEX
from ...utils.plots import enlargement, pyplot, save_figure, with_legend
from ...utils.text import excerpt

BACKGROUND_NAMES = ("background", "_background_", "bg", "backdrop")


def untinted_classes(names) -> Tuple[int, ...]:
    """The classes named background: left as the image in overlays (a tint over most of the picture would hide
    it), black in mask PNGs."""
    return tuple(i for i, n in enumerate(names or ()) if str(n).strip().lower() in BACKGROUND_NAMES)


def overlay(
    img: np.ndarray, mask: np.ndarray, colours: np.ndarray, alpha: float = 0.5, untinted: Sequence[int] = ()
) -> np.ndarray:
    """The image with each labelled pixel blended with its class colour (ignored pixels, and those of the
    `untinted` classes, left as they are)."""
    out = img.astype(np.float32).copy()
    keep = mask != IGNORE_INDEX
    for c in untinted:
        keep &= mask != c
    out[keep] = (1 - alpha) * out[keep] + alpha * colours[np.clip(mask[keep], 0, len(colours) - 1)]
    return out.clip(0, 255).astype(np.uint8)


LEGEND_CLASSES = 24  # a picture's legend names at most this many classes (the largest shares); the rest are counted


def overlay_picture(
    img: np.ndarray,
    mask: np.ndarray,
    colours: np.ndarray,
    names: Sequence[str],
    alpha: float = 0.5,
    untinted: Sequence[int] = (),
) -> np.ndarray:
    """What `inceptionnext segment` writes as <name>_overlay.png: the overlay (a small image enlarged by whole
    pixels, towards 512 px) above a legend of the classes it shows, largest share first, with their shares."""
    factor = enlargement(*mask.shape[:2])
    picture = overlay(img, mask, colours, alpha, untinted)
    if factor > 1:
        picture = picture.repeat(factor, axis=0).repeat(factor, axis=1)
    counts = np.bincount(mask[mask != IGNORE_INDEX].ravel(), minlength=len(colours))
    order = [int(c) for c in np.argsort(-counts, kind="stable") if counts[c] > 0]
    legend = [
        (
            f"{excerpt(names[c], 40)}{' (untinted)' if c in untinted else ''} {100.0 * counts[c] / mask.size:.1f}%",
            (255, 255, 255) if c in untinted else colours[c],
        )
        for c in order[:LEGEND_CLASSES]
    ]
    if len(order) > LEGEND_CLASSES:
        legend.append((f"and {len(order) - LEGEND_CLASSES} more classes (see the JSON)", (255, 255, 255)))
    return with_legend(picture, legend, "classes (share of the pixels):")


def plot_per_class(per_class, path: str, title: str) -> None:
    """Horizontal bars of per-class IoU, sorted, with the mIoU as a line."""
    plt = pyplot()

    items = sorted(((v, k) for k, v in per_class.items() if v is not None), reverse=True)
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.22 * len(items) + 1)))
    ax.barh([k for _, k in items][::-1], [v for v, _ in items][::-1], color="tab:blue")
    mean = sum(v for v, _ in items) / max(len(items), 1)
    ax.axvline(mean, color="tab:red", ls="--", label=f"mIoU {mean:.2f}")
    ax.set(xlabel="IoU (%)", xlim=(0, 100), title=title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
