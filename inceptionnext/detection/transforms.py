"""Detection augmentations from torchvision transforms v2: boxes and masks move with the image.

Resizing and normalization are left to the detector itself (torchvision's GeneralizedRCNNTransform, which
also does multi-scale training when min_size is a list), so these only augment and convert.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.transforms import v2


@dataclass(frozen=True)
class Augment:
    """Which augmentations run in training, and how often (0 turns one off)."""
    hflip: float = 0.5          # horizontal flip probability (off for data where a mirror changes the class)
    photometric: float = 0.0    # probability of SSD's photometric distortion (brightness, contrast, hue, ...)
    zoom_out: float = 0.0       # probability of placing the image on a canvas up to 2x larger (small objects)
    iou_crop: bool = False      # SSD's random crop keeping objects by IoU (large objects)


def train_transforms(aug: Augment) -> v2.Compose:
    steps = [v2.ToImage()]
    if aug.photometric > 0:
        steps.append(v2.RandomPhotometricDistort(p=aug.photometric))
    if aug.zoom_out > 0:
        steps.append(v2.RandomZoomOut(fill=0, p=aug.zoom_out))
    if aug.iou_crop:
        steps.append(v2.RandomIoUCrop())
    if aug.hflip > 0:
        steps.append(v2.RandomHorizontalFlip(p=aug.hflip))
    steps += [v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(min_size=1.0),
              v2.ToDtype(torch.float32, scale=True), v2.ToPureTensor()]
    return v2.Compose(steps)


def eval_transforms() -> v2.Compose:
    return v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.ToPureTensor()])
