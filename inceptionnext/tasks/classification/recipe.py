"""A small-data recipe chosen from the training images (``adapt_to_data: true``).

A recipe tuned on one data set says little about the next one: how many updates a run needs grows with the
classes to tell apart, the input size that serves the images depends on how large they are, and augmentation that
helps thousands of images per class slows a network that sees thirty. So the small recipes leave those keys unset
and this module fills them from a look at the training folder (image headers only, no decoding). A key set in a
config file, on the command line or in `make_config` is never changed, and the run's first lines say what was
chosen and why.
"""

from __future__ import annotations

import math
import os
import random
import statistics
from dataclasses import dataclass
from typing import Any, Collection, Dict, List, Tuple

from PIL import Image

from ...data.folders import DataError, _split_dir, image_folder

SAMPLE = 4000  # image headers read at most (a seeded sample of a larger set)
OFF_SQUARE = 4 / 3  # an image more than this far from square loses part of itself to a centre crop


@dataclass(frozen=True)
class ImageSetSummary:
    """What the recipe reads from a training folder.

    Args:
        images: training images.
        classes: class folders.
        per_class: the median number of images in a class.
        longer_side: the median longer side of the images, in pixels.
        shorter_side: the median shorter side.
        off_square: the fraction of images more than 4:3 off square.
    """

    images: int
    classes: int
    per_class: float
    longer_side: float
    shorter_side: float
    off_square: float


def summarize_image_folder(train_dir: str, sample: int = SAMPLE, seed: int = 0) -> ImageSetSummary:
    """Count a training folder's images per class and read the sizes of (a seeded sample of) them.

    Args:
        train_dir: the folder of class folders.
        sample: image headers read at most.
        seed: picks the sample of a larger set.

    Returns:
        The summary; images whose header cannot be read are left out of the sizes (training names them).

    Raises:
        DataError: the folder is missing or holds no images, or no image's header can be read.
    """
    samples = image_folder(train_dir).reader.samples
    counts: Dict[int, int] = {}
    for _, target in samples:
        counts[target] = counts.get(target, 0) + 1
    paths = [path for path, _ in samples]
    if len(paths) > sample:
        paths = random.Random(seed).sample(paths, sample)
    sizes = []
    for path in paths:
        try:
            with Image.open(path) as im:
                sizes.append(im.size)
        except (OSError, ValueError, Image.DecompressionBombError):
            continue
    if not sizes:
        raise DataError(f"{train_dir}: none of its {len(paths)} images could be read to size the recipe")
    longer = [max(w, h) for w, h in sizes]
    shorter = [max(1, min(w, h)) for w, h in sizes]
    return ImageSetSummary(
        images=len(samples),
        classes=len(counts),
        per_class=statistics.median(counts.values()),
        longer_side=statistics.median(longer),
        shorter_side=statistics.median(shorter),
        off_square=sum(a / b > OFF_SQUARE for a, b in zip(longer, shorter)) / len(sizes),
    )


def plan_recipe(
    summary: ImageSetSummary, batch_size: int, crop_mode: str, from_weights: bool, processes: int = 1
) -> Dict[str, Tuple[Any, str]]:
    """The recipe's choices for a training set, each with the reason the run prints.

    - ``img_size``: the median image side that the crop keeps (the longer one when letterboxing), to a multiple
      of 16 within 32-64 px from scratch (a small set teaches no fine detail, and each doubling of the side
      quarters the updates a minute) or 32-224 px from weights (they were learnt on detail).
    - ``epochs``: enough for 150 updates per class from scratch (600-1500), 75 from weights (300-750).
    - ``scale``, ``color_jitter``, ``aa``: crops that keep most of the object and no colour change below 300
      images per class (there, colour jitter and RandAugment slowed learning in runs of 600-1500 updates); wider
      crops and colour jitter up to 1000; RandAugment and timm's crops from 1000 on.

    Args:
        summary: the training folder, as `summarize_image_folder` read it.
        batch_size: images per process per step.
        crop_mode: the run's crop mode (border reads the longer side).
        from_weights: the run starts from pretrained weights or a weight file.
        processes: processes sharing each step.

    Returns:
        {key: (value, reason)}.
    """
    side = summary.longer_side if crop_mode == "border" else summary.shorter_side
    which = "longer" if crop_mode == "border" else "shorter"
    top = 224 if from_weights else 64
    rounded = max(32, 16 * math.floor(side / 16 + 0.5))  # halves round up
    size = min(top, rounded)
    capped = f", at most {top} px {'from weights' if from_weights else 'from scratch'}" if rounded > top else ""
    per_update, floor, ceiling = (75, 300, 750) if from_weights else (150, 600, 1500)
    updates = min(ceiling, max(floor, per_update * summary.classes))
    per_epoch = max(1, summary.images // (batch_size * processes))
    epochs = max(1, math.ceil(updates / per_epoch))
    n = summary.per_class
    if n < 300:
        scale, jitter, aa, why = (0.6, 1.0), 0.0, None, "crops keep most of the object, colours as they are"
    elif n < 1000:
        scale, jitter, aa, why = (0.35, 1.0), 0.4, None, "wider crops and colour jitter"
    else:
        scale, jitter, aa, why = (0.08, 1.0), 0.4, "rand-m9-mstd0.5-inc1", "RandAugment and timm's crops"
    images = f"{n:g} images per class: {why}"
    return {
        "img_size": (size, f"the images' median {which} side is {side:g} px{capped}"),
        "epochs": (
            epochs,
            f"{updates} updates for {summary.classes} classes at {per_epoch} updates per epoch",
        ),
        "scale": (scale, images),
        "color_jitter": (jitter, images),
        "aa": (aa, images),
    }


def plan_from_data(cfg, set_keys: Collection[str]) -> Tuple[Dict[str, Any], List[str]]:
    """The keys `adapt_to_data` fills for a classification run: those of `plan_recipe` that `set_keys` leaves
    unset, read from the run's training folder (nothing when adapt_to_data is off).

    Args:
        cfg: the run's config (dataset folder).
        set_keys: the keys given in a config file, on the command line or to `make_config`.

    Returns:
        ({key: value} to set, one line per key saying what was chosen and why).

    Raises:
        DataError: the dataset is not an image folder, or its training folder cannot be read.
    """
    if not cfg.adapt_to_data:
        return {}, []
    if cfg.dataset != "folder":
        raise DataError(
            f"adapt_to_data reads the training images of an image folder (dataset: folder); dataset "
            f"{cfg.dataset} has none to read: set adapt_to_data: false"
        )
    summary = summarize_image_folder(_split_dir(cfg.data_dir, cfg.train_split), seed=cfg.seed)
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    from_weights = bool(cfg.pretrained or cfg.weights)
    plan = plan_recipe(summary, cfg.batch_size, cfg.crop_mode or "center", from_weights, processes)
    chosen = {k: v for k, (v, _) in plan.items() if k not in set_keys}
    lines = [f"{k}: {_show(v)} ({why})" for k, (v, why) in plan.items() if k in chosen]
    return chosen, lines


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(f"{x:g}" for x in value) + "]"
    return "null" if value is None else str(value)
