"""The embedded detection demo: scikit-learn's digits placed on noisy canvases, written as a COCO dataset.

Each canvas gets 1-2 digits of random size, colour and position (never overlapping), on a background of random
tint and noise. A digit's instance mask is where its ink covers more than a quarter of the pixel, its box is the
mask's extent. Train canvases use only the train digits and val canvases only the val digits of the library's
fixed digits split, and everything is drawn from one seed, so the same files come out on every machine.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Tuple

import numpy as np
from PIL import Image

from ...data.digits import digits_split
from .data import coco_json

CLASS_NAMES = [str(d) for d in range(10)]
INK_THRESHOLD = 0.25  # ink coverage (0-1) above which a pixel belongs to the digit's mask


@dataclass(frozen=True)
class DemoSpec:
    """What the generated set looks like; stored in each split's JSON, so a changed spec regenerates the data."""

    train_images: int = 1000
    val_images: int = 200
    canvas: int = 48  # square canvases, in pixels (small: cheap to train on 2 cores)
    min_digit: int = 20  # digit side in pixels (the 8x8 digit is upsampled to this); large against the
    max_digit: int = 28  # canvas, so every digit is one clear object for the stride-8 level
    max_digits: int = 2  # per canvas (at least 1)
    noise: float = 12.0  # std of the background's Gaussian noise, in 0-255 units
    seed: int = 0
    version: int = 1  # bumped when the drawing changes


def _rle(mask: np.ndarray) -> Dict[str, Any]:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _place(rng: np.random.RandomState, taken: List[Tuple[int, int, int, int]], side: int, canvas: int):
    for _ in range(50):
        x, y = rng.randint(0, canvas - side + 1), rng.randint(0, canvas - side + 1)
        if all(x + side + 2 <= a or a + c + 2 <= x or y + side + 2 <= b or b + c + 2 <= y for a, b, c, _ in taken):
            return x, y
    return None


def draw_canvas(rng: np.random.RandomState, digits: np.ndarray, labels: np.ndarray, spec: DemoSpec):
    """One canvas (H, W, 3 uint8) and its objects: (label 0-9, box [x, y, w, h], full-canvas mask)."""
    size = spec.canvas
    tint = rng.uniform(0, 90, size=3)
    background = tint[None, None, :] + rng.normal(0, spec.noise, size=(size, size, 3))
    image = background.copy()
    objects, taken = [], []
    for _ in range(rng.randint(1, spec.max_digits + 1)):
        side = rng.randint(spec.min_digit, spec.max_digit + 1)
        spot = _place(rng, taken, side, size)
        if spot is None:
            continue
        x, y = spot
        i = rng.randint(len(digits))
        ink = np.asarray(
            Image.fromarray((digits[i] / 16.0).astype(np.float32), mode="F").resize((side, side), Image.BILINEAR)
        ).clip(0, 1)
        colour = rng.uniform(150, 255, size=3)
        region = image[y : y + side, x : x + side]
        image[y : y + side, x : x + side] = region * (1 - ink[..., None]) + colour * ink[..., None]
        mask = np.zeros((size, size), dtype=bool)
        mask[y : y + side, x : x + side] = ink > INK_THRESHOLD
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        if len(rows) == 0:
            continue
        box = [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]
        taken.append((x, y, side, i))
        objects.append((int(labels[i]), box, mask))
    return np.clip(image, 0, 255).astype(np.uint8), objects


def write_split(root: str, split: str, count: int, spec: DemoSpec) -> str:
    """Draw `count` canvases of `split` into root/<split>/images and root/<split>/annotations.json."""
    digits, labels = digits_split(split)
    rng = np.random.RandomState(spec.seed * 2 + (split == "val"))
    os.makedirs(os.path.join(root, split, "images"), exist_ok=True)
    images, annotations = [], []
    for image_id in range(1, count + 1):
        pixels, objects = draw_canvas(rng, digits, labels, spec)
        name = f"{image_id:06d}.png"
        Image.fromarray(pixels).save(os.path.join(root, split, "images", name))
        images.append(dict(id=image_id, file_name=name, width=spec.canvas, height=spec.canvas))
        for label, box, mask in objects:
            annotations.append(
                dict(
                    id=len(annotations) + 1,
                    image_id=image_id,
                    category_id=label + 1,
                    bbox=box,
                    area=int(mask.sum()),
                    iscrowd=0,
                    segmentation=_rle(mask),
                )
            )
    path = os.path.join(root, split, "annotations.json")
    with open(path, "w") as f:
        json.dump(coco_json(images, annotations, CLASS_NAMES, info=dict(demo=asdict(spec))), f)
    return path


def _stored_spec(root: str) -> Any:
    try:
        with open(os.path.join(root, "val", "annotations.json")) as f:
            return json.load(f).get("info", {}).get("demo")
    except (OSError, ValueError):
        return None


def ensure_demo_data(root: str, spec: DemoSpec = DemoSpec()) -> str:
    """The demo set under `root`, drawn once: reused when its stored spec matches, otherwise drawn into a temp
    folder beside it and moved into place whole, so a killed run never leaves a half-written set behind."""
    root = os.path.abspath(root)
    if _stored_spec(root) == asdict(spec):
        return root
    parent = os.path.dirname(root)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(root)}.")
    try:
        write_split(tmp, "train", spec.train_images, spec)
        write_split(tmp, "val", spec.val_images, spec)  # written last: its presence marks a complete set
        if os.path.isdir(root):
            shutil.rmtree(root)
        os.replace(tmp, root)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp)
    return root


def split_paths(root: str, split: str) -> Tuple[str, str]:
    """(image folder, annotation file) of one split of a demo-layout dataset."""
    return os.path.join(root, split, "images"), os.path.join(root, split, "annotations.json")
