"""Detection's settings: its keys (backbone freezing, FPN, anchors, resizing, SSD-style augmentation, the digits
demo), its datasets, and what it reports (box mAP picks the best checkpoint); it trains by epochs. The model key
names a detector, such as retinanet_inceptionnext_a_fpn."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

from ...train.config import TrainConfig, dataset_key, key, task_key
from ...train.task import TaskSettings

# mAP figures are logged in percent, like top-1 and mIoU (mask models add segm_ of the first three)
METRICS = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_100")
DATASETS = {
    "coco": "images and one COCO annotations JSON per split under data_dir",
    "digits": "scenes of handwritten digits with their boxes, generated",
}


@dataclass
class DetectionConfig(TrainConfig):
    """A detection run's keys: `TrainConfig`'s and the ones below, each with its help text
    (`inceptionnext train --task detection --help` lists them)."""

    task: str = task_key("detection")
    dataset: str = dataset_key(DATASETS)
    backbone_weights: Optional[str] = key(None, "classification weights for the backbone, any format the loader reads")
    frozen_stages: int = key(-1, "-1 trains all; 0 freezes the stem; k also the first k stages", "[-1, 4]")
    frozen_bn: bool = key(False, "the backbone's BatchNorm layers become FrozenBatchNorm2d")
    fpn_channels: int = key(256, "FPN output channels", "[1, 4096]")
    anchor_sizes: Optional[Tuple[int, ...]] = key(
        None, "base anchor size of each of the 5 levels; null: the detector's", "[1, 100000]"
    )
    min_size: Tuple[int, ...] = key(
        (800,),
        "the detector resizes the shorter side to this (one of them per image in training: multi-scale)",
        "[8, 16384]",
    )
    max_size: int = key(1333, "... and the longer side to at most max_size", "[8, 16384]")
    zoom_out: float = key(0.0, "probability of SSD's zoom-out (image on a canvas up to 2x larger)", "[0, 1]")
    iou_crop: bool = key(False, "SSD's IoU-keeping random crop")
    aspect_grouping: bool = key(True, "batches of all-landscape or all-portrait images")
    score_thresh: float = key(0.05, "detections below this score are dropped before evaluation", "[0, 1]")
    detector_kwargs: Dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "more torchvision detector arguments, e.g. {box_batch_size_per_image: 128}", "allowed": None},
    )
    demo_images: int = key(1000, "dataset digits: train canvases of the generated detection demo", "[1, 10000000]")
    vis_images: int = key(8, "val images drawn with their detections after each validation (0: none)", "[0, 1000]")


SETTINGS = TaskSettings(
    config=DetectionConfig,
    metrics=METRICS,
    best_metric="map",
    best_label="mAP",
)
