"""Object detection and instance segmentation: COCO-format data (or the generated digits demo), torchvision's
detectors on the zoo backbones (models/detection.py), their own losses, COCO mAP from torchmetrics.

Everything else (config, checkpoints and exact resume, DDP, AMP, EMA, schedule, log, plot) is the engine's.
"""

from __future__ import annotations

import os
from typing import Any, Dict

import torch
import torch.nn as nn
from tqdm import tqdm

from ...data.folders import DataError
from ...models.detection import create_detector, parse_name
from ...train import distributed as dist_lib
from ...train.engine import TrainError, autocast_for
from ...train.task import Task, register_task
from ...utils.plots import save_figure
from ...utils.workers import capped_workers
from ...weights import CheckpointError, load_state_dict_file
from . import data as coco_lib
from .config import METRICS, SETTINGS
from .data import Augment, GroupedBatchSampler, aspect_ratio_groups, eval_transforms, train_transforms
from .draw import truth_and_detections_figure
from .evaluate import DetectionMAP
from .scenes import DemoSpec, ensure_demo_data, split_paths

COLUMNS = (
    ["epoch", "iter", "lr", "train_loss"]
    + [f"val_{k}" for k in METRICS]
    + [f"val_segm_{k}" for k in METRICS[:3]]
    + ["ema_val_map", "ema_val_map_50", "epoch_time_s"]
)


def data_paths(cfg, split: str):
    """(image folder, annotation file) for one split: COCO's own layout (annotations/instances_<split>.json
    beside <split>/), else the demo's (<split>/images and <split>/annotations.json)."""
    root = cfg.data_dir
    if root is None:
        raise DataError(
            "dataset coco needs data_dir: a folder with annotations/instances_<split>.json and "
            "<split>/, or <split>/images and <split>/annotations.json"
        )
    coco_ann = os.path.join(root, "annotations", f"instances_{split}.json")
    if os.path.isfile(coco_ann):
        return os.path.join(root, split), coco_ann
    images, ann = split_paths(root, split)
    if not os.path.isfile(ann):
        raise DataError(f"no annotations for split {split!r} under {root}: looked for {coco_ann} and {ann}")
    return images, ann


class EpochLoader:
    """A DataLoader whose batch sampler the engine can reach as `.sampler` (to call set_epoch on it)."""

    def __init__(self, loader: torch.utils.data.DataLoader, batch_sampler):
        self.loader, self.sampler = loader, batch_sampler

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        return iter(self.loader)


