"""A small generated ImageFolder of 3 visually distinct classes, to try the small-data recipes without a download.

Each image is a textured background with one object drawn at a random place, size and rotation, then noise:
``circle`` (a filled disc of a warm colour), ``stripes`` (a square of parallel bars of a cool colour) and
``cross`` (a plus sign of a green-ish colour). Colours vary within each class's hue range and backgrounds are random
greys with a faint gradient; ``grey`` > 0 draws a share of the objects in grey, so shape alone must tell them.

    python -m inceptionnext.data.shapes shapes --train 60 --val 20
    # -> shapes/train/<class>/*.png and shapes/val/<class>/*.png
"""

from __future__ import annotations

import argparse
import os
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("circle", "cross", "stripes")


def _colour(rng: np.random.RandomState, cls: str, background: int, grey: float) -> tuple:
    """A colour from the class's hue range, or with probability `grey` a grey well apart from the background's
    level (the shape stays plain to see, but colour no longer tells the class)."""
    if grey > 0 and rng.rand() < grey:
        v = background + (1 if background < 128 else -1) * int(rng.randint(70, 110))
        return (v, v, v)
    base = {"circle": (210, 70, 40), "cross": (60, 180, 70), "stripes": (50, 80, 210)}[cls]
    return tuple(int(np.clip(c + rng.randint(-45, 46), 0, 255)) for c in base)


def _background(rng: np.random.RandomState, size: int) -> Tuple[np.ndarray, int]:
    level = int(rng.randint(70, 190))
    ramp = np.linspace(-1.0, 1.0, size)[None, :] * rng.randint(0, 30)
    bg = np.repeat((level + ramp)[..., None], 3, axis=2) * np.ones((size, size, 1))
    return bg + rng.randint(-12, 13, size=3)[None, None, :], level  # a faint tint


def draw_shape(cls: str, size: int = 64, rng: Optional[np.random.RandomState] = None, grey: float = 0.0) -> Image.Image:
    """One RGB image of class `cls` (one of CLASSES), size x size pixels; `grey`: the chance it is drawn in grey.

    Args:
        cls: 'circle', 'cross' or 'stripes'.
        size: the image side in pixels.
        rng: the random state to draw from; None for a fresh one.
        grey: the chance the object is drawn in grey.

    Returns:
        The image.

    Raises:
        ValueError: `cls` is not one of CLASSES.
    """
    if cls not in CLASSES:
        raise ValueError(f"unknown class {cls!r}; the classes are {', '.join(CLASSES)}")
    rng = rng or np.random.RandomState()
    bg, level = _background(rng, size)
    img = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8))
    # draw at 4x and rotate, then shrink: smooth edges at any size
    s = 4 * size
    layer = Image.new("L", (s, s), 0)
    d = ImageDraw.Draw(layer)
    r = rng.uniform(0.18, 0.38) * s  # half the object's extent
    cx, cy = rng.uniform(r, s - r), rng.uniform(r, s - r)
    if cls == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    elif cls == "cross":
        w = r * rng.uniform(0.28, 0.42)
        d.rectangle([cx - r, cy - w, cx + r, cy + w], fill=255)
        d.rectangle([cx - w, cy - r, cx + w, cy + r], fill=255)
    else:
        bars = rng.randint(3, 5)
        step = 2 * r / (2 * bars - 1)
        for b in range(bars):
            x0 = cx - r + 2 * b * step
            d.rectangle([x0, cy - r, x0 + step, cy + r], fill=255)
    layer = layer.rotate(rng.uniform(0, 360), resample=Image.BILINEAR, center=(cx, cy))
    mask = layer.resize((size, size), Image.BILINEAR)
    img.paste(Image.new("RGB", (size, size), _colour(rng, cls, level, grey)), (0, 0), mask)
    px = np.asarray(img).astype(np.float32) + rng.normal(0, rng.uniform(4, 14), (size, size, 3))
    return Image.fromarray(np.clip(px, 0, 255).astype(np.uint8))


def make_shapes_folder(
    root: str,
    train: int = 60,
    val: int = 20,
    size: int = 64,
    seed: int = 0,
    classes: Sequence[str] = CLASSES,
    grey: float = 0.0,
) -> Dict[str, int]:
    """Write root/train/<class>/NNNN.png (`train` per class) and root/val/<class>/NNNN.png (`val` per class);
    returns the image count per split. The same seed writes the same images. `grey` > 0 draws that share of
    the objects in grey: a harder set, where shape alone must tell those apart.

    Args:
        root: the folder to write into.
        train: training images per class.
        val: validation images per class.
        size: image side in pixels.
        seed: the random seed.
        classes: the classes to draw.
        grey: the share of objects drawn in grey.

    Returns:
        {'train': count, 'val': count}.

    Raises:
        ValueError: a class is not one of CLASSES.
    """
    rng = np.random.RandomState(seed)
    counts = {}
    for split, n in (("train", train), ("val", val)):
        for cls in classes:
            folder = os.path.join(root, split, cls)
            os.makedirs(folder, exist_ok=True)
            for i in range(n):
                draw_shape(cls, size, rng, grey).save(os.path.join(folder, f"{i:04d}.png"))
        counts[split] = n * len(classes)
    return counts


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`python -m inceptionnext.data.shapes`: write the folder and say what was written.

    Args:
        argv: the command line; None reads `sys.argv`.

    Returns:
        The exit status, 0.
    """
    p = argparse.ArgumentParser(
        prog="python -m inceptionnext.data.shapes",
        allow_abbrev=False,
        description="Write a generated 3-class ImageFolder (circle, cross, stripes).",
    )
    p.add_argument("root", help="folder to write train/ and val/ into")
    p.add_argument("--train", type=int, default=60, help="training images per class (default 60)")
    p.add_argument("--val", type=int, default=20, help="validation images per class (default 20)")
    p.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--grey", type=float, default=0.0, help="share of objects drawn in grey, colour no cue (default 0)")
    a = p.parse_args(argv)
    counts = make_shapes_folder(a.root, a.train, a.val, a.size, a.seed, grey=a.grey)
    print(f"wrote {counts['train']} train / {counts['val']} val images of {', '.join(CLASSES)} to {a.root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
