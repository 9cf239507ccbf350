"""Classification's settings: its keys (timm's augmentation, mixup, label smoothing, dropout), its datasets, and
what it reports (top-1 picks the best checkpoint); it trains by epochs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from ...train.config import INTERPOLATIONS, TrainConfig, dataset_key, key, task_key
from ...train.task import TaskSettings
from .recipe import plan_from_data

DATASETS = {
    "folder": "an ImageFolder with train/ and val/ under data_dir",
    "digits": "scikit-learn's handwritten digits, built in",
}


@dataclass
class ClassificationConfig(TrainConfig):
    """A classification run's keys: `TrainConfig`'s and the ones below, each with its help text
    (`inceptionnext train --task classification --help` lists them)."""

    task: str = task_key("classification")
    dataset: str = dataset_key(DATASETS)
    drop: float = key(0.0, "dropout before the classifier", "[0, 1)")
    bad_images: str = key(
        "fail", "unreadable images: fail (an error naming the file) or skip (and count them)", ("fail", "skip")
    )
    train_interpolation: str = key(
        "random", "RandomResizedCrop's resize in training (timm's --train-interpolation)", INTERPOLATIONS
    )

    # --- augmentation (timm)
    scale: Tuple[float, float] = key((0.08, 1.0), "RandomResizedCrop area range", "(0, 1]")
    ratio: Tuple[float, float] = key((3 / 4, 4 / 3), "RandomResizedCrop aspect ratio range", "(0, 100]")
    color_jitter: float = key(0.4, "color jitter strength (ignored when aa is set)", "[0, 10]")
    aa: Optional[str] = key(None, "timm auto-augment string, e.g. rand-m9-mstd0.5-inc1; null: none")
    reprob: float = key(0.0, "random erasing probability", "[0, 1]")
    remode: str = key("pixel", "random erasing fill", ("const", "rand", "pixel"))
    recount: int = key(1, "random erasing count", "[1, 100]")
    mixup: float = key(0.0, "mixup alpha; 0: off", "[0, 100]")
    cutmix: float = key(0.0, "cutmix alpha; 0: off", "[0, 100]")
    mixup_prob: float = key(1.0, "probability of mixup or cutmix per batch", "[0, 1]")
    mixup_switch_prob: float = key(0.5, "probability of cutmix instead of mixup when both are on", "[0, 1]")
    mixup_mode: str = key("batch", "how mixup parameters are drawn", ("batch", "pair", "elem"))
    smoothing: float = key(0.1, "label smoothing", "[0, 1)")

    # --- one's own images: unequal class sizes, images that are not square
    class_balance: str = key(
        "none",
        "unequal class sizes: sampler (draw every class equally often) or loss (weight each class's loss by "
        "n_images / (n_classes x its images)); none: as the data comes",
        ("none", "sampler", "loss"),
    )
    crop_mode: Optional[str] = key(
        None,
        "how an image becomes a square input, in training and evaluation (recorded for predict, validate and "
        "export): center (resize the shorter side, cut a centre square: parts of wide or tall images are lost), "
        "squash (resize the whole image to a square) or border (resize the longer side, pad to a square); "
        "null: the model's own (center)",
        ("center", "squash", "border"),
    )
    adapt_to_data: bool = key(
        False,
        "choose the keys a run leaves unset from the training images: img_size from their sizes, epochs from the "
        "class count (enough updates), crops, colour jitter and RandAugment from the images per class; the run's "
        "first lines say what was chosen and why (the small-data recipes set it)",
    )


SETTINGS = TaskSettings(
    config=ClassificationConfig,
    metrics=("loss", "top1", "top5"),
    best_metric="top1",
    best_label="top-1",
    plan_from_data=plan_from_data,
)
