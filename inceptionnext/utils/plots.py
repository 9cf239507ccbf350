"""Pictures written to files: matplotlib on its file-only backend, and PNGs written atomically (a killed run
never leaves half a picture)."""

from pathlib import Path
from typing import Union

import numpy as np

from .files import write_atomically


def pyplot():
    """matplotlib.pyplot on the Agg backend: figures go to files, no display is needed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Union[str, Path], dpi: int = 100) -> Path:
    """Write a matplotlib figure as a PNG, atomically, and close it."""
    try:
        return write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))
    finally:
        pyplot().close(fig)


def save_png(image: np.ndarray, path: Union[str, Path]) -> Path:
    """Write an HxWx3 (or HxW) uint8 array as a PNG, atomically."""
    from PIL import Image

    return write_atomically(path, lambda tmp: Image.fromarray(image).save(tmp, format="PNG"))
