"""What every task reads: image files and folders, checked and named in errors, and the built-in digits;
`shapes` writes a small generated image folder (``python -m inceptionnext.data.shapes``), `shape_sets` harder
small sets of mixed-size shapes to try a recipe on (``python -m inceptionnext.data.shape_sets``). Both are
imported on first use, so running them with ``python -m`` finds them not yet imported."""

import importlib

from .digits import DigitsDataset
from .folders import DataError, image_folder
from .images import ImageError, data_config_for, load_image

__all__ = [
    "shape_sets",
    "shapes",
    "DataError",
    "DigitsDataset",
    "ImageError",
    "data_config_for",
    "image_folder",
    "load_image",
]


# modules that are also commands: imported when first named, so that ``python -m`` runs them fresh
_COMMAND_MODULES = ("shape_sets", "shapes")


def __getattr__(name: str):
    if name in _COMMAND_MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
