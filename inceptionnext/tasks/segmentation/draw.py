"""Pictures of segmentation: class-colour overlays of predictions on their images."""

from __future__ import annotations

import numpy as np

from ...models.segmentation import IGNORE_INDEX


def overlay(img: np.ndarray, mask: np.ndarray, colours: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The image with each labelled pixel blended with its class colour (ignored pixels left as they are)."""
    out = img.astype(np.float32).copy()
    keep = mask != IGNORE_INDEX
    out[keep] = (1 - alpha) * out[keep] + alpha * colours[np.clip(mask[keep], 0, len(colours) - 1)]
    return out.clip(0, 255).astype(np.uint8)
