"""The built-in digits (scikit-learn's 8x8 handwritten digits, shipped inside scikit-learn) with one fixed split, which every demo (classification, segmentation scenes, detection scenes) draws from."""

from __future__ import annotations

from typing import Tuple

import numpy as np
import torch
from PIL import Image

from .folders import DataError


def digits_split(split: str) -> Tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits (values 0-16) and labels of one split of DigitsDataset's fixed split, so every
    dataset built from the digits (classification, detection, segmentation) keeps val digits out of training."""
    if split not in ("train", "val"):
        raise DataError(f"digits dataset has splits 'train' and 'val', not {split!r}")
    from sklearn.datasets import load_digits

    digits = load_digits()
    images, targets = digits.images, digits.target
    rng = np.random.RandomState(DigitsDataset.SPLIT_SEED)
    val_idx = []
    for c in range(DigitsDataset.num_classes):
        idx = np.flatnonzero(targets == c)
        rng.shuffle(idx)
        val_idx.extend(idx[: int(round(len(idx) * DigitsDataset.VAL_FRACTION))].tolist())
    val_mask = np.zeros(len(targets), dtype=bool)
    val_mask[val_idx] = True
    keep = np.flatnonzero(val_mask if split == "val" else ~val_mask)
    return images[keep], targets[keep]


class DigitsDataset(torch.utils.data.Dataset):
    """scikit-learn's handwritten digits (1,797 8x8 grey images, 10 classes), shipped inside scikit-learn.

    A fixed split (seeded, stratified, 20% validation) so every run and every machine sees the same
    validation set; images are upsampled once to ``img_size`` and given 3 channels so timm's transforms apply.

    Args:
        split: 'train' or 'val'.
        img_size: the side the 8x8 images are upsampled to.
        transform: applied to each PIL image; None gives the images as they are.

    Raises:
        DataError: `split` is neither 'train' nor 'val'.
    """

    SPLIT_SEED = 0
    VAL_FRACTION = 0.2
    num_classes = 10

    def __init__(self, split: str = "train", img_size: int = 32, transform=None):
        images, targets = digits_split(split)
        self.targets = [int(t) for t in targets]
        self.images = [self._to_pil(img, img_size) for img in images]
        self.transform = transform

    @staticmethod
    def _to_pil(img8: np.ndarray, size: int) -> Image.Image:
        grey = Image.fromarray(np.clip(img8 * (255.0 / 16.0), 0, 255).astype(np.uint8), mode="L")
        return grey.resize((size, size), Image.BICUBIC).convert("RGB")

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        img = self.images[index]
        if self.transform is not None:
            img = self.transform(img)
        return img, self.targets[index]
