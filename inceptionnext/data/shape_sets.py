"""Generated small ImageFolders of simple shapes that vary the way one's own photos do: to check what a
small-data recipe gives on sets it was not tuned on.

Each image has one object of its class on a random background (a flat colour, a gradient, or coarse noise), in a
random colour (shape alone tells the class), size, rotation and position, including near the image's edges.
Images have mixed sizes and aspect ratios (up to ``max_aspect``:1, wide and tall) and are written as JPEG or PNG.

    python -m inceptionnext.data.shape_sets set_b --preset b
    python -m inceptionnext.data.shape_sets mine --classes 5 --train 40 --val 15 --max-aspect 2.5
"""

from __future__ import annotations

import argparse
import math
import os
from typing import Dict, Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "cross", "stripes", "triangle", "square", "ring", "star", "diamond", "hexagon", "crescent")

# four sets unlike each other: class count, images per class, image sizes and shapes, JPEG share
PRESETS: Dict[str, Dict] = {
    "a": dict(classes=4, train=60, val=20, min_side=48, max_side=128, max_aspect=2.5, jpeg=0.5, seed=11),
    "b": dict(classes=6, train=40, val=15, min_side=40, max_side=160, max_aspect=2.0, jpeg=0.3, seed=12),
    "c": dict(classes=3, train=150, val=30, min_side=32, max_side=96, max_aspect=3.0, jpeg=0.7, seed=13),
    "d": dict(classes=10, train=30, val=12, min_side=48, max_side=112, max_aspect=1.8, jpeg=0.5, seed=14),
}


def _polygon(cx: float, cy: float, r: float, n: int, start: float = -math.pi / 2, inner: float = 1.0):
    """n points (2n alternating with `inner` x r for a star) around (cx, cy)."""
    k = 2 * n if inner != 1.0 else n
    return [
        (
            cx + (r if i % 2 == 0 or inner == 1.0 else r * inner) * math.cos(start + 2 * math.pi * i / k),
            cy + (r if i % 2 == 0 or inner == 1.0 else r * inner) * math.sin(start + 2 * math.pi * i / k),
        )
        for i in range(k)
    ]


def _draw_mask(cls: str, d: ImageDraw.ImageDraw, cx: float, cy: float, r: float, rng: np.random.RandomState):
    if cls == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    elif cls == "ring":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        q = r * rng.uniform(0.45, 0.65)
        d.ellipse([cx - q, cy - q, cx + q, cy + q], fill=0)
    elif cls == "cross":
        w = r * rng.uniform(0.25, 0.4)
        d.rectangle([cx - r, cy - w, cx + r, cy + w], fill=255)
        d.rectangle([cx - w, cy - r, cx + w, cy + r], fill=255)
    elif cls == "stripes":
        bars = int(rng.randint(3, 5))
        step = 2 * r / (2 * bars - 1)
        for b in range(bars):
            x0 = cx - r + 2 * b * step
            d.rectangle([x0, cy - r, x0 + step, cy + r], fill=255)
    elif cls == "square":
        d.rectangle([cx - 0.8 * r, cy - 0.8 * r, cx + 0.8 * r, cy + 0.8 * r], fill=255)
    elif cls == "triangle":
        d.polygon(_polygon(cx, cy, r, 3), fill=255)
    elif cls == "diamond":
        d.polygon([(cx, cy - r), (cx + 0.6 * r, cy), (cx, cy + r), (cx - 0.6 * r, cy)], fill=255)
    elif cls == "hexagon":
        d.polygon(_polygon(cx, cy, r, 6), fill=255)
    elif cls == "star":
        d.polygon(_polygon(cx, cy, r, 5, inner=0.42), fill=255)
    elif cls == "crescent":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        off = r * rng.uniform(0.35, 0.55)
        d.ellipse([cx - r + off, cy - r - off * 0.3, cx + r + off, cy + r - off * 0.3], fill=0)
    else:
        raise ValueError(f"unknown shape {cls!r}; the shapes are {', '.join(SHAPES)}")


