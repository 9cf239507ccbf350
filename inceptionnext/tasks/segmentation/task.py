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
from ...utils.plots import grid_figure, save_figure
from ...utils.workers import capped_workers
from .config import SETTINGS
from .data import EvalTransform, build_seg_datasets, collate_pairs, palette, train_transform
from .draw import overlay, untinted_classes
from .evaluate import evaluate_segmentation


@register_task
class SegmentationTask(Task):
    """Semantic segmentation with an UperNet or FPN head on a zoo backbone (mIoU picks the best checkpoint).

    Args:
        cfg: the run's `SegmentationConfig`.
        env: the process's distributed environment.
    """

    name = "segmentation"
    settings = SETTINGS
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
            model = create_dense_model(cfg.model, **kwargs)
        except Exception as e:
            src = cfg.weights or ("pretrained backbone" if cfg.pretrained else "random init")
            raise TrainError(f"cannot build {cfg.model!r} with {num_classes} classes from {src}: {e}") from e
        body = (
            f"backbone from the weight file {cfg.weights}"
            if cfg.weights
            else "backbone from its pretrained weights"
            if cfg.pretrained
            else "backbone initialised at random"
        )
        model.start_note = f"{body}; the {num_classes}-class decoder and head initialised at random"
        return model

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

    def build_loaders(self, train_set, val_set, data_cfg, num_classes, round_sampler):
        cfg, env = self.cfg, self.env
        self.num_classes = num_classes
        train_set.transform = train_transform(cfg, data_cfg["mean"], data_cfg["std"])
        val_set.transform = EvalTransform(cfg.base_size, data_cfg["mean"], data_cfg["std"])
        self.val_set = val_set
        workers = capped_workers(cfg.workers)
        pin = cfg.pin_memory and self.device.type == "cuda"
        train_loader = torch.utils.data.DataLoader(
            train_set,
            batch_size=cfg.batch_size,
            sampler=round_sampler,
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
    def overlay_figure(self, model, epoch: int):
        """The figure of val_overlays.png: the first `overlays` val images as image | ground truth | prediction,
        one scale for all, the classes shown in a legend (background untinted); None when there is none to draw.

        Args:
            model: the segmentation model.
            epoch: the round, for the title.

        Returns:
            The matplotlib figure, or None.
        """
        n = min(self.cfg.overlays, len(self.val_set))
        if n <= 0:
            return None
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
        legend = [
            (
                f"{names[c]} (not tinted)" if c in plain else names[c],
                (255, 255, 255) if c in plain else tuple(int(v) for v in colours[c]),
            )
            for c in sorted(present)
            if 0 <= c < len(names)
        ]
        if IGNORE_INDEX in present:
            legend.append(("unlabelled (ignored, not tinted)", (255, 255, 255)))
        when = f"iteration {epoch * self.cfg.eval_interval}" if self.cfg.iters is not None else f"epoch {epoch}"
        return grid_figure(
            rows,
            ["image", "ground truth", f"prediction ({when})"],
            legend,
            row_labels=[f"val {i}" for i in range(n)],
            legend_title="classes",
        )

    @torch.no_grad()
    def after_validation(self, model, out_dir, epoch):
        """val_overlays.png: the first `overlays` val images as image | ground truth | prediction."""
        if not self.cfg.plot:
            return
        fig = self.overlay_figure(model, epoch)
        if fig is not None:
            save_figure(fig, os.path.join(out_dir, "val_overlays.png"))
