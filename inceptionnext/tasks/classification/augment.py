"""Keeps timm's RandAugment working as the recipes intend on every Pillow the project installs.

timm's increasing posterize (the ``inc1`` in ``rand-m9-mstd0.5-inc1``) asks for 0 kept bits when the sampled
magnitude reaches 10. Pillow up to 12 answered with an all-black image (its mask keeps no bit); Pillow 13
raises ``ValueError: bits must be between or equal to 1 and 8``, which ends the run on ~0.14% of images. The
official runs trained with the black image, so that is what 0 bits gives here, on every Pillow.
"""

from __future__ import annotations

from PIL import Image, ImageOps
from timm.data.auto_augment import NAME_TO_OP, AugmentOp

POSTERIZE_OPS = tuple(name for name in NAME_TO_OP if name.startswith("Posterize"))


def posterize(img: Image.Image, bits_to_keep: int, **_) -> Image.Image:
    """timm's posterize with Pillow 12's answer to 0 bits (a black image) instead of Pillow 13's error."""
    if bits_to_keep >= 8:
        return img
    if bits_to_keep >= 1:
        return ImageOps.posterize(img, int(bits_to_keep))
    return img.point(lambda _: 0)  # the mask of 0 kept bits clears every value


def fix_posterize(transform) -> int:
    """Swap timm's posterize for `posterize` in every RandAugment/AutoAugment op below `transform` (a
    torchvision Compose or any object holding ops); returns how many ops it changed."""
    changed, todo, seen = 0, [transform], set()
    while todo:
        t = todo.pop()
        if t is None or id(t) in seen:
            continue
        seen.add(id(t))
        if isinstance(t, AugmentOp):
            if t.name in POSTERIZE_OPS:
                t.aug_fn = posterize
                changed += 1
            continue
        for attr in ("transforms", "ops", "policy", "sub_policy"):
            children = getattr(t, attr, None)
            if isinstance(children, (list, tuple)):
                todo.extend(c for c in children)
        if isinstance(t, (list, tuple)):
            todo.extend(t)
    return changed