def _background(rng: np.random.RandomState, w: int, h: int) -> np.ndarray:
    kind = rng.randint(3)
    a = rng.randint(0, 256, 3).astype(np.float32)
    if kind == 0:  # a flat colour
        return np.broadcast_to(a, (h, w, 3)).copy()
    if kind == 1:  # a gradient between two colours, in a random direction
        b = rng.randint(0, 256, 3).astype(np.float32)
        angle = rng.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        t = (xx * math.cos(angle) + yy * math.sin(angle)) / max(w, h)
        t = (t - t.min()) / max(1e-6, t.max() - t.min())
        return a + (b - a) * t[..., None]
    coarse = rng.randint(0, 256, (max(2, h // 12), max(2, w // 12), 3)).astype(np.uint8)  # blotchy noise
    return np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC)).astype(np.float32) * 0.6 + a * 0.4


def draw_object(cls: str, width: int, height: int, rng: Optional[np.random.RandomState] = None) -> Image.Image:
    """One RGB image, width x height, of a `cls` shape (one of SHAPES) on a random background.

    Args:
        cls: one of SHAPES.
        width: the image width in pixels.
        height: the image height in pixels.
        rng: the random state to draw from; None for a fresh one.

    Returns:
        The image.

    Raises:
        ValueError: `cls` is not one of SHAPES.
    """
    rng = rng or np.random.RandomState()
    bg = _background(rng, width, height)
    s = 4  # drawn at 4x and shrunk: smooth edges
    layer = Image.new("L", (width * s, height * s), 0)
    side = min(width, height) * s
    r = rng.uniform(0.22, 0.45) * side
    cx, cy = rng.uniform(r, width * s - r), rng.uniform(r, height * s - r)
    _draw_mask(cls, ImageDraw.Draw(layer), cx, cy, r, rng)
    if cls not in ("circle", "ring"):
        layer = layer.rotate(rng.uniform(0, 360), resample=Image.BILINEAR, center=(cx, cy))
    mask = np.asarray(layer.resize((width, height), Image.BILINEAR)).astype(np.float32)[..., None] / 255.0
    colour = rng.randint(0, 256, 3).astype(np.float32)
    while np.abs(colour - bg.mean(axis=(0, 1))).sum() < 150:  # far enough from the background to be seen
        colour = rng.randint(0, 256, 3).astype(np.float32)
    px = bg * (1 - mask) + colour * mask + rng.normal(0, rng.uniform(2, 10), (height, width, 3))
    return Image.fromarray(np.clip(px, 0, 255).astype(np.uint8))


def make_shape_set(
    root: str,
    classes: int = 4,
    train: int = 60,
    val: int = 20,
    min_side: int = 48,
    max_side: int = 128,
    max_aspect: float = 2.5,
    jpeg: float = 0.5,
    seed: int = 0,
    shapes: Sequence[str] = SHAPES,
) -> Dict[str, int]:
    """Write root/{train,val}/<shape>/NNNN.{png,jpg} for the first `classes` shapes; returns images per split.
    Each image's shorter side is drawn in [min_side, max_side], its aspect in [1, max_aspect] (wide or tall).

    Args:
        root: the folder to write into.
        classes: how many of `shapes` to use, from the first.
        train: training images per class.
        val: validation images per class.
        min_side: the smallest shorter side in pixels.
        max_side: the largest shorter side in pixels.
        max_aspect: the largest ratio of the longer side to the shorter.
        jpeg: the share of images written as JPEG (the rest PNG).
        seed: the random seed; the same seed writes the same images.
        shapes: the shapes to draw from.

    Returns:
        {'train': count, 'val': count}.

    Raises:
        ValueError: `classes` is outside [2, len(shapes)], or a shape is not one of SHAPES.
    """
    if not 2 <= classes <= len(shapes):
        raise ValueError(f"classes must be in [2, {len(shapes)}], got {classes}")
    rng = np.random.RandomState(seed)
    counts = {}
    for split, n in (("train", train), ("val", val)):
        for cls in shapes[:classes]:
            folder = os.path.join(root, split, cls)
            os.makedirs(folder, exist_ok=True)
            for i in range(n):
                short = int(rng.randint(min_side, max_side + 1))
                long = int(round(short * rng.uniform(1.0, max_aspect)))
                w, h = (long, short) if rng.rand() < 0.5 else (short, long)
                img = draw_object(cls, w, h, rng)
                if rng.rand() < jpeg:
                    img.save(os.path.join(folder, f"{i:04d}.jpg"), quality=int(rng.randint(70, 96)))
                else:
                    img.save(os.path.join(folder, f"{i:04d}.png"))
        counts[split] = n * classes
    return counts


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`python -m inceptionnext.data.shape_sets`: write a set (a preset or one's own) and say what was written.

    Args:
        argv: the command line; None reads `sys.argv`.

    Returns:
        The exit status, 0.
    """
    p = argparse.ArgumentParser(
        prog="python -m inceptionnext.data.shape_sets",
        allow_abbrev=False,
        description="Write a generated ImageFolder of shapes in random colours, sizes, positions and backgrounds.",
    )
    p.add_argument("root", help="folder to write train/ and val/ into")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None, help="one of the four reference sets")
    p.add_argument("--classes", type=int, default=None, help=f"shapes, the first N of {', '.join(SHAPES)}")
    p.add_argument("--train", type=int, default=None, help="training images per class")
    p.add_argument("--val", type=int, default=None, help="validation images per class")
    p.add_argument("--max-aspect", type=float, default=None, help="widest aspect ratio (wide or tall)")
    p.add_argument("--seed", type=int, default=None, help="random seed")
    a = p.parse_args(argv)
    kw = dict(PRESETS[a.preset] if a.preset else PRESETS["a"])
    for name in ("classes", "train", "val", "max_aspect", "seed"):
        if getattr(a, name) is not None:
            kw[name] = getattr(a, name)
    counts = make_shape_set(a.root, **kw)
    print(f"wrote {counts['train']} train / {counts['val']} val images of {kw['classes']} shapes to {a.root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
