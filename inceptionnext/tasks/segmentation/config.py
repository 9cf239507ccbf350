"""Segmentation's settings: its keys (crops, rescaling, decode head, sliding-window and multi-scale test, the digit
scenes demo), its datasets, and what it reports (mIoU picks the best checkpoint); it trains by iterations, as
mmsegmentation's recipes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from ...train.config import TrainConfig, dataset_key, key, task_key
from ...train.task import TaskSettings

DATASETS = {
    "ade20k": "ADE20K (ADEChallengeData2016) under data_dir",
    "masks": "images/ and masks/ folders per split under data_dir",
    "digit_scenes": "scenes of handwritten digits, generated",
}


@dataclass
class SegmentationConfig(TrainConfig):
    """A segmentation run's keys: `TrainConfig`'s and the ones below, each with its help text
    (`inceptionnext train --task segmentation --help` lists them)."""

    task: str = task_key("segmentation")
    dataset: str = dataset_key(DATASETS)
    crop_size: int = key(512, "training crop (padded with label 255 where the image is smaller)", "[8, 8192]")
    base_size: Optional[Tuple[int, ...]] = key(
        None, "(long, short) keep-ratio scale of train ratios and test resize", "[1, 16384]"
    )
    seg_scale: Optional[Tuple[float, float]] = key(
        (0.5, 2.0), "random rescale ratio range; null: no rescale", "(0, 100]"
    )
    cat_max_ratio: float = key(0.75, "redraw crops where one class covers more than this share", "(0, 1]")
    reduce_zero_label: bool = key(False, "label 0 -> 255 (ignored), others minus one (ADE20K)")
    aux_weight: float = key(0.4, "loss weight of the auxiliary FCN head (UperNet); 0 builds none", "[0, 100]")
    head_channels: Optional[int] = key(
        None, "decode head width; null: the paper's (UperNet 512, FPN 256)", "[1, 65536]"
    )
    test_mode: str = key("whole", "whole, or slide (crop_size windows every test_stride pixels)", ("whole", "slide"))
    test_stride: Optional[int] = key(None, "null: two thirds of crop_size (341 at 512)", "[1, 8192]")
    test_scales: Tuple[float, ...] = key((1.0,), "multi-scale test ratios, e.g. 0.5,0.75,1.0,1.25,1.5,1.75", "(0, 100]")
    test_flip: bool = key(False, "also average the horizontally flipped input")
    overlays: int = key(4, "val images drawn as image | ground truth | prediction after each round", "[0, 1000]")
    scene_counts: Tuple[int, int] = key((4000, 300), "digit_scenes: train and val scenes", "[1, 10000000]")
    scene_digits: Tuple[int, int] = key(
        (2, 3), "digit_scenes: fewest and most digits per scene (as many as fit)", "[1, 16]"
    )
    digit_scale: Tuple[float, float] = key(
        (3.5, 4.0), "digit_scenes: digit side, a multiple of its 8 px glyph", "[1, 64]"
    )


SETTINGS = TaskSettings(
    config=SegmentationConfig,
    metrics=("loss", "miou", "macc", "acc"),
    best_metric="miou",
    best_label="mIoU",
    epoch_runs=False,
    iteration_runs=True,
)
