"""Classify image files: each read and checked, preprocessed the way the model's weights expect (its
pretrained config, through timm's transforms), and ranked top-k with class names."""

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch.nn as nn
from PIL import Image, ImageOps, UnidentifiedImageError
from timm.data import resolve_data_config
from timm.data.readers.img_extensions import get_img_extensions

from ..models.model_api import check_img_size
from ..utils.text import escape_control

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


# The largest image `segment` and `detect` take (4096 x 4096): their memory grows with the pixels (class
# probabilities at full size, float copies), so a larger image is refused from its header, before it is decoded.
MAX_DENSE_PIXELS = 4096 * 4096


def check_image(path, max_pixels: Optional[int] = None) -> None:
    """Fail now, naming the file, if it is missing or not an image, or (with `max_pixels`) larger than that
    (reads the header only)."""
    with _open(Path(path)) as img:
        w, h = img.size
    if max_pixels is not None and w * h > max_pixels:
        raise ImageError(
            f"{escape_control(path)}: {w}x{h} is {w * h} pixels, over the limit of {max_pixels} "
            f"({int(max_pixels**0.5)}x{int(max_pixels**0.5)}) that keeps memory bounded; downscale "
            "or tile it first"
        )


def load_image(path, channels: int = 3, upright: bool = True) -> Image.Image:
    """The image fully decoded (so a truncated file fails here, naming it), turned upright by its EXIF
    orientation (unless not `upright`: COCO boxes are in the stored pixels' frame), as RGB (3 channels) or
    grayscale (1); 16-bit integer images are scaled to 8 bits.

    Args:
        path: the image file.
        channels: 3 for RGB, 1 for grayscale.
        upright: apply the EXIF orientation.

    Returns:
        The decoded image.

    Raises:
        ImageError: `channels` is not 1 or 3, or the file is missing, not a file or cannot be decoded.
    """
    path = Path(path)
    if channels not in (1, 3):
        raise ImageError(f"images can feed models with 1 or 3 input channels, not {channels}")
    img = _open(path)
    try:
        with img:
            img.load()
            img = ImageOps.exif_transpose(img) if upright else img
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit PNG/TIFF: convert() would clip at 255
                img = Image.fromarray((np.asarray(img, dtype=np.float64) / 257.0).clip(0, 255).astype(np.uint8))
            return img.convert("RGB" if channels == 3 else "L")
    except _DECODE_ERRORS as e:
        raise ImageError(f"{path}: cannot be read as an image ({type(e).__name__}: {e})") from e


def output_names(paths: Sequence) -> List[Tuple[Path, Path]]:
    """Each image file of `paths` (as `expand_image_paths`) with the relative name its outputs take: a folder's
    images keep their place below it, under the folder's own name (a/x.png -> a/x, b/x.png -> b/x), a file given
    alone its stem. Two images that would share outputs are a ValueError naming both."""
    out: List[Tuple[Path, Path]] = []
    for given in map(Path, paths):
        if given.is_dir():
            base = Path(given.resolve().name or "root")
            out += [(f, base / f.relative_to(given).with_suffix("")) for f in expand_image_paths([given])]
        else:
            out.append((given, Path(given.stem)))
    taken: Dict[Path, Path] = {}
    for f, name in out:
        if name in taken:
            raise ValueError(
                f"{escape_control(taken[name])} and {escape_control(f)} would write the same outputs "
                f"({escape_control(name)}_*); give them in separate runs or rename one"
            )
        taken[name] = f
    return out


def check_dense_inputs(paths: Sequence) -> None:
    """What `segment` and `detect` check before a model is built: every image readable, at most
    MAX_DENSE_PIXELS (from its header), and no two sharing outputs (`output_names`)."""
    for f, _ in output_names(paths):
        check_image(f, MAX_DENSE_PIXELS)


def refuse_existing(targets: Sequence, overwrite: bool) -> None:
    """A FileExistsError naming the first of `targets` that exists, unless `overwrite`."""
    if overwrite:
        return
    existing = [t for t in targets if os.path.lexists(t)]
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise FileExistsError(
            f"{escape_control(existing[0])} exists{more}; pass --overwrite to replace the outputs, "
            "or choose another output folder"
        )


def expand_image_paths(paths: Sequence) -> List[Path]:
    """The files as given; a folder stands for the image files below it (timm's image extensions), sorted."""
    out: List[Path] = []
    extensions = get_img_extensions(as_set=True)
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(f for f in path.rglob("*") if f.suffix.lower() in extensions and f.is_file())
            if not found:
                raise ImageError(f"{path}: no image files ({', '.join(sorted(extensions))}) in this folder")
            out += found
        else:
            out.append(path)
    return out


def data_config_for(model: nn.Module, overrides: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The model's preprocessing (pretrained config, then `overrides`), with one normalization value per
    input channel (a 1-channel model gets the mean of RGB statistics).

    Args:
        model: the model (its `pretrained_cfg` and `in_chans`).
        overrides: timm data-config keys (`img_size`, `crop_pct`, `mean`, `std`, `interpolation`, ...).

    Returns:
        timm's data config: `input_size`, `interpolation`, `mean`, `std`, `crop_pct`, `crop_mode`.

    Raises:
        ValueError: `mean` or `std` has a wrong number of values, `img_size` is too small for the model or too
            large, or
            `crop_pct` is outside (0, 1].
    """
    for key in ("mean", "std"):  # timm asserts on a wrong count; say what is wrong instead
        given = (overrides or {}).get(key)
        if given is not None and len(given) not in (1, model.in_chans):
            raise ValueError(f"{key} has {len(given)} values for a model with {model.in_chans} input channels")
    check_img_size(model, (overrides or {}).get("img_size"), "img_size")
    crop_pct = (overrides or {}).get("crop_pct")
    if crop_pct is not None and not 0 < crop_pct <= 1:  # timm would quietly ignore a 0
        raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
    cfg = resolve_data_config(dict(overrides or {}), model=model)
    chans = cfg["input_size"][0]
    for key in ("mean", "std"):
        values = tuple(cfg[key])
        if len(values) != chans:
            if chans == 1 and len(values) == 3 and key not in (overrides or {}):
                values = (sum(values) / 3,)
            else:
                raise ValueError(f"{key} has {len(values)} values for a model with {chans} input channels")
        cfg[key] = values
    return cfg
