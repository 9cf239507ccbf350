"""Classify image files: each read and checked, preprocessed the way the model's weights expect (its
pretrained config, through timm's transforms), and ranked top-k with class names."""
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch.nn as nn
from PIL import Image, ImageOps, UnidentifiedImageError
from timm.data import resolve_data_config
from timm.data.readers.img_extensions import get_img_extensions

from ..models.model_api import check_img_size

_DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)


# The resampling filters timm and PIL both know, by the names timm takes.
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "lanczos", "box", "hamming")


class ImageError(ValueError):
    """An image file that is missing or cannot be decoded."""


def _open(path: Path) -> Image.Image:
    if not path.is_file():
        raise ImageError(f"image not found: {path}" if not path.exists() else f"{path}: is not a file")
    try:
        return Image.open(path)
    except _DECODE_ERRORS as e:
        raise ImageError(f"{path}: cannot be read as an image ({type(e).__name__}: {e})") from e


def check_image(path) -> None:
    """Fail now, naming the file, if it is missing or not an image (reads the header only)."""
    _open(Path(path)).close()


def load_image(path, channels: int = 3) -> Image.Image:
    """The image fully decoded (so a truncated file fails here, naming it), turned upright by its EXIF
    orientation, as RGB (3 channels) or grayscale (1); 16-bit integer images are scaled to 8 bits."""
    path = Path(path)
    if channels not in (1, 3):
        raise ImageError(f"images can feed models with 1 or 3 input channels, not {channels}")
    img = _open(path)
    try:
        with img:
            img.load()
            img = ImageOps.exif_transpose(img)
            if img.mode in ('I;16', 'I;16B', 'I;16L', 'I'):  # 16-bit PNG/TIFF: convert() would clip at 255
                img = Image.fromarray((np.asarray(img, dtype=np.float64) / 257.0).clip(0, 255).astype(np.uint8))
            return img.convert('RGB' if channels == 3 else 'L')
    except _DECODE_ERRORS as e:
        raise ImageError(f"{path}: cannot be read as an image ({type(e).__name__}: {e})") from e


def expand_image_paths(paths: Sequence) -> List[Path]:
    """The files as given; a folder stands for the image files below it (timm's image extensions), sorted."""
    out: List[Path] = []
    extensions = get_img_extensions(as_set=True)
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(f for f in path.rglob('*') if f.suffix.lower() in extensions and f.is_file())
            if not found:
                raise ImageError(f"{path}: no image files ({', '.join(sorted(extensions))}) in this folder")
            out += found
        else:
            out.append(path)
    return out




def data_config_for(model: nn.Module, overrides: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The model's preprocessing (pretrained config, then `overrides`), with one normalization value per
    input channel (a 1-channel model gets the mean of RGB statistics)."""
    for key in ('mean', 'std'):  # timm asserts on a wrong count; say what is wrong instead
        given = (overrides or {}).get(key)
        if given is not None and len(given) not in (1, model.in_chans):
            raise ValueError(f"{key} has {len(given)} values for a model with {model.in_chans} input channels")
    check_img_size(model, (overrides or {}).get('img_size'), 'img_size')
    crop_pct = (overrides or {}).get('crop_pct')
    if crop_pct is not None and not 0 < crop_pct <= 1:  # timm would quietly ignore a 0
        raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
    cfg = resolve_data_config(dict(overrides or {}), model=model)
    chans = cfg['input_size'][0]
    for key in ('mean', 'std'):
        values = tuple(cfg[key])
        if len(values) != chans:
            if chans == 1 and len(values) == 3 and key not in (overrides or {}):
                values = (sum(values) / 3,)
            else:
                raise ValueError(f"{key} has {len(values)} values for a model with {chans} input channels")
        cfg[key] = values
    return cfg


