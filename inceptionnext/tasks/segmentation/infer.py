"""Segment image files: a colour-overlay PNG with a legend and a raw class-index mask PNG per image, and each class's share of
the pixels, with the class names and palette of the weights."""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from torchvision import tv_tensors

from ...data.images import MAX_DENSE_PIXELS, check_image, load_image, output_names, refuse_existing
from ...utils.files import write_atomically
from ..classification.infer import class_names
from .data import EvalTransform, palette
from .draw import overlay_picture, untinted_classes
from .evaluate import predict_probs


def mask_png(mask: np.ndarray, colours: np.ndarray, black: Sequence[int] = ()) -> Image.Image:
    """A palette PNG of class indices (up to 256 classes): its pixel values are the indices, and its palette
    shows each class in its colour (the `black` classes, background, in black), so a viewer shows the mask."""
    img = Image.fromarray(mask.astype(np.uint8))
    table = np.zeros((256, 3), dtype=np.uint8)
    table[: len(colours)] = np.asarray(colours).clip(0, 255).astype(np.uint8)[:256]
    table[list(black)] = 0
    img.putpalette(table.ravel().tolist())
    return img


@torch.no_grad()
def segment_files(
    model: nn.Module,
    paths: Sequence,
    out_dir: str,
    device: Optional[torch.device] = None,
    base_size: Optional[Tuple[int, int]] = None,
    mode: str = "whole",
    crop: int = 512,
    stride: Optional[int] = None,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    alpha: float = 0.5,
    overwrite: bool = False,
) -> List[Dict[str, Any]]:
    """For each image: <out_dir>/<name>_overlay.png, <name>_mask.png (class indices; up to 256 classes a
    palette PNG that shows the classes in their colours, else 16-bit grey) and the classes' pixel shares (%),
    largest first; a folder's images keep their place below it (`inference.output_names`). Every file is checked
    before the model runs; existing outputs are not written over unless `overwrite`."""
    named = output_names(paths)
    if not named:
        raise ValueError("no image files given")
    for p, _ in named:
        check_image(p, MAX_DENSE_PIXELS)
    outputs = {
        p: (os.path.join(out_dir, f"{name}_mask.png"), os.path.join(out_dir, f"{name}_overlay.png"))
        for p, name in named
    }
    refuse_existing([t for pair in outputs.values() for t in pair], overwrite)
    paths = [p for p, _ in named]
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"output {out_dir} is a file, not a folder")
    os.makedirs(out_dir, exist_ok=True)
    names = class_names(model)
    colours = np.asarray(palette(model.num_classes), dtype=np.float32)
    plain = untinted_classes(names)
    cfg = model.pretrained_cfg
    transform = EvalTransform(base_size, cfg["mean"], cfg["std"])
    device = device or next(model.parameters()).device
    model.eval()
    results = []
    for path in paths:
        img = load_image(path, 3)
        raw = np.asarray(img)
        x = transform(tv_tensors.Image(torch.from_numpy(raw.copy()).permute(2, 0, 1)))[None].to(device)
        probs = predict_probs(model, x, model.num_classes, mode, crop, stride, scales, flip, size=raw.shape[:2])
        pred = probs.argmax(1)[0].cpu().numpy()
        mask_path, overlay_path = outputs[path]
        mask_img = (
            mask_png(pred, colours, plain) if model.num_classes <= 256 else Image.fromarray(pred.astype(np.uint16))
        )
        # never over an output another run wrote since the check above
        write_atomically(mask_path, lambda tmp: mask_img.save(tmp, format="PNG"), exclusive=not overwrite)
        over = Image.fromarray(overlay_picture(raw, pred, colours, names, alpha, plain))
        write_atomically(overlay_path, lambda tmp: over.save(tmp, format="PNG"), exclusive=not overwrite)
        counts = np.bincount(pred.ravel(), minlength=model.num_classes)
        shares = [
            {
                "index": int(i),
                "label": names[i],
                "share": 100.0 * counts[i] / pred.size,
                "colour": [int(c) for c in colours[i]],
            }
            for i in np.argsort(-counts)
            if counts[i] > 0
        ]
        results.append({"file": str(path), "mask": mask_path, "overlay": overlay_path, "classes": shares})
    return results
