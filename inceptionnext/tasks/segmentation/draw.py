"""Pictures of segmentation: class-colour overlays of predictions on their images."""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np

from ...models.segmentation import IGNORE_INDEX

BACKGROUND_NAMES = ("background", "_background_", "bg", "backdrop")


def untinted_classes(names) -> Tuple[int, ...]:
    """The classes named background: left as the image in overlays (a tint over most of the picture would hide
    it), black in mask PNGs."""
    return tuple(i for i, n in enumerate(names or ()) if str(n).strip().lower() in BACKGROUND_NAMES)


def overlay(img: np.ndarray, mask: np.ndarray, colours: np.ndarray, alpha: float = 0.5,
            untinted: Sequence[int] = ()) -> np.ndarray:
    """The image with each labelled pixel blended with its class colour (ignored pixels, and those of the
    `untinted` classes, left as they are)."""
    out = img.astype(np.float32).copy()
    keep = mask != IGNORE_INDEX
    for c in untinted:
        keep &= mask != c
    out[keep] = (1 - alpha) * out[keep] + alpha * colours[np.clip(mask[keep], 0, len(colours) - 1)]
    return out.clip(0, 255).astype(np.uint8)
