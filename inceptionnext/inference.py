"""Classify image files: each read and checked, preprocessed the way the model's weights expect (its
pretrained config, through timm's transforms), and ranked top-k with class names."""
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn as nn
from PIL import Image, UnidentifiedImageError
from timm.data import ImageNetInfo, create_transform, resolve_data_config
from timm.data.readers.img_extensions import get_img_extensions
from tqdm import tqdm

IMAGENET_CLASSES = 1000


class ImageError(ValueError):
    """An image file that is missing or cannot be decoded."""


def load_image(path) -> Image.Image:
    """An RGB image, fully decoded now so a truncated or corrupt file fails here, naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"image not found: {path}" if not path.exists() else f"{path}: is not a file")
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert('RGB')
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
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


def class_names(model: nn.Module) -> List[str]:
    """Names for the model's outputs: its pretrained config's label names, ImageNet's for 1000 classes,
    else 'class <i>'."""
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    num_classes = model.num_classes
    for key in ('label_descriptions', 'label_names'):
        names = cfg.get(key)
        if names and len(names) == num_classes:
            return [str(n) for n in (names.values() if isinstance(names, dict) else names)]
    if num_classes == IMAGENET_CLASSES:
        info = ImageNetInfo()
        return [info.index_to_description(i) for i in range(num_classes)]
    return [f"class {i}" for i in range(num_classes)]


@torch.no_grad()
def classify_files(model: nn.Module, paths: Sequence, top_k: int = 5, batch_size: int = 16,
                   device: Optional[torch.device] = None, data_overrides: Optional[Dict[str, Any]] = None,
                   progress: bool = True) -> List[Dict[str, Any]]:
    """Top-k classes and probabilities for each file, in the order given (folders: their images, sorted).

    Every file is read before the model runs, so a bad one fails the call at once, naming the file.
    `data_overrides` (img_size, crop_pct, interpolation, mean, std) change the model's own preprocessing.
    """
    paths = expand_image_paths(paths)
    if not paths:
        raise ImageError("no image files given")
    images = [load_image(p) for p in paths]
    data_config = resolve_data_config(dict(data_overrides or {}), model=model)
    transform = create_transform(**data_config, is_training=False)
    names = class_names(model)
    k = max(1, min(top_k, model.num_classes))
    device = device or next(model.parameters()).device
    model.eval()
    results = []
    starts = range(0, len(images), batch_size)
    for start in tqdm(starts, desc='predict', disable=None if progress else True, leave=False):
        batch = torch.stack([transform(img) for img in images[start:start + batch_size]]).to(device)
        probs = model(batch).float().softmax(dim=-1).cpu()
        top_p, top_i = probs.topk(k, dim=-1)
        for path, ps, idx in zip(paths[start:start + batch_size], top_p.tolist(), top_i.tolist()):
            results.append({'file': str(path), 'top_k': [
                {'index': i, 'label': names[i], 'probability': p} for i, p in zip(idx, ps)]})
    return results
