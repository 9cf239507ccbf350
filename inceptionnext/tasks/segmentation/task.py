"""Semantic segmentation: ADE20K / mask folders / the digit scenes demo, UperNet or Semantic FPN, cross-entropy
(+ 0.4 x the auxiliary head's), mIoU. Iteration-based runs (``iters``) as mmsegmentation's recipes."""

from __future__ import annotations

import os
from typing import Any, Dict

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from ...models.dense import create_dense_model
from ...models.segmentation import IGNORE_INDEX, is_segmentation_model
from ...train.engine import TrainError
from ...train.task import Task, register_task
from ...utils.plots import save_png
from .data import EvalTransform, RoundSampler, build_seg_datasets, collate_pairs, palette, train_transform
from .draw import overlay
from .evaluate import evaluate_segmentation


@register_task
class SegmentationTask(Task):
    name = "segmentation"
    main_metric = "miou"
    metric_label = "mIoU"
    log_columns = (
        "epoch",
        "iter",
        "lr",
        "train_loss",
        "val_loss",
        "val_miou",
        "val_macc",
        "val_acc",
        "ema_val_loss",
        "ema_val_miou",
        "ema_val_acc",
        "epoch_time_s",
        "skipped_images",
    )
    plot_metrics = (("val_miou", "mIoU"), ("val_acc", "pixel acc."), ("ema_val_miou", "mIoU (EMA)"))

    def build_datasets(self):
        train, val, self.class_names = build_seg_datasets(self.cfg)
        return train, val, len(self.class_names)

    def build_model(self, num_classes: int) -> nn.Module:
        cfg = self.cfg
        if not is_segmentation_model(cfg.model):
            raise TrainError(
                f"task: segmentation needs a segmentation model (upernet_ or fpn_ before a zoo name, "
                f"e.g. fpn_inceptionnext_t), not {cfg.model!r}"
            )
        kwargs = dict(
            num_classes=num_classes,
            pretrained=cfg.pretrained,
            backbone_weights=cfg.weights,
            drop_path_rate=cfg.drop_path,
            head_channels=cfg.head_channels,
        )
        if cfg.model.startswith("upernet_"):
            kwargs["aux_head"] = cfg.aux_weight > 0
        try:
            return create_dense_model(cfg.model, **kwargs)
        except Exception as e:
            src = cfg.weights or ("pretrained backbone" if cfg.pretrained else "random init")
            raise TrainError(f"cannot build {cfg.model!r} with {num_classes} classes from {src}: {e}") from e

    def data_config(self, model: nn.Module) -> Dict[str, Any]:
        cfg = self.cfg
        size = cfg.crop_size
        # timm pretrained-config fields only (model files turn them back into one); test settings ride in config
        return {
            "input_size": (3, size, size),
            "interpolation": "bilinear",
            "crop_pct": 1.0,
            "mean": tuple(cfg.mean or IMAGENET_DEFAULT_MEAN),
            "std": tuple(cfg.std or IMAGENET_DEFAULT_STD),
        }

    def build_loaders(self, train_set, val_set, data_cfg, num_classes, batches_per_epoch):
        cfg, env = self.cfg, self.env
        if batches_per_epoch is None:
            raise TrainError("segmentation trains by iterations: set iters and eval_interval")
        self.num_classes = num_classes
        train_set.transform = train_transform(cfg, data_cfg["mean"], data_cfg["std"])
        val_set.transform = EvalTransform(cfg.base_size, data_cfg["mean"], data_cfg["std"])
        self.val_set = val_set
        workers = min(cfg.workers, os.cpu_count() or 1)
        pin = cfg.pin_memory and self.device.type == "cuda"
        sampler = RoundSampler(len(train_set), batches_per_epoch * cfg.batch_size, cfg.seed, env.rank, env.world_size)
        train_loader = torch.utils.data.DataLoader(
            train_set,
            batch_size=cfg.batch_size,
            sampler=sampler,
            num_workers=workers,
            pin_memory=pin,
            drop_last=True,
            persistent_workers=False,
        )
        share = (
            val_set
            if env.world_size == 1
            else torch.utils.data.Subset(val_set, list(range(env.rank, len(val_set), env.world_size)))
        )
        val_loader = torch.utils.data.DataLoader(
            share,
            batch_size=cfg.batch_size,
            shuffle=False,
            num_workers=workers,
            pin_memory=pin,
            collate_fn=collate_pairs,
        )
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
            model,
            loader,
            self.num_classes,
            self.device,
            self.env,
            cfg.amp,
            cfg.channels_last,
            cfg.progress,
            desc,
            cfg.test_mode,
            cfg.crop_size,
            cfg.test_stride,
            cfg.test_scales,
            cfg.test_flip,
        )
        return metrics

    def describe(self, row):
        return (
            f"val loss {row['val_loss']:.4f} | mIoU {row['val_miou']:.2f} | mAcc {row['val_macc']:.2f} | "
            f"aAcc {row['val_acc']:.2f}"
        )

    def checkpoint_record(self, data_cfg, train_set):
        return {
            "data_config": dict(data_cfg),
            "class_to_idx": {n: i for i, n in enumerate(self.class_names)},
            "task": self.name,
        }

    def extra_outputs(self, out_dir):
        path = os.path.join(out_dir, "val_overlays.png")
        return {"overlays": path} if os.path.isfile(path) else {}

    @torch.no_grad()
    def after_validation(self, model, out_dir, epoch):
        """val_overlays.png: the first `overlays` val images as image | truth | prediction."""
        n = min(self.cfg.overlays, len(self.val_set))
        if n <= 0:
            return

        colours = np.asarray(palette(self.num_classes), dtype=np.float32)
        was_training = model.training
        model.eval()
        rows = []
        for i in range(n):
            img, mask = self.val_set.load(i)
            x, _ = self.val_set.transform(img, mask)
            logits = model(x[None].to(self.device)).float()
            pred = F.interpolate(logits, size=mask.shape[-2:], mode="bilinear").argmax(1)[0].cpu().numpy()
            raw = img.permute(1, 2, 0).numpy()
            truth = mask.numpy()
            row = np.concatenate([raw, overlay(raw, truth, colours, 0.6), overlay(raw, pred, colours, 0.6)], 1)
            zoom = max(1, 192 // max(raw.shape[:2]))  # small demo scenes are drawn larger, pixel for pixel
            rows.append(row.repeat(zoom, 0).repeat(zoom, 1))
        model.train(was_training)
        width = max(r.shape[1] for r in rows)
        grid = np.concatenate(
            [np.pad(r, ((0, 2), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows], 0
        )
        path = os.path.join(out_dir, "val_overlays.png")
        save_png(grid, path)
