"""What every task reads: image files and folders, checked and named in errors, and the built-in digits;
`shapes` writes a small generated image folder (``python -m inceptionnext.data.shapes``)."""

from . import shapes
from .digits import DigitsDataset
from .folders import DataError, image_folder
from .images import ImageError, data_config_for, load_image

__all__ = ["shapes", "DataError", "DigitsDataset", "ImageError", "data_config_for", "image_folder", "load_image"]
