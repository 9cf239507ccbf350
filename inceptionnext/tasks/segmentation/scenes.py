"""A segmentation set generated from the embedded digits: a few digits, scaled up, drawn on textured canvases.

11 classes: 0 background, 1 + d for digit d. Each scene is a pure function of (split, index): no files, the same
on every machine and in every worker. Train scenes use the digits of `DigitsDataset`'s train split, validation
scenes its val split, so the model is judged on handwriting it never saw.

Design for learning fast on a CPU (measured: the same schedule learns faster per pixel of compute with large digits
on a small canvas than with the same digits spread over a larger one): digits 3.5-4x their 8x8 size (28-32 px), 2-3
of them in the cells of a 2x2 grid of a 64 px canvas, so most pixels belong to a digit or its near surroundings;
strokes several pixels wide at the model's stride-4 output; the digit colour kept apart from the background's so
that the mask is about the shape, while gratings and noise make the background more than a flat colour.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors

from ...data.digits import DigitsDataset
from ...data.folders import DataError

CLASS_NAMES = ("background",) + tuple(str(d) for d in range(10))


class DigitScenes(torch.utils.data.Dataset):
    num_classes = len(CLASS_NAMES)
    class_names = list(CLASS_NAMES)
    SIZES = {"train": 4000, "val": 300}
    SEED = 11

    def __init__(
        self,
        split: str = "train",
        canvas: int = 64,
        scale: Tuple[float, float] = (3.5, 4.0),
        digits_per_scene: Tuple[int, int] = (2, 3),
        transform=None,
        length: int = 0,
    ):
        if split not in self.SIZES:
            raise DataError(f"digit scenes have splits 'train' and 'val', not {split!r}")
        src = DigitsDataset(split, 8)
        self.glyphs = [np.asarray(img)[:, :, 0].astype(np.float32) / 255.0 for img in src.images]
        self.labels = list(src.targets)
        self.split, self.canvas, self.scale, self.count = split, canvas, scale, digits_per_scene
        self.length = length or self.SIZES[split]
        self.transform = transform
        self._cache = {}  # index -> (image, mask uint8): each scene is drawn once (~4 ms) and reused every epoch

    def __len__(self) -> int:
        return self.length

    def _background(self, rng: np.random.RandomState) -> Tuple[np.ndarray, np.ndarray]:
        s = self.canvas
        yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s
        tex = np.zeros((s, s), np.float32)
        for _ in range(2):  # two gratings at random angle and frequency
            a, f, p = rng.uniform(0, np.pi), rng.uniform(2, 8), rng.uniform(0, 2 * np.pi)
            tex += np.sin(2 * np.pi * f * (xx * np.cos(a) + yy * np.sin(a)) + p)
        coarse = rng.rand(s // 8, s // 8).astype(np.float32)
        tex = tex / 4 + 0.5 * np.asarray(Image.fromarray(coarse).resize((s, s), Image.BILINEAR)) - 0.25
        base = rng.uniform(0.1, 0.9, size=3).astype(np.float32)
        tint = rng.uniform(-0.25, 0.25, size=3).astype(np.float32)
        img = np.clip(base[None, None] + tex[..., None] * tint[None, None] + rng.normal(0, 0.03, (s, s, 3)), 0, 1)
        return img.astype(np.float32), base

    def scene(self, index: int) -> Tuple[np.ndarray, np.ndarray]:
        """(H, W, 3) uint8 image and (H, W) int64 mask of scene `index`."""
        rng = np.random.RandomState([self.SEED, 0 if self.split == "train" else 1, index])
        img, base = self._background(rng)
        mask = np.zeros((self.canvas, self.canvas), np.int64)
        # digits sit in distinct cells of a grid sized for the largest digit, each at a random place in its cell:
        # as many digits as asked fit, and none overlap
        cell = min(self.canvas, int(round(8 * self.scale[1])))
        cells = [(r, c) for r in range(self.canvas // cell) for c in range(self.canvas // cell)]
        spare = self.canvas - cell * (self.canvas // cell)  # the grid itself moves within the canvas
        shift = rng.randint(0, spare + 1, size=2)
        count = min(len(cells), rng.randint(self.count[0], self.count[1] + 1))
        for k in rng.permutation(len(cells))[:count]:
            g = rng.randint(len(self.glyphs))
            size = min(cell, int(round(8 * rng.uniform(*self.scale))))
            top = shift[0] + cells[k][0] * cell + rng.randint(0, cell - size + 1)
            left = shift[1] + cells[k][1] * cell + rng.randint(0, cell - size + 1)
            ink = np.asarray(Image.fromarray(self.glyphs[g]).resize((size, size), Image.BICUBIC)).clip(0, 1)
            # a colour far from the background's: the opposite side of mid-grey, with some hue
            colour = np.clip(np.where(base > 0.5, rng.uniform(0.0, 0.3, 3), rng.uniform(0.7, 1.0, 3)), 0, 1)
            alpha = np.clip(ink * 1.5, 0, 1)[..., None]
            region = img[top : top + size, left : left + size]
            img[top : top + size, left : left + size] = region * (1 - alpha) + colour[None, None] * alpha
            mask[top : top + size, left : left + size][ink > 0.4] = 1 + self.labels[g]
        return (img * 255 + 0.5).astype(np.uint8), mask

    def load(self, index: int) -> Tuple[tv_tensors.Image, tv_tensors.Mask]:
        if index not in self._cache:
            img, mask = self.scene(index)
            self._cache[index] = (
                torch.from_numpy(img).permute(2, 0, 1).contiguous(),
                torch.from_numpy(mask.astype(np.uint8)),
            )
        img, mask = self._cache[index]
        return tv_tensors.Image(img.clone()), tv_tensors.Mask(mask.long())

    def __getitem__(self, index: int):
        pair = self.load(index)
        return self.transform(*pair) if self.transform is not None else pair
