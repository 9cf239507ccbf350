"""Semantic segmentation: ADE20K / mask folders / the digit scenes demo, UperNet or Semantic FPN, cross-entropy
(+ 0.4 x the auxiliary head's), mIoU. Iteration-based runs (``iters``) as mmsegmentation's recipes."""
from __future__ import annotations

import os
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from ...models.segmentation import IGNORE_INDEX, is_segmentation_model
from ..data import DataError
from ..digit_scenes import DigitScenes
from ..engine import TrainError
from ..seg_data import (ADE20K_CLASSES, EvalTransform, MaskFolderDataset, RoundSampler, collate_pairs, palette,
                        train_transform)
from ..seg_eval import evaluate_segmentation
from ...cpu_workers import capped_workers
from .base import Task


def read_class_names(data_dir: str, num_classes) -> List[str]:
    """<data_dir>/classes.txt (one name per line) if present, else the indices as names."""
    path = os.path.join(data_dir, "classes.txt")
    if os.path.isfile(path):
        with open(path) as f:
            names = [line.strip() for line in f if line.strip()]
        if num_classes is not None and len(names) != num_classes:
            raise DataError(f"{path} names {len(names)} classes but num_classes is {num_classes}")
        return names
    if num_classes is None:
        raise DataError(f"set num_classes for the mask folder {data_dir}, or list the class names in {path}")
    return [str(i) for i in range(num_classes)]


def build_seg_datasets(cfg):
    """(train, val, class names) for cfg.dataset; transforms are attached by the task."""
    if cfg.dataset == "digit_scenes":
        size = cfg.img_size or 64
        n_train, n_val = cfg.scene_counts
        design = dict(canvas=size, scale=tuple(cfg.digit_scale), digits_per_scene=tuple(cfg.scene_digits))
        return (DigitScenes("train", length=n_train, **design), DigitScenes("val", length=n_val, **design),
                list(DigitScenes.class_names))
    if cfg.dataset == "ade20k":
        names = list(ADE20K_CLASSES)
        splits = (cfg.train_split if cfg.train_split != "train" else "training",
                  cfg.val_split if cfg.val_split != "val" else "validation")
        sets = [MaskFolderDataset(cfg.data_dir, s, len(names), "images", "annotations", reduce_zero_label=True,
                                  class_names=names) for s in splits]
        return sets[0], sets[1], names
    if cfg.dataset == "masks":
        if not cfg.data_dir or not os.path.isdir(cfg.data_dir):
            raise DataError(f"segmentation data directory not found: {cfg.data_dir}")
        names = read_class_names(cfg.data_dir, cfg.num_classes)
        sets = [MaskFolderDataset(cfg.data_dir, s, len(names), "images", "masks", cfg.reduce_zero_label,
                                  class_names=names) for s in (cfg.train_split, cfg.val_split)]
        return sets[0], sets[1], names
    raise DataError(f"dataset {cfg.dataset!r} is not a segmentation dataset; use ade20k, masks or digit_scenes")


BACKGROUND_NAMES = ("background", "_background_", "bg", "backdrop")


def untinted_classes(names) -> Tuple[int, ...]:
    """The classes named background: left as the image in overlays (a tint over most of the picture would hide
    it), black in mask PNGs."""
    return tuple(i for i, n in enumerate(names or ()) if str(n).strip().lower() in BACKGROUND_NAMES)


def overlay(img: np.ndarray, mask: np.ndarray, colours: np.ndarray, alpha: float = 0.5,
            untinted: Sequence[int] = ()) -> np.ndarray:
    """The image with each labelled pixel blended with its class colour (ignored pixels, and those of the
    `untinted` classes, left as they are)."""
    out = img.astype(np.float32).copy()
    keep = mask != IGNORE_INDEX
    for c in untinted:
        keep &= mask != c
    out[keep] = (1 - alpha) * out[keep] + alpha * colours[np.clip(mask[keep], 0, len(colours) - 1)]
    return out.clip(0, 255).astype(np.uint8)