@register_task
class DetectionTask(Task):
    """Object detection (and instance segmentation) with torchvision's detectors on a zoo backbone (COCO mAP
    picks the best checkpoint).

    Args:
        cfg: the run's `DetectionConfig`.
        env: the process's distributed environment.

    Raises:
        TrainError: `cfg.model` is not a detection model.
    """

    name = "detection"
    settings = SETTINGS
    log_columns = COLUMNS
    plot_metrics = (
        ("val_map", "mAP"),
        ("val_map_50", "mAP@0.5"),
        ("val_segm_map", "mask mAP"),
        ("ema_val_map", "mAP (EMA)"),
    )

    def __init__(self, cfg, env):
        super().__init__(cfg, env)
        try:
            self.spec, _ = parse_name(cfg.model)
        except KeyError as e:
            raise TrainError(e.args[0]) from None
        self.masks = self.spec.masks

    # ------------------------------------------------------------------------------------------- data
    def build_datasets(self):
        cfg = self.cfg
        if cfg.dataset == "digits":
            root = cfg.data_dir or os.path.join(cfg.output, "data", "digits_detection")
            if self.env.is_main:
                ensure_demo_data(root, DemoSpec(train_images=cfg.demo_images, seed=0))
            dist_lib.barrier(self.env)
            train_paths, val_paths = split_paths(root, "train"), split_paths(root, "val")
        elif cfg.dataset == "coco":
            train_paths, val_paths = data_paths(cfg, cfg.train_split), data_paths(cfg, cfg.val_split)
        else:
            raise DataError(
                f"task detection reads dataset coco (COCO-format JSON) or digits (the generated "
                f"demo), not {cfg.dataset!r}"
            )
        aug = Augment(hflip=cfg.hflip, photometric=cfg.photometric, zoom_out=cfg.zoom_out, iou_crop=cfg.iou_crop)
        train = coco_lib.CocoDetectionSet(*train_paths, transforms=train_transforms(aug), masks=self.masks)
        val = coco_lib.CocoDetectionSet(*val_paths, transforms=eval_transforms(), masks=self.masks, keep_crowd=True)
        if val.class_names != train.class_names:
            raise DataError(
                f"the val categories {val.class_names} differ from the train categories {train.class_names}"
            )
        self.vis_set = val
        return train, val, train.num_classes

    def build_loaders(self, train_set, val_set, data_cfg, num_classes, round_sampler):
        cfg, env = self.cfg, self.env
        base = torch.utils.data.DistributedSampler(
            train_set, num_replicas=env.world_size, rank=env.rank, shuffle=True, seed=cfg.seed, drop_last=True
        )
        groups = aspect_ratio_groups(train_set.aspect_ratios()) if cfg.aspect_grouping else [0] * len(train_set)
        batches = GroupedBatchSampler(base, groups, cfg.batch_size, seed=cfg.seed)
        common = dict(
            num_workers=capped_workers(cfg.workers),
            collate_fn=coco_lib.collate,
            pin_memory=cfg.pin_memory and self.device.type == "cuda",
            persistent_workers=capped_workers(cfg.workers) > 0,
        )
        train = EpochLoader(torch.utils.data.DataLoader(train_set, batch_sampler=batches, **common), batches)
        share = torch.utils.data.Subset(val_set, list(range(env.rank, len(val_set), env.world_size)))
        val = torch.utils.data.DataLoader(share, batch_size=cfg.batch_size, shuffle=False, **common)
        return train, val

    # ------------------------------------------------------------------------------------------- model
    def detector_args(self, num_classes: int) -> Dict[str, Any]:
        """What rebuilds this detector (also stored in every checkpoint, for `inceptionnext detect`).

        Args:
            num_classes: the object classes.

        Returns:
            `create_detector`'s arguments: name, num_classes, fpn_channels, anchor_sizes and the detector's kwargs.
        """
        cfg = self.cfg
        score_key = "box_score_thresh" if self.spec.two_stage else "score_thresh"
        return dict(
            name=cfg.model,
            num_classes=num_classes,
            fpn_channels=cfg.fpn_channels,
            anchor_sizes=list(cfg.anchor_sizes) if cfg.anchor_sizes else None,
            kwargs=dict(
                cfg.detector_kwargs, min_size=list(cfg.min_size), max_size=cfg.max_size, **{score_key: cfg.score_thresh}
            ),
        )

    def build_model(self, num_classes: int) -> nn.Module:
        cfg = self.cfg
        args = self.detector_args(num_classes)
        try:
            model = create_detector(
                cfg.model,
                num_classes,
                backbone_weights=cfg.backbone_weights,
                pretrained_backbone=cfg.pretrained,
                frozen_stages=cfg.frozen_stages,
                frozen_bn=cfg.frozen_bn,
                fpn_channels=cfg.fpn_channels,
                anchor_sizes=cfg.anchor_sizes,
                drop_path_rate=cfg.drop_path,
                **dict(args["kwargs"], min_size=tuple(cfg.min_size)),
            )
        except (KeyError, ValueError, FileNotFoundError) as e:
            raise TrainError(f"cannot build {cfg.model}: {e}") from e
        if cfg.weights:  # a whole trained detector (fine-tuning it further)
            try:
                model.load_state_dict(load_state_dict_file(cfg.weights))
            except (RuntimeError, CheckpointError) as e:
                raise TrainError(
                    f"weights {cfg.weights} do not fit {cfg.model} with {num_classes} classes: {str(e).splitlines()[0]}"
                ) from e
            model.start_note = f"the whole detector from the weight file {cfg.weights}"
        else:
            body = (
                f"backbone from the weight file {cfg.backbone_weights}"
                if cfg.backbone_weights
                else "backbone from its pretrained weights"
                if cfg.pretrained
                else "backbone initialised at random"
            )
            model.start_note = f"{body}; the {num_classes}-class detection heads initialised at random"
        return model

    def data_config(self, model):
        t = model.transform
        return {
            "input_size": (3, min(t.min_size), min(t.min_size)),
            "min_size": list(t.min_size),
            "max_size": t.max_size,
            "mean": tuple(t.image_mean),
            "std": tuple(t.image_std),
        }

    # ------------------------------------------------------------------------------------------- steps
    def _to_device(self, images, targets):
        images = [im.to(self.device, non_blocking=True) for im in images]
        targets = [
            {k: (v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in t.items()}
            for t in targets
        ]
        return images, targets

    def train_loss(self, model, batch):
        images, targets = self._to_device(*batch)
        losses = model(images, targets)
        return sum(losses.values()), len(images)

    @torch.no_grad()
    def evaluate(self, model, loader, desc="val"):
        cfg, env = self.cfg, self.env
        was_training = model.training
        model.eval()
        metric = DetectionMAP(masks=self.masks, sync=env.distributed)
        count = 0
        for images, targets in tqdm(
            loader, desc=desc, leave=False, dynamic_ncols=True, disable=None if (cfg.progress and env.is_main) else True
        ):
            images, _ = self._to_device(images, [])
            with autocast_for(cfg.amp, self.device):
                outputs = model(images)
            metric.update(outputs, targets)
            count += len(images)
        model.train(was_training)
        total = int(dist_lib.all_reduce_sum(torch.tensor(float(count), device=self.device), env).item())
        if total == 0:
            raise TrainError("the validation set is empty")
        values = metric.compute()
        out = {k: 100.0 * values[k] for k in METRICS if k in values}
        if self.masks:
            out.update({f"segm_{k}": 100.0 * values[f"segm_{k}"] for k in METRICS if f"segm_{k}" in values})
        out["count"] = total
        return out

    def describe(self, row):
        text = f"mAP {row['val_map']:.2f} | mAP@0.5 {row['val_map_50']:.2f} | mAP@0.75 {row['val_map_75']:.2f}"
        if "val_segm_map" in row:
            text += f" | mask mAP {row['val_segm_map']:.2f} | mask mAP@0.5 {row['val_segm_map_50']:.2f}"
        return text

    def checkpoint_record(self, data_cfg, train_set):
        return {
            "data_config": dict(data_cfg),
            "task": self.name,
            "class_names": list(train_set.class_names),
            "detector": self.detector_args(train_set.num_classes),
        }

    def extra_outputs(self, out_dir):
        path = os.path.join(out_dir, "detections.png")
        return {"detections": path} if os.path.isfile(path) else {}

    def after_validation(self, model, out_dir, epoch):
        """A picture of the first val images with the best weights' detections: <run>/detections.png."""
        n = min(self.cfg.vis_images, len(self.vis_set))
        if n == 0 or not self.cfg.plot:
            return
        save_figure(self.detections_figure(model, epoch), os.path.join(out_dir, "detections.png"))

    def detections_figure(self, model, epoch: int):
        """The figure of detections.png: the first `vis_images` val images, ground truth beside detections.

        Args:
            model: the detector.
            epoch: the round, for the title.

        Returns:
            The matplotlib figure.
        """
        samples = [self.vis_set[i] for i in range(min(self.cfg.vis_images, len(self.vis_set)))]
        images = [s[0] for s in samples]
        was_training = model.training
        model.eval()
        with torch.no_grad():
            outputs = model([im.to(self.device) for im in images])
        model.train(was_training)
        when = f"iteration {epoch * self.cfg.eval_interval}" if self.cfg.iters is not None else f"epoch {epoch}"
        return truth_and_detections_figure(
            images,
            [s[1] for s in samples],
            outputs,
            self.vis_set.class_names,
            score_thresh=0.5,
            title=f"validation images after {when}",
        )
