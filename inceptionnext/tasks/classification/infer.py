"""Classify image files: each read and checked, preprocessed the way the model's weights expect (its pretrained config, through timm's transforms), and ranked top-k with class names."""

from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn as nn
from timm.data import ImageNetInfo, create_transform, infer_imagenet_subset
from tqdm import tqdm

from ...data.images import ImageError, check_image, data_config_for, expand_image_paths, load_image


def class_names(model: nn.Module) -> List[str]:
    """Names for the model's outputs: its pretrained config's label names, ImageNet's (1k, 12k, 22k ...) by
    timm's ImageNetInfo, else 'class <i>'."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    num_classes = model.num_classes
    for key in ("label_descriptions", "label_names"):
        names = cfg.get(key)
        if names and len(names) == num_classes:
            return [str(n) for n in (names.values() if isinstance(names, dict) else names)]
    subset = infer_imagenet_subset(model)
    if subset:
        info = ImageNetInfo(subset)
        if info.num_classes() == num_classes:
            return [info.index_to_description(i) for i in range(num_classes)]
    return [f"class {i}" for i in range(num_classes)]


@torch.no_grad()
def classify_files(
    model: nn.Module,
    paths: Sequence,
    top_k: int = 5,
    batch_size: int = 16,
    device: Optional[torch.device] = None,
    data_overrides: Optional[Dict[str, Any]] = None,
    progress: bool = True,
) -> List[Dict[str, Any]]:
    """Top-k classes and probabilities for each file, in the order given (folders: their images, sorted).

    Every file is opened before the model runs, so a missing or non-image file fails the call at once,
    naming it; images are decoded one batch at a time. `data_overrides` (img_size, crop_pct, interpolation,
    mean, std) change the model's own preprocessing.
    """
    paths = expand_image_paths(paths)
    if not paths:
        raise ImageError("no image files given")
    for path in paths:
        check_image(path)
    data_config = data_config_for(model, data_overrides)
    transform = create_transform(**data_config, is_training=False)
    channels = data_config["input_size"][0]
    names = class_names(model)
    k = max(1, min(top_k, model.num_classes))
    device = device or next(model.parameters()).device
    model.eval()
    results = []
    for start in tqdm(
        range(0, len(paths), batch_size), desc="predict", disable=None if progress else True, leave=False
    ):
        chunk = paths[start : start + batch_size]
        batch = torch.stack([transform(load_image(p, channels)) for p in chunk]).to(device)
        probs = model(batch).float().softmax(dim=-1).cpu()
        top_p, top_i = probs.topk(k, dim=-1)
        for path, ps, idx in zip(chunk, top_p.tolist(), top_i.tolist()):
            results.append(
                {
                    "file": str(path),
                    "top_k": [{"index": i, "label": names[i], "probability": p} for i, p in zip(idx, ps)],
                }
            )
    return results