class SegmentationTask(Task):
    name = "segmentation"
    main_metric = "miou"
    metric_label = "mIoU"
    log_columns = ("epoch", "iter", "lr", "train_loss", "val_loss", "val_miou", "val_macc", "val_acc",
                   "ema_val_loss", "ema_val_miou", "ema_val_acc", "epoch_time_s", "skipped_images")
    plot_metrics = (("val_miou", "mIoU"), ("val_acc", "pixel acc."), ("ema_val_miou", "mIoU (EMA)"))

    def build_datasets(self):
        train, val, self.class_names = build_seg_datasets(self.cfg)
        return train, val, len(self.class_names)

    def build_model(self, num_classes: int) -> nn.Module:
        cfg = self.cfg
        if not is_segmentation_model(cfg.model):
            raise TrainError(f"task: segmentation needs a segmentation model (upernet_ or fpn_ before a zoo name, "
                             f"e.g. fpn_inceptionnext_t), not {cfg.model!r}")
        kwargs = dict(num_classes=num_classes, pretrained=cfg.pretrained, backbone_weights=cfg.weights,
                      drop_path_rate=cfg.drop_path, head_channels=cfg.head_channels)
        if cfg.model.startswith("upernet_"):
            kwargs["aux_head"] = cfg.aux_weight > 0
        try:
            model = timm.create_model(cfg.model, **kwargs)
        except Exception as e:
            src = cfg.weights or ("pretrained backbone" if cfg.pretrained else "random init")
            raise TrainError(f"cannot build {cfg.model!r} with {num_classes} classes from {src}: {e}") from e
        body = (f"backbone from the weight file {cfg.weights}" if cfg.weights else
                "backbone from its pretrained weights" if cfg.pretrained else "backbone initialised at random")
        model.start_note = f"{body}; the {num_classes}-class decoder and head initialised at random"
        return model

    def data_config(self, model: nn.Module) -> Dict[str, Any]:
        cfg = self.cfg
        size = cfg.crop_size
        # timm pretrained-config fields only (model files turn them back into one); test settings ride in config
        return {"input_size": (3, size, size), "interpolation": "bilinear", "crop_pct": 1.0,
                "mean": tuple(cfg.mean or IMAGENET_DEFAULT_MEAN), "std": tuple(cfg.std or IMAGENET_DEFAULT_STD)}

    def build_loaders(self, train_set, val_set, data_cfg, num_classes, batches_per_epoch):
        cfg, env = self.cfg, self.env
        if batches_per_epoch is None:
            raise TrainError("segmentation trains by iterations: set iters and eval_interval")
        self.num_classes = num_classes
        train_set.transform = train_transform(cfg, data_cfg["mean"], data_cfg["std"])
        val_set.transform = EvalTransform(cfg.base_size, data_cfg["mean"], data_cfg["std"])
        self.val_set = val_set
        workers = capped_workers(cfg.workers)
        pin = cfg.pin_memory and self.device.type == "cuda"
        sampler = RoundSampler(len(train_set), batches_per_epoch * cfg.batch_size, cfg.seed, env.rank,
                               env.world_size)
        train_loader = torch.utils.data.DataLoader(train_set, batch_size=cfg.batch_size, sampler=sampler,
                                                   num_workers=workers, pin_memory=pin, drop_last=True,
                                                   persistent_workers=False)
        share = val_set if env.world_size == 1 else torch.utils.data.Subset(
            val_set, list(range(env.rank, len(val_set), env.world_size)))
        val_loader = torch.utils.data.DataLoader(share, batch_size=cfg.batch_size, shuffle=False,
                                                 num_workers=workers, pin_memory=pin, collate_fn=collate_pairs)
        self.criterion = nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX)
        return train_loader, val_loader

    def train_loss(self, model, batch):
        x, y = batch
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        if self.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out = model(x)
        if isinstance(out, tuple):
            main, aux = out
            return self.criterion(main, y) + self.cfg.aux_weight * self.criterion(aux, y), x.shape[0]
        return self.criterion(out, y), x.shape[0]

    def evaluate(self, model, loader, desc="val"):
        cfg = self.cfg
        metrics, self.per_class_iou = evaluate_segmentation(
            model, loader, self.num_classes, self.device, self.env, cfg.amp, cfg.channels_last, cfg.progress, desc,
            cfg.test_mode, cfg.crop_size, cfg.test_stride, cfg.test_scales, cfg.test_flip)
        return metrics

    def describe(self, row):
        return (f"val loss {row['val_loss']:.4f} | mIoU {row['val_miou']:.2f} | mAcc {row['val_macc']:.2f} | "
                f"aAcc {row['val_acc']:.2f}")

    def checkpoint_record(self, data_cfg, train_set):
        return {"data_config": dict(data_cfg), "class_to_idx": {n: i for i, n in enumerate(self.class_names)},
                "task": self.name}

    def extra_outputs(self, out_dir):
        path = os.path.join(out_dir, "val_overlays.png")
        return {"overlays": path} if os.path.isfile(path) else {}

    @torch.no_grad()
    def overlay_figure(self, model, epoch: int):
        """The figure of val_overlays.png: the first `overlays` val images as image | ground truth | prediction,
        one scale for all, the classes shown in a legend (background untinted); None when there is none to draw."""
        n = min(self.cfg.overlays, len(self.val_set))
        if n <= 0:
            return None
        from ...picture_grid import grid_figure

        colours = np.asarray(palette(self.num_classes), dtype=np.float32)
        names = list(self.class_names)
        plain = untinted_classes(names)
        was_training = model.training
        model.eval()
        rows, present = [], set()
        for i in range(n):
            img, mask = self.val_set.load(i)
            x, _ = self.val_set.transform(img, mask)
            logits = model(x[None].to(self.device)).float()
            pred = F.interpolate(logits, size=mask.shape[-2:], mode="bilinear").argmax(1)[0].cpu().numpy()
            raw = img.permute(1, 2, 0).numpy()
            truth = mask.numpy()
            present |= set(np.unique(truth).tolist()) | set(np.unique(pred).tolist())
            grey = np.repeat(raw.mean(2, keepdims=True), 3, 2)  # tints over grey: the image's colours can't mislead
            rows.append([raw, overlay(grey, truth, colours, 0.7, plain), overlay(grey, pred, colours, 0.7, plain)])
        model.train(was_training)
        legend = [(f"{names[c]} (not tinted)" if c in plain else names[c],
                   (255, 255, 255) if c in plain else tuple(int(v) for v in colours[c]))
                  for c in sorted(present) if 0 <= c < len(names)]
        if IGNORE_INDEX in present:
            legend.append(("unlabelled (ignored, not tinted)", (255, 255, 255)))
        when = (f"iteration {epoch * self.cfg.eval_interval}" if self.cfg.iters is not None else f"epoch {epoch}")
        return grid_figure(rows, ["image", "ground truth", f"prediction ({when})"], legend,
                           row_labels=[f"val {i}" for i in range(n)], legend_title="classes")

    @torch.no_grad()
    def after_validation(self, model, out_dir, epoch):
        """val_overlays.png: the first `overlays` val images as image | ground truth | prediction."""
        fig = self.overlay_figure(model, epoch)
        if fig is not None:
            from ...picture_grid import save_figure
            save_figure(fig, os.path.join(out_dir, "val_overlays.png"))
